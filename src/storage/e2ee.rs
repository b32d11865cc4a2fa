//! End-to-end encryption keys, the `device_lists` stream and to-device messages. Key JSON is
//! stored as the client uploaded it: signatures cover it, so the server never rewrites it.

use sqlx::FromRow;

use super::{Storage, StorageError, Tx, now_ms};

/// A one-time or fallback key a device uploaded: `algorithm:key_id` and its JSON.
#[derive(Debug, Clone)]
pub struct UploadedKey {
    pub algorithm: String,
    pub key_id: String,
    pub json: String,
}

/// What one `/keys/upload` did.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyUpload {
    /// Stored; the `device_lists` position when the device keys changed.
    Stored { device_list_change: Option<i64> },
    /// A one-time key ID already holds a different key; nothing was stored.
    Conflict(String),
}

#[derive(Debug, Clone, FromRow)]
pub struct DeviceKeysRow {
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct CrossSigningKeyRow {
    pub key_type: String,
    pub public_key: String,
    pub key_json: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct SignatureRow {
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// One signature to store: on `target_user_id`'s device or cross-signing key `target_key_id`.
#[derive(Debug, Clone)]
pub struct NewSignature {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// A to-device message on its way: to one device of `user_id`, or to all of them (`*`).
#[derive(Debug, Clone)]
pub struct OutgoingToDevice {
    pub user_id: String,
    pub device_id: String,
    pub content: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct ToDeviceRow {
    pub stream_position: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// A device's key counts and acknowledged messages, as [`Storage::device_key_state`] reads them.
#[derive(Debug, Default)]
pub struct DeviceKeyState {
    pub one_time_key_counts: Vec<(String, i64)>,
    pub unused_fallback_key_types: Vec<String>,
    pub acknowledged_messages: i64,
}

/// What one `/sendToDevice` request stored.
#[derive(Debug, Default)]
pub struct ToDeviceSent {
    /// The last position taken, if any message was stored; None for a repeated transaction.
    pub position: Option<i64>,
    /// Recipients who got a message (for waking their syncs).
    pub recipients: Vec<String>,
    /// Messages dropped because a device's inbox was full (oldest first).
    pub dropped: u64,
    /// False for a repeated transaction (nothing was stored).
    pub fresh: bool,
}

impl Storage {
    /// Stores a device's uploaded keys in one transaction. Re-uploading an identical
    /// one-time key is a no-op; a different key under a taken ID refuses the whole upload.
    pub async fn upload_keys(
        &self,
        user_id: &str,
        device_id: &str,
        device_keys: Option<&str>,
        one_time_keys: &[UploadedKey],
        fallback_keys: &[UploadedKey],
    ) -> Result<KeyUpload, StorageError> {
        let mut tx = self.begin_write().await?;
        for key in one_time_keys {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT key_json FROM e2e_one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                Some(json) if json != key.json => {
                    return Ok(KeyUpload::Conflict(format!("{}:{}", key.algorithm, key.key_id)));
                }
                Some(_) => {}
                None => {
                    sqlx::query(
                        "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
                    )
                    .bind(user_id)
                    .bind(device_id)
                    .bind(&key.algorithm)
                    .bind(&key.key_id)
                    .bind(&key.json)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        for key in fallback_keys {
            // The same key again keeps its "used" mark; a new key starts unused.
            sqlx::query(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
                 VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
                     key_id = excluded.key_id, key_json = excluded.key_json, used = 0
                 WHERE e2e_fallback_keys.key_id <> excluded.key_id
                    OR e2e_fallback_keys.key_json <> excluded.key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(&key.json)
            .execute(&mut *tx)
            .await?;
        }
        let mut device_list_change = None;
        if let Some(json) = device_keys {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if existing.as_deref() != Some(json) {
                sqlx::query(
                    "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(json)
                .execute(&mut *tx)
                .await?;
                device_list_change = Some(Self::record_device_change(&mut tx, user_id, Some(device_id)).await?);
            }
        }
        tx.commit().await?;
        Ok(KeyUpload::Stored { device_list_change })
    }

    /// In one round trip (every sync asks): the device's unclaimed one-time keys per
    /// algorithm, the algorithms of its unused fallback keys, and how many of its to-device
    /// messages are at or below `acknowledged` (waiting to be deleted).
    pub async fn device_key_state(
        &self,
        user_id: &str,
        device_id: &str,
        acknowledged: i64,
    ) -> Result<DeviceKeyState, StorageError> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT CAST(0 AS BIGINT), algorithm, COUNT(*) FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
             UNION ALL
             SELECT CAST(1 AS BIGINT), algorithm, CAST(0 AS BIGINT) FROM e2e_fallback_keys
             WHERE user_id = $1 AND device_id = $2 AND used = 0
             UNION ALL
             SELECT CAST(2 AS BIGINT), '', COUNT(*) FROM to_device_messages
             WHERE user_id = $1 AND device_id = $2 AND stream_position <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(acknowledged)
        .fetch_all(&self.pool)
        .await?;
        let mut state = DeviceKeyState::default();
        for (kind, algorithm, count) in rows {
            match kind {
                0 => state.one_time_key_counts.push((algorithm, count)),
                1 => state.unused_fallback_key_types.push(algorithm),
                _ => state.acknowledged_messages = count,
            }
        }
        state.one_time_key_counts.sort();
        state.unused_fallback_key_types.sort();
        Ok(state)
    }

    /// The device's unclaimed one-time keys, counted per algorithm.
    pub async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys
             WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The identity keys of the user's devices (that still exist), with their display names.
    pub async fn device_keys(&self, user_id: &str) -> Result<Vec<DeviceKeysRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT k.device_id, k.key_json, d.display_name
             FROM e2e_device_keys k JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Hands out one of the device's one-time keys of `algorithm`, deleting it, or else its
    /// fallback key (marked used, kept). Concurrent claimers never get the same one-time key:
    /// the delete decides, and a claimer whose pick was taken picks again.
    pub async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>, StorageError> {
        loop {
            let claimed: Option<(String, String)> = sqlx::query_as(
                "DELETE FROM e2e_one_time_keys
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
                     SELECT key_id FROM e2e_one_time_keys
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
                     ORDER BY key_id LIMIT 1)
                 RETURNING key_id, key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&self.pool)
            .await?;
            if claimed.is_some() {
                return Ok(claimed);
            }
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_one(&self.pool)
            .await?;
            if left == 0 {
                break;
            }
        }
        Ok(sqlx::query_as(
            "UPDATE e2e_fallback_keys SET used = 1
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
             RETURNING key_id, key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<CrossSigningKeyRow>, StorageError> {
        Ok(
            sqlx::query_as("SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Whether the user has a master cross-signing key, inside the caller's transaction.
    pub async fn has_master_key(tx: &mut Tx, user_id: &str) -> Result<bool, StorageError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = 'master'",
        )
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(found.is_some())
    }

    /// Replaces one of the user's cross-signing keys, inside the caller's transaction.
    pub async fn put_cross_signing_key(
        tx: &mut Tx,
        user_id: &str,
        key_type: &str,
        public_key: &str,
        json: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json",
        )
        .bind(user_id)
        .bind(key_type)
        .bind(public_key)
        .bind(json)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Uploaded signatures on the user's devices and cross-signing keys.
    pub async fn signatures_on(&self, target_user_id: &str) -> Result<Vec<SignatureRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM e2e_signatures
             WHERE target_user_id = $1",
        )
        .bind(target_user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores signatures (a newer signature by the same key replaces the older one) and marks
    /// the signed users' keys as changed. Returns the last `device_lists` position taken.
    pub async fn add_signatures(&self, signatures: &[NewSignature]) -> Result<Option<i64>, StorageError> {
        if signatures.is_empty() {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let mut targets: Vec<&str> = Vec::new();
        for signature in signatures {
            let stored = sqlx::query(
                "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                 DO UPDATE SET signature = excluded.signature
                 WHERE e2e_signatures.signature <> excluded.signature",
            )
            .bind(&signature.target_user_id)
            .bind(&signature.target_key_id)
            .bind(&signature.signer_user_id)
            .bind(&signature.signer_key_id)
            .bind(&signature.signature)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // The same signature again changes nothing and wakes nobody.
            if stored > 0 && !targets.contains(&signature.target_user_id.as_str()) {
                targets.push(&signature.target_user_id);
            }
        }
        let mut position = None;
        for target in targets {
            position = Some(Self::record_device_list_change(&mut tx, target).await?);
        }
        tx.commit().await?;
        Ok(position)
    }

    /// Notes on the `device_lists` stream that the user's devices or keys changed.
    pub async fn record_device_list_change(tx: &mut Tx, user_id: &str) -> Result<i64, StorageError> {
        Self::record_device_change(tx, user_id, None).await
    }

    /// [`Self::record_device_list_change`] for a change to one device (other servers are
    /// sent that device's update).
    pub async fn record_device_change(
        tx: &mut Tx,
        user_id: &str,
        device_id: Option<&str>,
    ) -> Result<i64, StorageError> {
        let position = Self::next_stream_position(tx, "device_lists").await?;
        sqlx::query("INSERT INTO device_list_changes (stream_position, user_id, device_id) VALUES ($1, $2, $3)")
            .bind(position)
            .bind(user_id)
            .bind(device_id)
            .execute(&mut **tx)
            .await?;
        Ok(position)
    }

    /// Users whose keys changed in (`after`, `until`]: the viewer and those sharing a joined
    /// room with the viewer.
    pub async fn device_list_changes(&self, viewer: &str, after: i64, until: i64) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT c.user_id FROM device_list_changes c
             WHERE c.stream_position > $2 AND c.stream_position <= $3
               AND (c.user_id = $1 OR EXISTS (
                   SELECT 1 FROM current_state_events mine JOIN current_state_events theirs
                       ON theirs.room_id = mine.room_id AND theirs.event_type = 'm.room.member'
                   WHERE mine.event_type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
                     AND theirs.state_key = c.user_id AND theirs.membership = 'join'))",
        )
        .bind(viewer)
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Membership events in (`after`, `until`] of rooms the viewer is joined to, or left
    /// (or was banned from) within the window: (room, the user whose membership changed).
    /// Rooms the viewer is only invited to, or left before, tell it nothing.
    pub async fn member_changes(
        &self,
        viewer: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<(String, String)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT e.room_id, e.state_key FROM events e
             JOIN current_state_events mine
                 ON mine.room_id = e.room_id AND mine.event_type = 'm.room.member' AND mine.state_key = $1
             JOIN events mine_event ON mine_event.event_id = mine.event_id
             WHERE e.stream_ordering > $2 AND e.stream_ordering <= $3 AND e.event_type = 'm.room.member'
               AND (mine.membership = 'join'
                    OR (mine.membership IN ('leave', 'ban') AND mine_event.stream_ordering > $2))",
        )
        .bind(viewer)
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every user joined to a room the viewer is joined to (the viewer included).
    pub async fn users_sharing_a_room(&self, viewer: &str) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT theirs.state_key FROM current_state_events mine JOIN current_state_events theirs
                 ON theirs.room_id = mine.room_id AND theirs.event_type = 'm.room.member'
             WHERE mine.event_type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
               AND theirs.membership = 'join'",
        )
        .bind(viewer)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Users joined to a room now.
    pub async fn joined_members(&self, room_id: &str) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT state_key FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Queues to-device messages. Each device keeps at most `inbox_limit` messages: the
    /// oldest go first, so a device that never syncs cannot grow the database without end.
    /// A transaction ID the sending device used before stores nothing.
    pub async fn send_to_device(
        &self,
        sender: (&str, &str),
        txn_id: &str,
        event_type: &str,
        messages: &[OutgoingToDevice],
        remote: &[super::QueuedEdu],
        inbox_limit: i64,
    ) -> Result<ToDeviceSent, StorageError> {
        let (sender_user, sender_device) = sender;
        let mut tx = self.begin_write().await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
        )
        .bind(sender_user)
        .bind(sender_device)
        .bind(txn_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let mut sent = ToDeviceSent {
            fresh,
            ..ToDeviceSent::default()
        };
        if !fresh {
            return Ok(sent);
        }
        // Transaction IDs only guard retries: a day is plenty.
        sqlx::query("DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND created_ts < $3")
            .bind(sender_user)
            .bind(sender_device)
            .bind(now_ms() - 24 * 60 * 60 * 1000)
            .execute(&mut *tx)
            .await?;
        // Messages for other servers' users wait in their servers' queues.
        Self::queue_edus(&mut tx, remote).await?;
        // Resolve `*` and drop unknown devices, as Synapse does.
        let mut deliveries: Vec<(&str, String, &str)> = Vec::new();
        for message in messages {
            let devices: Vec<String> = if message.device_id == "*" {
                sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id")
                    .bind(&message.user_id)
                    .fetch_all(&mut *tx)
                    .await?
            } else {
                sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(&message.user_id)
                    .bind(&message.device_id)
                    .fetch_all(&mut *tx)
                    .await?
            };
            for device in devices {
                deliveries.push((&message.user_id, device, &message.content));
            }
        }
        if !deliveries.is_empty() {
            let count = i64::try_from(deliveries.len()).map_err(|_| StorageError::Invariant("too many messages"))?;
            let last = Self::reserve_stream_positions(&mut tx, "to_device", count).await?;
            for (offset, (user_id, device_id, content)) in (0..).zip(&deliveries) {
                sqlx::query(
                    "INSERT INTO to_device_messages (stream_position, user_id, device_id, sender, event_type, content)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(last - count + 1 + offset)
                .bind(*user_id)
                .bind(device_id)
                .bind(sender_user)
                .bind(event_type)
                .bind(*content)
                .execute(&mut *tx)
                .await?;
            }
            let mut devices: Vec<(&str, &str)> = deliveries.iter().map(|(u, d, _)| (*u, d.as_str())).collect();
            devices.sort_unstable();
            devices.dedup();
            for (user_id, device_id) in devices {
                let dropped = sqlx::query(
                    "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_position <= (
                         SELECT stream_position FROM to_device_messages WHERE user_id = $1 AND device_id = $2
                         ORDER BY stream_position DESC LIMIT 1 OFFSET $3)",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(inbox_limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sent.dropped += dropped;
                if sent.recipients.last().map(String::as_str) != Some(user_id) {
                    sent.recipients.push(user_id.to_owned());
                }
            }
            sent.position = Some(last);
        }
        tx.commit().await?;
        Ok(sent)
    }

    /// Up to `limit` messages for the device in (`after`, `until`], oldest first.
    pub async fn to_device_messages(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT stream_position, sender, event_type, content FROM to_device_messages
             WHERE user_id = $1 AND device_id = $2 AND stream_position > $3 AND stream_position <= $4
             ORDER BY stream_position LIMIT $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(after)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes the device's messages up to `upto`: the device synced with a token past them,
    /// so it has them. Callers check first (see [`Storage::device_key_state`]), so the common
    /// case (nothing to delete) writes nothing.
    pub async fn delete_acknowledged_to_device(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_position <= $3",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(upto),
        )
        .await?;
        Ok(())
    }

    /// Deletes the encryption state of a device that is going away (inside the deletion's
    /// transaction). `device_id` None means every device of the user except `keep`.
    pub(super) async fn delete_device_e2ee(
        tx: &mut Tx,
        user_id: &str,
        device_id: Option<&str>,
        keep: Option<&str>,
    ) -> Result<(), StorageError> {
        const TABLES: [(&str, &str); 7] = [
            ("dehydrated_devices", "device_id"),
            ("e2e_device_keys", "device_id"),
            ("e2e_one_time_keys", "device_id"),
            ("e2e_fallback_keys", "device_id"),
            ("to_device_messages", "device_id"),
            ("to_device_txns", "device_id"),
            ("e2e_signatures", "target_key_id"),
        ];
        for (table, column) in TABLES {
            let user_column = if table == "e2e_signatures" {
                "target_user_id"
            } else {
                "user_id"
            };
            let (condition, value) = match (device_id, keep) {
                (Some(device), _) => (format!("AND {column} = $2"), Some(device)),
                (None, Some(keep)) => (format!("AND {column} <> $2"), Some(keep)),
                (None, None) => (String::new(), None),
            };
            // Signatures on cross-signing keys are not the device's; keep them when clearing
            // "every device".
            let condition = if table == "e2e_signatures" && device_id.is_none() {
                format!(
                    "{condition} AND {column} NOT IN (SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = $1)"
                )
            } else {
                condition
            };
            let sql = format!("DELETE FROM {table} WHERE {user_column} = $1 {condition}");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
            if let Some(value) = value {
                query = query.bind(value);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Replaces the user's dehydrated device: the old one (if another) is deleted with its
    /// keys and messages, the new one becomes a device without tokens. Returns the
    /// `device_lists` position of the change.
    pub async fn put_dehydrated_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        device_data: &str,
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        let old: Option<String> = sqlx::query_scalar("SELECT device_id FROM dehydrated_devices WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        match old {
            Some(old) if old != device_id => Self::delete_device(&mut tx, user_id, &old).await?,
            // The same ID with a new pickle: the old keys' private halves are gone with it.
            Some(_) => Self::delete_device_e2ee(&mut tx, user_id, Some(device_id), None).await?,
            None => {}
        }
        Self::upsert_device(&mut tx, user_id, device_id, display_name, None).await?;
        sqlx::query(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(device_data)
        .execute(&mut *tx)
        .await?;
        let position = Self::record_device_change(&mut tx, user_id, Some(device_id)).await?;
        tx.commit().await?;
        Ok(position)
    }

    /// The user's dehydrated device: its ID and data.
    pub async fn dehydrated_device(&self, user_id: &str) -> Result<Option<(String, String)>, StorageError> {
        Ok(
            sqlx::query_as("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes the user's dehydrated device; returns its ID and the `device_lists` position.
    pub async fn delete_dehydrated_device(&self, user_id: &str) -> Result<Option<(String, i64)>, StorageError> {
        let mut tx = self.begin_write().await?;
        let device: Option<String> = sqlx::query_scalar("SELECT device_id FROM dehydrated_devices WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(device) = device else {
            return Ok(None);
        };
        Self::delete_device(&mut tx, user_id, &device).await?;
        let position = Self::record_device_change(&mut tx, user_id, Some(&device)).await?;
        tx.commit().await?;
        Ok(Some((device, position)))
    }
}
