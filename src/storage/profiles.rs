//! `profile_fields`: display name, avatar URL and extended profile fields, as JSON values.

use serde_json::{Map, Value};

use super::{Storage, StorageError};

impl Storage {
    /// Every field of the user's profile (empty if the user has none or does not exist).
    pub async fn profile(&self, user_id: &str) -> Result<Map<String, Value>, StorageError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT field, value FROM profile_fields WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(field, value)| Some((field, serde_json::from_str(&value).ok()?)))
            .collect())
    }

    pub async fn set_profile_field(&self, user_id: &str, field: &str, value: &Value) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        Self::set_profile_field_in(&mut tx, user_id, field, value).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a profile field inside the caller's transaction.
    pub async fn set_profile_field_in(
        tx: &mut super::Tx,
        user_id: &str,
        field: &str,
        value: &Value,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
        )
        .bind(user_id)
        .bind(field)
        .bind(value.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn delete_profile_field(&self, user_id: &str, field: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("DELETE FROM profile_fields WHERE user_id = $1 AND field = $2")
                .bind(user_id)
                .bind(field),
        )
        .await?;
        Ok(())
    }

    /// Removes the whole profile (account erasure).
    pub async fn clear_profile(tx: &mut super::Tx, user_id: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Marks the user erased: their events are served redacted to those who joined after them.
    pub async fn mark_erased(tx: &mut super::Tx, user_id: &str) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO erased_users (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Every erased user.
    pub async fn erased_users(&self) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar("SELECT user_id FROM erased_users")
            .fetch_all(&self.pool)
            .await?)
    }
}
