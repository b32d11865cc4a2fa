-- What a user-interactive auth session remembers between its requests (as Synapse's session
-- data): `params` holds the operation's parameters as first given (for registration: the
-- username, the password's hash, the device's name, inhibit_login), so that later stages may
-- omit them; `consumed_ts` and `result` mark a session that authorised its operation, so that a
-- retried registration answers with the account it made instead of failing.
ALTER TABLE uia_sessions ADD COLUMN params TEXT;
ALTER TABLE uia_sessions ADD COLUMN consumed_ts BIGINT;
ALTER TABLE uia_sessions ADD COLUMN result TEXT;
