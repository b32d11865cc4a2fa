//! What federation keeps beside room events: EDUs owed to other servers, the device list
//! changes announced to them, and the device lists of other servers' users.

use super::{DeviceKeysRow, Storage, StorageError, Tx, now_ms};

/// An EDU for another server, to be stored in its outbound queue.
#[derive(Debug, Clone)]
pub struct QueuedEdu {
    pub destination: String,
    pub edu_type: String,
    /// The EDU's `content`, as JSON.
    pub content: String,
}

/// An EDU waiting in a destination's queue.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEdu {
    pub id: i64,
    pub edu_type: String,
    pub content: String,
}

/// One change to a user's device list, at a position on the `device_lists` stream.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceListChange {
    pub stream_position: i64,
    /// The one device it concerns; `None` for several devices or cross-signing keys.
    pub device_id: Option<String>,
}

/// A device of another server's user, as its server published it.
#[derive(Debug, Clone)]
pub struct RemoteDevice {
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: String,
}

/// A cross-signing key of another server's user.
#[derive(Debug, Clone)]
pub struct RemoteCrossSigningKey {
    pub key_type: &'static str,
    pub public_key: String,
    pub key_json: String,
}

impl Storage {
    /// Adds EDUs to their destinations' queues, in the caller's transaction.
    pub async fn queue_edus(tx: &mut Tx, edus: &[QueuedEdu]) -> Result<(), StorageError> {
        for edu in edus {
            sqlx::query("INSERT INTO federation_outbound_edus (destination, edu_type, content) VALUES ($1, $2, $3)")
                .bind(&edu.destination)
                .bind(&edu.edu_type)
                .bind(&edu.content)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Adds EDUs to their destinations' queues, all or none.
    pub async fn queue_edus_now(&self, edus: &[QueuedEdu]) -> Result<(), StorageError> {
        if edus.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        Self::queue_edus(&mut tx, edus).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The oldest `limit` EDUs waiting for a destination, in order.
    pub async fn outbound_edus(&self, destination: &str, limit: i64) -> Result<Vec<StoredEdu>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT id, edu_type, content FROM federation_outbound_edus WHERE destination = $1 ORDER BY id LIMIT $2",
        )
        .bind(destination)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Drops a destination's EDUs up to `last_id` (it accepted them).
    pub async fn delete_outbound_edus(&self, destination: &str, last_id: i64) -> Result<(), StorageError> {
        self.write(
            sqlx::query("DELETE FROM federation_outbound_edus WHERE destination = $1 AND id <= $2")
                .bind(destination)
                .bind(last_id),
        )
        .await?;
        Ok(())
    }

    /// The user's device list changes in (`after`, `until`].
    pub async fn device_list_changes_of(
        &self,
        user_id: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<DeviceListChange>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT stream_position, device_id FROM device_list_changes
             WHERE user_id = $1 AND stream_position > $2 AND stream_position <= $3 ORDER BY stream_position",
        )
        .bind(user_id)
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The position of the user's last device list change at or before `until` (the
    /// `stream_id` other servers know the list by).
    pub async fn last_device_list_change(&self, user_id: &str, until: i64) -> Result<Option<i64>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(stream_position) FROM device_list_changes WHERE user_id = $1 AND stream_position <= $2",
        )
        .bind(user_id)
        .bind(until)
        .fetch_one(&self.pool)
        .await?)
    }

    /// A local device's keys and name, if it has keys.
    pub async fn device_keys_of(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceKeysRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT k.device_id, k.key_json, d.display_name
             FROM e2e_device_keys k JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id = $1 AND k.device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The device list kept for another server's user: its `stream_id`, and whether a gap
    /// was seen since.
    pub async fn remote_device_list(&self, user_id: &str) -> Result<Option<(i64, bool)>, StorageError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(stream_id, stale)| (stream_id, stale != 0)))
    }

    /// The keys of another server's user's devices, as kept.
    pub async fn remote_device_keys(&self, user_id: &str) -> Result<Vec<DeviceKeysRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT device_id, key_json, display_name FROM e2e_device_keys WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces what is kept of another server's user's devices and cross-signing keys with
    /// a whole list from their server; returns the `device_lists` position of the change.
    pub async fn replace_remote_device_list(
        &self,
        user_id: &str,
        stream_id: i64,
        devices: &[RemoteDevice],
        cross_signing: &[RemoteCrossSigningKey],
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM e2e_device_keys WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for device in devices {
            Self::put_remote_device(&mut tx, user_id, device).await?;
        }
        sqlx::query("DELETE FROM e2e_cross_signing_keys WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        Self::put_remote_cross_signing(&mut tx, user_id, cross_signing).await?;
        Self::set_remote_device_list(&mut tx, user_id, stream_id).await?;
        let position = Self::record_device_list_change(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Applies one device's update (`None`: deleted) from another server's user's chain;
    /// returns the `device_lists` position of the change.
    pub async fn update_remote_device(
        &self,
        user_id: &str,
        stream_id: i64,
        device_id: &str,
        device: Option<&RemoteDevice>,
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        if let Some(device) = device {
            Self::put_remote_device(&mut tx, user_id, device).await?;
        }
        Self::set_remote_device_list(&mut tx, user_id, stream_id).await?;
        let position = Self::record_device_change(&mut tx, user_id, Some(device_id)).await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Replaces another server's user's master and self-signing keys (those given); returns
    /// the `device_lists` position of the change.
    pub async fn update_remote_cross_signing(
        &self,
        user_id: &str,
        keys: &[RemoteCrossSigningKey],
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        Self::put_remote_cross_signing(&mut tx, user_id, keys).await?;
        let position = Self::record_device_list_change(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Notes that updates of another server's user were missed: the list is fetched again
    /// before it is served.
    pub async fn mark_remote_device_list_stale(&self, user_id: &str) -> Result<(), StorageError> {
        self.write(sqlx::query("UPDATE remote_device_lists SET stale = 1 WHERE user_id = $1").bind(user_id))
            .await?;
        Ok(())
    }

    async fn put_remote_device(tx: &mut Tx, user_id: &str, device: &RemoteDevice) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device_id) DO UPDATE
                 SET key_json = excluded.key_json, display_name = excluded.display_name",
        )
        .bind(user_id)
        .bind(&device.device_id)
        .bind(&device.key_json)
        .bind(&device.display_name)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn put_remote_cross_signing(
        tx: &mut Tx,
        user_id: &str,
        keys: &[RemoteCrossSigningKey],
    ) -> Result<(), StorageError> {
        for key in keys {
            sqlx::query(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, key_type) DO UPDATE
                     SET public_key = excluded.public_key, key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(key.key_type)
            .bind(&key.public_key)
            .bind(&key.key_json)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn set_remote_device_list(tx: &mut Tx, user_id: &str, stream_id: i64) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES ($1, $2, 0, $3)
             ON CONFLICT (user_id) DO UPDATE
                 SET stream_id = excluded.stream_id, stale = 0, updated_ts = excluded.updated_ts",
        )
        .bind(user_id)
        .bind(stream_id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
