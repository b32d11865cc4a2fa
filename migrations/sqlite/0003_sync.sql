-- Sync: filters, receipts, presence, and the streams they live on.

-- Filters a client uploaded (`POST /user/{userId}/filter`); IDs count up per user.
CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- The latest receipt of each kind per user, room and thread (`thread_id` is '' for an
-- unthreaded receipt, 'main' for the main timeline). Kinds: m.read, m.read.private and
-- io.hearth.delivered. Delivery receipts are kept per sender of the receipted events
-- (`event_sender`; '' for the other kinds), so each sender sees delivery of their own
-- messages. Each change takes a position on the `receipts` stream.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_sender TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- Where the receipted event sits in the room (for "is this receipt newer?").
    event_stream_ordering BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id, event_sender)
);
CREATE INDEX receipts_stream ON receipts (stream_position);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_position);

-- Each user's presence as last set or derived; every change takes a position on the
-- `presence` stream.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    currently_active BIGINT NOT NULL,
    stream_position BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_position);

-- Which user a room's member events name, by stream position, for "whose membership changed
-- since": the events table indexes rooms, this indexes users.
CREATE INDEX events_member_target ON events (state_key, event_type, stream_ordering);

INSERT INTO stream_positions (stream, position) VALUES ('receipts', 0);
INSERT INTO stream_positions (stream, position) VALUES ('presence', 0);
INSERT INTO stream_positions (stream, position) VALUES ('to_device', 0);
INSERT INTO stream_positions (stream, position) VALUES ('device_lists', 0);
