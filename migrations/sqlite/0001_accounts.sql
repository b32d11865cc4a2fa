-- Accounts, devices, tokens, profiles, global account data and registration state.
-- Timestamps are milliseconds since the Unix epoch; booleans are 0/1 integers.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin BIGINT NOT NULL DEFAULT 0,
    is_guest BIGINT NOT NULL DEFAULT 0,
    deactivated BIGINT NOT NULL DEFAULT 0,
    user_type TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes: a leaked database does not leak live sessions.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- The refresh token this one replaced. It stays valid (a client whose /refresh response
    -- was lost can retry) until this token or its access token is first used.
    prev_token_hash TEXT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- Set only for tokens issued with a refresh token.
    expires_ts BIGINT,
    refresh_token_hash TEXT,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id)
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_token_hash);

-- Every profile field (displayname, avatar_url and extended profile fields) as JSON.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_position);

-- The last position handed out on each server-wide stream (account_data, ...).
CREATE TABLE stream_positions (
    stream TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO stream_positions (stream, position) VALUES ('account_data', 0);

-- User-interactive authentication sessions.
CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    -- What the session authorises ("register", "delete_devices:DEV1,DEV2", ...): a session
    -- cannot be reused for another operation, nor for the same one on other objects.
    purpose TEXT NOT NULL,
    user_id TEXT,
    completed TEXT NOT NULL,
    registration_token TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    expiry_time BIGINT,
    created_ts BIGINT NOT NULL
);

-- Single-use nonces of the shared-secret registration API.
CREATE TABLE registration_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);
