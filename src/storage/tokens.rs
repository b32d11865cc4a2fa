//! `access_tokens` and `refresh_tokens`, looked up by the SHA-256 hash of the token.

use sqlx::FromRow;

use super::{Storage, StorageError, Tx, now_ms};

/// What an access token authenticates, read on every authenticated request.
#[derive(Debug, Clone, FromRow)]
pub struct AccessTokenInfo {
    pub user_id: String,
    pub device_id: String,
    pub expires_ts: Option<i64>,
    pub is_guest: i64,
    pub is_admin: i64,
    /// When the device was last seen (to refresh it at most once a minute).
    pub last_seen_ts: Option<i64>,
    /// The refresh token whose successor this token came with; revoked on first use.
    pub superseded_refresh_token: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct RefreshTokenInfo {
    pub user_id: String,
    pub device_id: String,
    pub prev_token_hash: Option<String>,
}

impl Storage {
    pub async fn access_token(&self, token_hash: &str) -> Result<Option<AccessTokenInfo>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT t.user_id, t.device_id, t.expires_ts, u.is_guest, u.is_admin, d.last_seen_ts,
                    r.prev_token_hash AS superseded_refresh_token
             FROM access_tokens t
             JOIN users u ON u.user_id = t.user_id
             LEFT JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
             LEFT JOIN refresh_tokens r ON r.token_hash = t.refresh_token_hash
             WHERE t.token_hash = $1 AND u.deactivated = 0",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insert_access_token(
        tx: &mut Tx,
        token_hash: &str,
        user_id: &str,
        device_id: &str,
        expires_ts: Option<i64>,
        refresh_token_hash: Option<&str>,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_hash)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms())
        .bind(expires_ts)
        .bind(refresh_token_hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn insert_refresh_token(
        tx: &mut Tx,
        token_hash: &str,
        user_id: &str,
        device_id: &str,
        prev_token_hash: Option<&str>,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, prev_token_hash)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms())
        .bind(prev_token_hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The live refresh token with this hash (its account not deactivated).
    pub async fn refresh_token(tx: &mut Tx, token_hash: &str) -> Result<Option<RefreshTokenInfo>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT user_id, device_id, prev_token_hash FROM refresh_tokens WHERE token_hash = $1
             AND user_id IN (SELECT user_id FROM users WHERE deactivated = 0)",
        )
        .bind(token_hash)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// Deletes refresh tokens issued to replace `token_hash` (and their access tokens): a
    /// retried /refresh replaces the unused answer of the first try.
    pub async fn delete_successors(tx: &mut Tx, token_hash: &str) -> Result<(), StorageError> {
        sqlx::query(
            "DELETE FROM access_tokens WHERE refresh_token_hash IN
             (SELECT token_hash FROM refresh_tokens WHERE prev_token_hash = $1)",
        )
        .bind(token_hash)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE prev_token_hash = $1")
            .bind(token_hash)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Revokes a refresh token that has been replaced, and the access token issued with it,
    /// once its successor is used.
    pub async fn revoke_superseded_refresh_token(tx: &mut Tx, token_hash: &str) -> Result<(), StorageError> {
        for sql in [
            "DELETE FROM access_tokens WHERE refresh_token_hash = $1",
            "UPDATE refresh_tokens SET prev_token_hash = NULL WHERE prev_token_hash = $1",
            "DELETE FROM refresh_tokens WHERE token_hash = $1",
        ] {
            sqlx::query(sql).bind(token_hash).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Removes every token a device holds (a login that reuses the device ID starts afresh).
    pub async fn delete_device_tokens(tx: &mut Tx, user_id: &str, device_id: &str) -> Result<(), StorageError> {
        for sql in [
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2",
        ] {
            sqlx::query(sql)
                .bind(user_id)
                .bind(device_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// OpenID tokens, stored by hash.
impl Storage {
    /// Stores an OpenID token for the user until `expires_ts`; drops expired ones.
    pub async fn insert_openid_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_ts: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM openid_tokens WHERE expires_ts < $1")
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(user_id)
            .bind(expires_ts)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user an unexpired OpenID token stands for.
    pub async fn openid_token_user(&self, token_hash: &str) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT user_id FROM openid_tokens WHERE token = $1 AND expires_ts > $2")
                .bind(token_hash)
                .bind(super::now_ms())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
