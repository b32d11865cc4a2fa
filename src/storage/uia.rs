//! `uia_sessions`: user-interactive authentication in progress.

use sqlx::FromRow;

use super::{Storage, StorageError, Tx, now_ms};

#[derive(Debug, Clone, FromRow)]
pub struct UiaSession {
    pub session_id: String,
    pub purpose: String,
    pub user_id: Option<String>,
    /// JSON array of the stage types completed so far.
    pub completed: String,
    /// The registration token a registration session validated (it holds one pending use).
    pub registration_token: Option<String>,
    pub created_ts: i64,
    /// The operation's parameters as the client gave them (JSON object), remembered so that
    /// later requests may omit them.
    pub params: Option<String>,
    /// When the session authorised its operation (it cannot authorise another).
    pub consumed_ts: Option<i64>,
    /// What the operation produced (for a registration, the user ID), so a retry gets it again.
    pub result: Option<String>,
}

impl Storage {
    pub async fn create_uia_session(
        &self,
        session_id: &str,
        purpose: &str,
        user_id: Option<&str>,
    ) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "INSERT INTO uia_sessions (session_id, purpose, user_id, completed, created_ts)
             VALUES ($1, $2, $3, '[]', $4)",
            )
            .bind(session_id)
            .bind(purpose)
            .bind(user_id)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    pub async fn uia_session(&self, session_id: &str) -> Result<Option<UiaSession>, StorageError> {
        Ok(sqlx::query_as("SELECT * FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_uia_params(&self, session_id: &str, params: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("UPDATE uia_sessions SET params = $2 WHERE session_id = $1")
                .bind(session_id)
                .bind(params),
        )
        .await?;
        Ok(())
    }

    pub async fn set_uia_completed(&self, session_id: &str, completed: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("UPDATE uia_sessions SET completed = $2 WHERE session_id = $1")
                .bind(session_id)
                .bind(completed),
        )
        .await?;
        Ok(())
    }

    /// Consumes a completed session inside the transaction of the operation it authorised,
    /// recording what the operation produced. `None` if it was consumed already (another
    /// request used it first) or is gone (expired): the operation must not happen. Otherwise
    /// the registration token whose use the session reserved, if any.
    pub async fn consume_uia_session(
        tx: &mut Tx,
        session_id: &str,
        result: Option<&str>,
    ) -> Result<Option<Option<String>>, StorageError> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "UPDATE uia_sessions SET consumed_ts = $2, result = $3
             WHERE session_id = $1 AND consumed_ts IS NULL RETURNING registration_token",
        )
        .bind(session_id)
        .bind(now_ms())
        .bind(result)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(|(token,)| token))
    }

    /// Deletes sessions created before `cutoff_ts`, giving back the registration token uses
    /// they held. Returns how many were removed.
    pub async fn expire_uia_sessions(&self, cutoff_ts: i64) -> Result<u64, StorageError> {
        let mut tx = self.begin_write().await?;
        let expired: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "DELETE FROM uia_sessions WHERE created_ts < $1 RETURNING session_id, registration_token, consumed_ts",
        )
        .bind(cutoff_ts)
        .fetch_all(&mut *tx)
        .await?;
        // A consumed session's token use was spent by its registration; only unused ones return.
        for (_, token, consumed) in &expired {
            if let (Some(token), None) = (token, consumed) {
                Self::release_registration_token(&mut tx, token).await?;
            }
        }
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}
