-- Federation: other servers' signing keys, the transactions they sent us, and how far each
-- destination has been sent our events.

-- Verify keys of other servers, as their key documents (or a notary) gave them. A key
-- verifies signatures made up to `valid_until_ts` (for old keys, their `expired_ts`).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    -- 1 when listed under old_verify_keys.
    expired BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The last key document each server signed (JSON), served again as a notary.
CREATE TABLE server_key_documents (
    server_name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);

-- Transactions received, by origin and ID, with the answer given: a retried transaction gets
-- the same answer and is not processed again.
CREATE TABLE federation_inbound_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_transactions_ts ON federation_inbound_transactions (received_ts);

-- Each destination's place in our event stream: every event of ours after `sent_position`
-- in a room the destination shares is still to be sent.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    sent_position BIGINT NOT NULL,
    -- When the destination last failed, and the wait before the next try (ms); 0 when well.
    retry_interval_ms BIGINT NOT NULL,
    last_failure_ts BIGINT
);

-- Events of other servers this server must pass on: a join it took in through send_join
-- (the joining server knows only us in the room yet).
CREATE TABLE federation_forwarded_events (
    event_id TEXT PRIMARY KEY
);

-- Outliers (events known only by themselves: auth events, the state a join brought) take
-- negative stream positions from their own counter, outside every timeline.
INSERT INTO stream_positions (stream, position) VALUES ('outliers', 0);

-- What a remote server told us of a room along with an invite (its name, avatar, join
-- rules...: stripped state, as JSON), shown with the invite while we are not in the room.
CREATE TABLE remote_invite_state (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- The state group holding the room's current state: the state after its newest event, or,
-- once the DAG forked, the resolution of its forward extremities' states. Local events are
-- built on it. NULL for rooms from before this column: the newest extremity's state then.
ALTER TABLE rooms ADD COLUMN current_state_group BIGINT;
