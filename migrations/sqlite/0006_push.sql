-- Push notifications: what each event means to each member (evaluated by their push rules),
-- the pushers that carry notifications to phones, and how far evaluation has got.
-- Push rules themselves are the `m.push_rules` global account data.

-- One row per (user, event) whose push rules said `notify`. Unread counts are the rows after
-- the user's read receipt in the room (or thread); `/notifications` pages through them, and
-- each pusher sends them in order.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- 'main', or the thread root for an event in a thread.
    thread_id TEXT NOT NULL,
    -- The actions, as JSON (the `notify` action and its tweaks).
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
-- For pruning rows past `push.keep_notifications_days`.
CREATE INDEX event_push_actions_ts ON event_push_actions (ts);

-- Where each local user last joined each room (a join, not a profile change): without a read
-- receipt, only what came after it is unread.
CREATE TABLE push_room_joins (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- Evaluation follows the events stream; it has evaluated every event up to `position`.
CREATE TABLE push_progress (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO push_progress (name, position) SELECT 'evaluated', position FROM stream_positions WHERE stream = 'events';

-- Pushers (`/pushers/set`), owned by the device that set them: they go with it.
-- `last_stream_ordering` is the last notification delivered (or given up on); a pusher
-- resumes after it, so pending pushes survive a restart.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- The pusher's `data` object, as JSON (`url`, `format`, ...).
    data TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    -- When deliveries started failing (NULL while they succeed).
    failing_since BIGINT,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
CREATE INDEX pushers_by_device ON pushers (user_id, device_id);
