//! `appservice_queues`, `appservice_transactions` and `appservice_room_list`: each
//! appservice's place in the streams, its transaction in flight, and its networks' directory.

use super::{EventRow, Storage, StorageError, rooms::EVENT_COLUMNS};

/// Where an appservice stands in the streams it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct AppservicePositions {
    pub events_position: i64,
    pub to_device_position: i64,
    pub device_lists_position: i64,
}

/// The transaction being delivered to an appservice.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingAppserviceTxn {
    pub txn_id: i64,
    pub body: String,
    pub events_position: i64,
    pub to_device_position: i64,
    pub device_lists_position: i64,
}

impl PendingAppserviceTxn {
    pub fn positions(&self) -> AppservicePositions {
        AppservicePositions {
            events_position: self.events_position,
            to_device_position: self.to_device_position,
            device_lists_position: self.device_lists_position,
        }
    }
}

/// A to-device message waiting in some device's inbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxMessage {
    pub stream_position: i64,
    pub user_id: String,
    pub device_id: String,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

impl Storage {
    /// The appservice's positions; a new appservice is placed at `start` (the present).
    pub async fn appservice_positions(
        &self,
        appservice_id: &str,
        start: AppservicePositions,
    ) -> Result<AppservicePositions, StorageError> {
        sqlx::query(
            "INSERT INTO appservice_queues
                 (appservice_id, events_position, to_device_position, device_lists_position, last_txn_id)
             VALUES ($1, $2, $3, $4, 0) ON CONFLICT (appservice_id) DO NOTHING",
        )
        .bind(appservice_id)
        .bind(start.events_position)
        .bind(start.to_device_position)
        .bind(start.device_lists_position)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_as(
            "SELECT events_position, to_device_position, device_lists_position
             FROM appservice_queues WHERE appservice_id = $1",
        )
        .bind(appservice_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Moves the appservice past what it was sent, or past what it is not interested in.
    pub async fn set_appservice_positions(
        &self,
        appservice_id: &str,
        positions: AppservicePositions,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE appservice_queues SET events_position = $2, to_device_position = $3, device_lists_position = $4
             WHERE appservice_id = $1",
        )
        .bind(appservice_id)
        .bind(positions.events_position)
        .bind(positions.to_device_position)
        .bind(positions.device_lists_position)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn pending_appservice_txn(
        &self,
        appservice_id: &str,
    ) -> Result<Option<PendingAppserviceTxn>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT txn_id, body, events_position, to_device_position, device_lists_position
             FROM appservice_transactions WHERE appservice_id = $1",
        )
        .bind(appservice_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores the next transaction under a new ID (returned), in one write with the ID's use.
    pub async fn create_appservice_txn(
        &self,
        appservice_id: &str,
        body: &str,
        upto: AppservicePositions,
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        let txn_id: i64 = sqlx::query_scalar(
            "UPDATE appservice_queues SET last_txn_id = last_txn_id + 1 WHERE appservice_id = $1 RETURNING last_txn_id",
        )
        .bind(appservice_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO appservice_transactions
                 (appservice_id, txn_id, body, events_position, to_device_position, device_lists_position)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(appservice_id)
        .bind(txn_id)
        .bind(body)
        .bind(upto.events_position)
        .bind(upto.to_device_position)
        .bind(upto.device_lists_position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(txn_id)
    }

    /// The appservice accepted its transaction: the queue moves to the transaction's positions
    /// and the transaction goes, together.
    pub async fn complete_appservice_txn(&self, appservice_id: &str, txn_id: i64) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE appservice_queues SET
                 events_position = t.events_position,
                 to_device_position = t.to_device_position,
                 device_lists_position = t.device_lists_position
             FROM (SELECT events_position, to_device_position, device_lists_position
                   FROM appservice_transactions WHERE appservice_id = $1 AND txn_id = $2) AS t
             WHERE appservice_queues.appservice_id = $1",
        )
        .bind(appservice_id)
        .bind(txn_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM appservice_transactions WHERE appservice_id = $1 AND txn_id = $2")
            .bind(appservice_id)
            .bind(txn_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Room events in (`after`, `until`], oldest first, at most `limit`: what may go to
    /// appservices (neither rejected, nor outliers, nor backfilled history).
    pub async fn events_between(&self, after: i64, until: i64, limit: i64) -> Result<Vec<EventRow>, StorageError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE stream_ordering > $1 AND stream_ordering <= $2 AND rejected_reason IS NULL AND backfilled = 0
             ORDER BY stream_ordering LIMIT $3"
        )))
        .bind(after)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The room's member events after stream position `after`, oldest first: (target, the
    /// member event each replaced in the room's state, if any).
    pub async fn member_changes_after(
        &self,
        room_id: &str,
        after: i64,
    ) -> Result<Vec<(String, Option<String>)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT state_key, replaces_state FROM events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND stream_ordering > $2
               AND rejected_reason IS NULL AND backfilled = 0 AND state_key IS NOT NULL
             ORDER BY stream_ordering",
        )
        .bind(room_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?)
    }

    /// To-device messages for any device in (`after`, `until`], oldest first, at most `limit`.
    pub async fn inbox_messages_between(
        &self,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<InboxMessage>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT stream_position, user_id, device_id, sender, event_type, content FROM to_device_messages
             WHERE stream_position > $1 AND stream_position <= $2
             ORDER BY stream_position LIMIT $3",
        )
        .bind(after)
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Lists (or unlists) a room in an appservice's network directory.
    pub async fn set_appservice_room_listed(
        &self,
        appservice_id: &str,
        network_id: &str,
        room_id: &str,
        listed: bool,
    ) -> Result<(), StorageError> {
        let query = if listed {
            sqlx::query(
                "INSERT INTO appservice_room_list (appservice_id, network_id, room_id, published_ts)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (appservice_id, network_id, room_id) DO NOTHING",
            )
        } else {
            sqlx::query(
                "DELETE FROM appservice_room_list WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3",
            )
        };
        query
            .bind(appservice_id)
            .bind(network_id)
            .bind(room_id)
            .bind(super::now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The rooms of one network (`Some((appservice, network))`) or of all of them (`None`),
    /// with their joined member counts, most members first.
    pub async fn appservice_listed_rooms(
        &self,
        network: Option<(&str, &str)>,
    ) -> Result<Vec<(String, i64)>, StorageError> {
        let (appservice_id, network_id) = network.unwrap_or(("", ""));
        Ok(sqlx::query_as(
            "SELECT d.room_id, COUNT(c.state_key) AS members
             FROM (SELECT DISTINCT room_id FROM appservice_room_list
                   WHERE $1 = '' OR (appservice_id = $1 AND network_id = $2)) d
             LEFT JOIN current_state_events c
               ON c.room_id = d.room_id AND c.event_type = 'm.room.member' AND c.membership = 'join'
             GROUP BY d.room_id
             ORDER BY members DESC, d.room_id",
        )
        .bind(appservice_id)
        .bind(network_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
