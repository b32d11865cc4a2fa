-- Reports of users (v1.14 `POST /users/{userId}/report`), for administrators. IDs come from
-- the same `reports` stream as event and room reports, so all reports share one order.
CREATE TABLE user_reports (
    id BIGINT PRIMARY KEY,
    target_user_id TEXT NOT NULL,
    reporter TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
