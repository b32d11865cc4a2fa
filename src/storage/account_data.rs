//! `account_data`: per-user JSON documents by type, global (`room_id = ''`) or per room, each
//! stamped with a position on the `account_data` stream so `/sync` can send what changed.

use sqlx::FromRow;

use super::{Storage, StorageError};

#[derive(Debug, Clone, FromRow)]
pub struct AccountDataEntry {
    pub room_id: String,
    pub data_type: String,
    pub content: String,
    pub stream_position: i64,
}

impl Storage {
    /// One entry's content as JSON text; `room_id` is `""` for global account data.
    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
    ) -> Result<Option<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores (replaces) an entry at a new stream position; `room_id` is `""` for global data.
    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
        content: &str,
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        let position = Self::next_stream_position(&mut tx, "account_data").await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_position)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, room_id, data_type)
             DO UPDATE SET content = excluded.content, stream_position = excluded.stream_position",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Entries (global and per room) changed after `since`, oldest change first (for `/sync`).
    pub async fn account_data_since(&self, user_id: &str, since: i64) -> Result<Vec<AccountDataEntry>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT room_id, data_type, content, stream_position FROM account_data
             WHERE user_id = $1 AND stream_position > $2
             ORDER BY stream_position",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}
