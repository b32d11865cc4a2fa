-- Federation, part 2: what travels between servers beside room events (EDUs), and what this
-- server keeps of other servers' users' devices.

-- EDUs owed to other servers that must survive a restart (to-device messages, device list and
-- cross-signing key updates), sent in order with the destination's next transactions and
-- deleted once it accepted them. Typing, receipts and presence are sent from memory.
CREATE TABLE federation_outbound_edus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX federation_outbound_edus_destination ON federation_outbound_edus (destination, id);

-- Users of other servers whose device lists this server keeps (they share a room with one of
-- ours, so their server tells us of every change): the last `stream_id` applied, and whether
-- a gap was seen (the list is then fetched again before it is served). Their device keys and
-- cross-signing keys sit in the same tables as our users'.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    stale BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- Remote devices' display names, as their server published them (ours are in `devices`).
ALTER TABLE e2e_device_keys ADD COLUMN display_name TEXT;

-- The device a change concerns, when it concerns one device (NULL: several, or cross-signing
-- keys): other servers are sent that device's update, chained to the user's previous change.
ALTER TABLE device_list_changes ADD COLUMN device_id TEXT;

-- Other servers' media kept here: when each item was last served, so the least recently used
-- go first once the cache is full (`media.remote_cache_max_bytes`).
ALTER TABLE media ADD COLUMN last_access_ts BIGINT;
CREATE INDEX media_remote_access ON media (last_access_ts) WHERE last_access_ts IS NOT NULL;
-- Which items and thumbnails share a blob (a blob is deleted only when none does).
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);

-- OpenID tokens (`/user/{userId}/openid/request_token`): a third party (an integration
-- manager, a widget) checks one with `/openid/userinfo` to learn who holds it. Kept an hour.
CREATE TABLE openid_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);

-- Rooms joined with partial state (MSC3706: the resident server left out the members): the
-- join, the servers it said were in the room (events are sent to them too until the full
-- state is here), and the server joined through. The row goes once the full state arrived.
CREATE TABLE partial_state_rooms (
    room_id TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    servers TEXT NOT NULL,
    joined_via TEXT NOT NULL
);
