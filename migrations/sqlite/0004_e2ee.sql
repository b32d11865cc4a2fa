-- End-to-end encryption: the keys clients publish, the messages they send each other's
-- devices, and their server-side key backups. The server never decrypts any of it; it stores
-- the JSON exactly as uploaded (signatures cover it) and hands it out as the spec says.

-- Each device's identity keys (`/keys/upload` `device_keys`), as uploaded and self-signed.
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys: each is handed out once by `/keys/claim`, then deleted.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- The fallback key per device and algorithm: handed out when one-time keys run out, and kept
-- (marked used) until the device replaces it.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: `master`, `self_signing`, `user_signing`, with the public key (unpadded
-- base64 ed25519) that names them in signatures.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded by `/keys/signatures/upload`, merged into the signed key when served.
-- `target_key_id` is a device ID or a cross-signing public key.
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- Whose devices or cross-signing keys changed, by position on the `device_lists` stream.
CREATE TABLE device_list_changes (
    stream_position BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_position);

-- Messages waiting for a device, by position on the `to_device` stream. A message is deleted
-- once the device syncs with a token past it.
CREATE TABLE to_device_messages (
    stream_position BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX to_device_inbox ON to_device_messages (user_id, device_id, stream_position);

-- Transaction IDs of `/sendToDevice` requests per sending device: a retry sends nothing twice.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Server-side key backups (`/room_keys`): versions count up per user; a deleted version keeps
-- its number so it is never reused.
CREATE TABLE backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- Dehydrated devices (MSC3814, unstable): one per user, a device with no access token whose
-- encrypted pickle (`device_data`) a new login can fetch and rehydrate, reading the
-- to-device messages it received meanwhile.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);
