//! Server-side key backups (`/room_keys`): versions per user, and the encrypted room keys in
//! each. The `etag` of a version changes whenever its keys do.

use sqlx::FromRow;

use super::{Storage, StorageError, Tx};

#[derive(Debug, Clone, FromRow)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct BackupKeyRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: i64,
    pub session_data: String,
}

impl BackupKeyRow {
    /// The spec's rule for two keys of one session: the verified one, then the one with the
    /// lower first message index, then the one forwarded fewer times. Ties keep the old key.
    pub fn better_than(&self, existing: &BackupKeyRow) -> bool {
        if self.is_verified != existing.is_verified {
            return self.is_verified > existing.is_verified;
        }
        if self.first_message_index != existing.first_message_index {
            return self.first_message_index < existing.first_message_index;
        }
        self.forwarded_count < existing.forwarded_count
    }
}

impl Storage {
    /// Creates a version, numbered after every version the user ever had.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
             VALUES ($1, $2, $3, $4, 0, 0)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The given version, or the newest one; None if it does not exist or was deleted.
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersion>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT version, algorithm, auth_data, etag FROM backup_versions
             WHERE user_id = $1 AND deleted = 0 AND ($2 = 0 OR version = $2)
             ORDER BY version DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(version.unwrap_or(0))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Replaces a version's `auth_data`; false if there is no such version.
    pub async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool, StorageError> {
        let updated = self
            .write(
                sqlx::query(
                    "UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
                )
                .bind(user_id)
                .bind(version)
                .bind(auth_data),
            )
            .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Deletes a version and its keys; its number is never reused. False if there was none.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let deleted =
            sqlx::query("UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0")
                .bind(user_id)
                .bind(version)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// How many keys a version holds.
    pub async fn backup_key_count(&self, user_id: &str, version: i64) -> Result<i64, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(version)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Stores keys into a version, each replacing the session's key only if it is better.
    /// Returns the version's (count, etag) after, or None when `version` is not the newest
    /// version (keys go only to the current backup). The etag moves if any key was stored.
    pub async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackupKeyRow],
    ) -> Result<Result<(i64, i64), Option<i64>>, StorageError> {
        let mut tx = self.begin_write().await?;
        // Lock the user's versions (PostgreSQL; SQLite's write lock is already held): two
        // devices backing up one session must not both pass the "is it better" test.
        sqlx::query("UPDATE backup_versions SET etag = etag WHERE user_id = $1 AND deleted = 0")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = 0")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        if current != Some(version) {
            return Ok(Err(current));
        }
        let mut changed = false;
        for key in keys {
            let existing: Option<BackupKeyRow> = sqlx::query_as(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
                 FROM backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if existing.as_ref().is_some_and(|existing| !key.better_than(existing)) {
                continue;
            }
            sqlx::query(
                "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index,
                     forwarded_count, is_verified, session_data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                     first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
                     is_verified = excluded.is_verified, session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(key.is_verified)
            .bind(&key.session_data)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            Self::bump_backup_etag(&mut tx, user_id, version).await?;
        }
        let state = Self::backup_count_and_etag(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(Ok(state))
    }

    /// Keys of a version: all, one room's, or one session's.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
             FROM backup_keys WHERE user_id = $1 AND version = $2
               AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
             ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes keys of a version (all, one room's, or one session's); returns (count, etag).
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<(i64, i64), StorageError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2
               AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted > 0 {
            Self::bump_backup_etag(&mut tx, user_id, version).await?;
        }
        let state = Self::backup_count_and_etag(&mut tx, user_id, version).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn bump_backup_etag(tx: &mut Tx, user_id: &str, version: i64) -> Result<(), StorageError> {
        sqlx::query("UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn backup_count_and_etag(tx: &mut Tx, user_id: &str, version: i64) -> Result<(i64, i64), StorageError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2),
                    (SELECT etag FROM backup_versions WHERE user_id = $1 AND version = $2)",
        )
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut **tx)
        .await?)
    }
}
