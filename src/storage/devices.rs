//! `devices`: a user's logged-in sessions. Deleting a device deletes its tokens.

use sqlx::FromRow;

use super::{Storage, StorageError, Tx, now_ms};

#[derive(Debug, Clone, FromRow)]
pub struct Device {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub created_ts: i64,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

impl Storage {
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StorageError> {
        Ok(
            sqlx::query_as("SELECT * FROM devices WHERE user_id = $1 ORDER BY device_id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>, StorageError> {
        Ok(
            sqlx::query_as("SELECT * FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Creates the device, or keeps an existing one with that ID (a login that reuses its
    /// device ID). A display name given here replaces the old one.
    pub async fn upsert_device(
        tx: &mut Tx,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        ip: Option<&str>,
    ) -> Result<bool, StorageError> {
        let now = now_ms();
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
             VALUES ($1, $2, $3, $4, $4, $5)
             ON CONFLICT (user_id, device_id) DO UPDATE SET
                 display_name = COALESCE(excluded.display_name, devices.display_name),
                 last_seen_ts = excluded.last_seen_ts,
                 last_seen_ip = excluded.last_seen_ip",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(now)
        .bind(ip)
        .execute(&mut **tx)
        .await?;
        Ok(existed.is_none())
    }

    /// Sets the display name; false if the user has no such device.
    pub async fn set_device_display_name(
        tx: &mut Tx,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StorageError> {
        let updated = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(display_name)
            .execute(&mut **tx)
            .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records when and from where a device was last used.
    pub async fn touch_device(&self, user_id: &str, device_id: &str, ip: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(now_ms())
            .bind(ip),
        )
        .await?;
        Ok(())
    }

    /// Deletes the device, every access and refresh token it holds, its encryption keys
    /// and messages, and its pushers. The caller records the change on the `device_lists` stream.
    pub async fn delete_device(tx: &mut Tx, user_id: &str, device_id: &str) -> Result<(), StorageError> {
        Self::delete_device_tokens(tx, user_id, device_id).await?;
        Self::delete_device_e2ee(tx, user_id, Some(device_id), None).await?;
        Self::delete_device_pushers(tx, user_id, Some(device_id), None).await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Deletes every device of the user except `keep` (and with them their tokens, keys and
    /// messages).
    pub async fn delete_devices_except(tx: &mut Tx, user_id: &str, keep: Option<&str>) -> Result<(), StorageError> {
        Self::delete_device_e2ee(tx, user_id, None, keep).await?;
        Self::delete_device_pushers(tx, user_id, None, keep).await?;
        let statements: [&'static str; 3] = match keep {
            Some(_) => [
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2",
                "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id <> $2",
                "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2",
            ],
            None => [
                "DELETE FROM access_tokens WHERE user_id = $1",
                "DELETE FROM refresh_tokens WHERE user_id = $1",
                "DELETE FROM devices WHERE user_id = $1",
            ],
        };
        for sql in statements {
            let mut query = sqlx::query(sql).bind(user_id);
            if let Some(keep) = keep {
                query = query.bind(keep);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }
}
