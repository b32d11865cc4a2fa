-- Rooms and the event DAG.

-- This server's signing keys. The newest row without expired_ts signs; expired ones are
-- published as old_verify_keys.
CREATE TABLE server_signing_keys (
    key_id TEXT PRIMARY KEY,
    -- base64 of the PKCS#8 document
    pkcs8 TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expired_ts BIGINT
);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- Every PDU we hold, in the server-wide order of persistence (stream_ordering). The PDU is
-- stored whole, as signed; rejected events are kept (for the DAG) but never served.
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    depth BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json TEXT NOT NULL,
    rejected_reason TEXT,
    -- The redaction applied to this event, if any: it is then served redacted.
    redacted_by TEXT,
    -- For state events: the state event this one replaced (its content is `prev_content`).
    replaces_state TEXT,
    -- The room's m.room.history_visibility when the event was sent: who may read it.
    history_visibility TEXT NOT NULL
);
CREATE INDEX events_room_order ON events (room_id, stream_ordering);
CREATE INDEX events_room_state ON events (room_id, event_type, state_key);

-- The DAG: each event's prev_events.
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

-- The room's forward extremities: events with no successor yet; new events point at them.
CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Room state as groups: a group is its prev_group plus a delta (a full snapshot when
-- prev_group is NULL). event_state_groups maps every event to the state after it.
CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    -- How many deltas lie between this group and a snapshot (snapshots are taken every so often).
    delta_chain BIGINT NOT NULL
);
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);
CREATE TABLE event_state_groups (
    event_id TEXT PRIMARY KEY,
    state_group BIGINT NOT NULL
);

-- The room's present state, materialized for fast reads; membership copied out of member
-- events so "which rooms is @u in" is one index lookup.
CREATE TABLE current_state_events (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE INDEX current_state_memberships ON current_state_events (state_key, membership);

-- Transaction IDs of sent events, per device, room and endpoint ("send", "redact"): a
-- retried request returns the first event.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, endpoint, txn_id)
);
CREATE INDEX event_txn_ids_event ON event_txn_ids (event_id);

-- Relations between events (m.relates_to): edits, threads, annotations, references.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to_id, rel_type);
CREATE INDEX event_relations_room ON event_relations (room_id, rel_type);

-- Room aliases of this server (#name:server → room).
CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms published in this server's public room directory.
CREATE TABLE room_directory (
    room_id TEXT PRIMARY KEY,
    published_ts BIGINT NOT NULL
);

-- Reports of events and rooms, for administrators.
CREATE TABLE event_reports (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT,
    reporter TEXT NOT NULL,
    reason TEXT,
    score BIGINT,
    received_ts BIGINT NOT NULL
);

INSERT INTO stream_positions (stream, position) VALUES ('events', 0);
INSERT INTO stream_positions (stream, position) VALUES ('reports', 0);
INSERT INTO stream_positions (stream, position) VALUES ('state_groups', 0);
