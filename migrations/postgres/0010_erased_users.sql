-- Users deactivated with `erase: true`. Their events are served redacted to anyone who was not
-- in the room when they were sent (as Synapse does), so people who join later never see them.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY
);
