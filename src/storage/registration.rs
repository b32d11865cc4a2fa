//! `registration_tokens` (admin-created invitations to register) and `registration_nonces`
//! (single-use nonces of the shared-secret registration API).

use serde::Serialize;
use sqlx::FromRow;

use super::{Storage, StorageError, Tx, now_ms};

/// A registration token as the Synapse admin API shows it.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct RegistrationToken {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub pending: i64,
    pub completed: i64,
    pub expiry_time: Option<i64>,
}

impl RegistrationToken {
    /// Usable now: not expired, and not every allowed use taken (pending uses count).
    pub fn is_valid(&self, now_ms: i64) -> bool {
        self.expiry_time.is_none_or(|expiry| expiry > now_ms)
            && self
                .uses_allowed
                .is_none_or(|allowed| self.pending + self.completed < allowed)
    }
}

const TOKEN_COLUMNS: &str = "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens";

impl Storage {
    pub async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} ORDER BY created_ts, token"));
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }

    pub async fn registration_token(&self, token: &str) -> Result<Option<RegistrationToken>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} WHERE token = $1"));
        Ok(sqlx::query_as(sql).bind(token).fetch_optional(&self.pool).await?)
    }

    /// Creates a token; false if one with that name exists.
    pub async fn insert_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_time: Option<i64>,
    ) -> Result<bool, StorageError> {
        let inserted = self
            .write(
                sqlx::query(
                    "INSERT INTO registration_tokens (token, uses_allowed, expiry_time, created_ts)
             VALUES ($1, $2, $3, $4) ON CONFLICT (token) DO NOTHING",
                )
                .bind(token)
                .bind(uses_allowed)
                .bind(expiry_time)
                .bind(now_ms()),
            )
            .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Changes a token's limits; false if it does not exist.
    pub async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_time: Option<i64>,
    ) -> Result<bool, StorageError> {
        let updated = self
            .write(
                sqlx::query("UPDATE registration_tokens SET uses_allowed = $2, expiry_time = $3 WHERE token = $1")
                    .bind(token)
                    .bind(uses_allowed)
                    .bind(expiry_time),
            )
            .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub async fn delete_registration_token(&self, token: &str) -> Result<bool, StorageError> {
        let deleted = self
            .write(sqlx::query("DELETE FROM registration_tokens WHERE token = $1").bind(token))
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Reserves one use of a valid token for a UIA session, atomically: two sessions racing for
    /// the last use cannot both get it, and a session holds at most one use. False if the token
    /// is unknown, expired or used up, or the session already holds a token.
    pub async fn reserve_registration_token(&self, token: &str, session_id: &str) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE uia_sessions SET registration_token = $2
             WHERE session_id = $1 AND registration_token IS NULL",
        )
        .bind(session_id)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let reserved = claimed
            && sqlx::query(
                "UPDATE registration_tokens SET pending = pending + 1
                 WHERE token = $1 AND (expiry_time IS NULL OR expiry_time > $2)
                 AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
            )
            .bind(token)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        if reserved {
            tx.commit().await?;
        }
        // Otherwise dropping the transaction rolls the claim back.
        Ok(reserved)
    }

    /// Turns a pending use into a completed one (the account was created).
    pub async fn complete_registration_token(tx: &mut Tx, token: &str) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1
             WHERE token = $1 AND pending > 0",
        )
        .bind(token)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Gives back a pending use (its session expired unused).
    pub async fn release_registration_token(tx: &mut Tx, token: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0")
            .bind(token)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn insert_registration_nonce(&self, nonce: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("INSERT INTO registration_nonces (nonce, created_ts) VALUES ($1, $2)")
                .bind(nonce)
                .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Consumes a nonce issued after `not_before_ts`; false if unknown, used or too old.
    pub async fn take_registration_nonce(&self, nonce: &str, not_before_ts: i64) -> Result<bool, StorageError> {
        let deleted = self
            .write(
                sqlx::query("DELETE FROM registration_nonces WHERE nonce = $1 AND created_ts >= $2")
                    .bind(nonce)
                    .bind(not_before_ts),
            )
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Removes nonces older than `cutoff_ts` (never used).
    pub async fn expire_registration_nonces(&self, cutoff_ts: i64) -> Result<(), StorageError> {
        self.write(sqlx::query("DELETE FROM registration_nonces WHERE created_ts < $1").bind(cutoff_ts))
            .await?;
        Ok(())
    }
}
