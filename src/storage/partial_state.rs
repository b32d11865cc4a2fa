//! Rooms joined with partial state (MSC3706): marked at the join, completed once the full
//! state at the join arrived.

use super::{NewEvent, StateMap, Storage, StorageError, Tx};

/// A room whose members were left out of its join.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartialStateRoom {
    pub room_id: String,
    pub join_event_id: String,
    /// JSON list of the servers the resident server said were in the room.
    pub servers: String,
    pub joined_via: String,
}

impl Storage {
    /// Marks a room as joined with partial state, in the join's transaction.
    pub(super) async fn mark_partial_state(tx: &mut Tx, room: &PartialStateRoom) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO partial_state_rooms (room_id, join_event_id, servers, joined_via) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id,
                 servers = excluded.servers, joined_via = excluded.joined_via",
        )
        .bind(&room.room_id)
        .bind(&room.join_event_id)
        .bind(&room.servers)
        .bind(&room.joined_via)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The rooms still waiting for their full state.
    pub async fn partial_state_rooms(&self) -> Result<Vec<PartialStateRoom>, StorageError> {
        Ok(
            sqlx::query_as("SELECT room_id, join_event_id, servers, joined_via FROM partial_state_rooms")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The servers a partial-state room's join named (none for other rooms).
    pub(super) async fn partial_state_servers(&self, room_id: &str) -> Result<Vec<String>, StorageError> {
        let servers: Option<String> = sqlx::query_scalar("SELECT servers FROM partial_state_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(servers
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    /// Completes a partial-state room: stores the events the full state brought
    /// (`outliers`), then, walking the room's timeline from the join in order, gives each
    /// event the state after it built on `state_before_join` (the full state), and makes the
    /// last of those the room's current state. Returns whether the room was still partial.
    pub async fn complete_partial_state(
        &self,
        room_id: &str,
        join_event_id: &str,
        outliers: &[NewEvent],
        state_before_join: StateMap,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let still: Option<String> =
            sqlx::query_scalar("SELECT join_event_id FROM partial_state_rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(&mut *tx)
                .await?;
        if still.as_deref() != Some(join_event_id) {
            return Ok(false);
        }
        Self::persist_new_outliers(&mut tx, outliers).await?;
        let join_ordering: i64 = sqlx::query_scalar("SELECT stream_ordering FROM events WHERE event_id = $1")
            .bind(join_event_id)
            .fetch_one(&mut *tx)
            .await?;
        let timeline: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT event_id, event_type, state_key FROM events
             WHERE room_id = $1 AND stream_ordering >= $2 AND rejected_reason IS NULL
             ORDER BY stream_ordering",
        )
        .bind(room_id)
        .bind(join_ordering)
        .fetch_all(&mut *tx)
        .await?;
        let mut state = state_before_join;
        let mut group = None;
        for (event_id, event_type, state_key) in &timeline {
            if let Some(key) = state_key {
                state.insert((event_type.clone(), key.clone()), event_id.clone());
                group = None;
            }
            let current = match group {
                Some(group) => group,
                None => {
                    let made = Self::snapshot_state_group(&mut tx, room_id, &state).await?;
                    group = Some(made);
                    made
                }
            };
            sqlx::query("UPDATE event_state_groups SET state_group = $2 WHERE event_id = $1")
                .bind(event_id)
                .bind(current)
                .execute(&mut *tx)
                .await?;
        }
        let current = Self::replace_current_state(&mut tx, room_id, &state).await?;
        sqlx::query("UPDATE rooms SET current_state_group = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(current)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM partial_state_rooms WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
