//! Room state: `current_state_events` (the present, materialized) and state groups (the state
//! after every event, as snapshots plus deltas).

use sqlx::AssertSqlSafe;

use super::{
    Storage, StorageError, Tx,
    rooms::{EventRow, MAX_DELTA_CHAIN, NewEvent, StateMap, prefixed_event_columns},
};

impl Storage {
    /// The room's current state.
    pub async fn current_state(&self, room_id: &str) -> Result<StateMap, StorageError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM current_state_events WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(kind, key, id)| ((kind, key), id)).collect())
    }

    /// Part of the room's current state: the entries for these (type, state key) pairs.
    pub async fn current_state_entries(
        &self,
        room_id: &str,
        keys: &[(String, String)],
    ) -> Result<StateMap, StorageError> {
        if keys.is_empty() {
            return Ok(StateMap::new());
        }
        let conditions: Vec<String> = (0..keys.len())
            .map(|i| format!("(event_type = ${} AND state_key = ${})", 2 * i + 2, 2 * i + 3))
            .collect();
        let sql = format!(
            "SELECT event_type, state_key, event_id FROM current_state_events WHERE room_id = $1 AND ({})",
            conditions.join(" OR ")
        );
        let mut query = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(sql)).bind(room_id);
        for (kind, key) in keys {
            query = query.bind(kind).bind(key);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(kind, key, id)| ((kind, key), id)).collect())
    }

    /// How many members the room has joined now.
    pub async fn joined_member_count(&self, room_id: &str) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The room's current state events of one type (`m.space.child`, say).
    pub async fn current_state_of_type(&self, room_id: &str, event_type: &str) -> Result<Vec<EventRow>, StorageError> {
        let sql = format!(
            "SELECT {} FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.room_id = $1 AND c.event_type = $2 ORDER BY c.state_key",
            prefixed_event_columns("e")
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(event_type)
            .fetch_all(&self.pool)
            .await?)
    }

    /// One current state event.
    pub async fn current_state_event(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<EventRow>, StorageError> {
        let sql = format!(
            "SELECT {} FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.room_id = $1 AND c.event_type = $2 AND c.state_key = $3",
            prefixed_event_columns("e")
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(event_type)
            .bind(state_key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The full state in a state group.
    pub async fn state_group(&self, group: i64) -> Result<StateMap, StorageError> {
        let mut connection = self.pool.acquire().await?;
        Self::state_group_in(&mut connection, group).await
    }

    /// [`Self::state_group`] on a given connection (inside a writer's transaction).
    pub(super) async fn state_group_in(
        connection: &mut sqlx::AnyConnection,
        group: i64,
    ) -> Result<StateMap, StorageError> {
        // One query walks the delta chain back to its snapshot (oldest group first), one reads
        // the chain's entries by primary key. (A single join lets PostgreSQL misjudge the
        // chain's length and scan every entry of every room.)
        let chain: Vec<i64> = sqlx::query_scalar(
            "WITH RECURSIVE chain (id, depth) AS (
                 SELECT id, CAST(0 AS BIGINT) FROM state_groups WHERE id = $1
                 UNION ALL
                 SELECT g.prev_group, chain.depth + 1 FROM chain JOIN state_groups g ON g.id = chain.id
                 WHERE g.prev_group IS NOT NULL
             )
             SELECT id FROM chain ORDER BY depth DESC",
        )
        .bind(group)
        .fetch_all(&mut *connection)
        .await?;
        if chain.is_empty() {
            return Ok(StateMap::new());
        }
        let placeholders: Vec<String> = (1..=chain.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT state_group, event_type, state_key, event_id FROM state_group_entries WHERE state_group IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as(AssertSqlSafe(sql));
        for id in &chain {
            query = query.bind(*id);
        }
        let mut rows: Vec<(i64, String, String, String)> = query.fetch_all(&mut *connection).await?;
        // Oldest group first, so each delta overrides what came before it.
        let age = |group: i64| chain.iter().position(|id| *id == group);
        rows.sort_by_key(|row| age(row.0));
        let mut state = StateMap::new();
        state.extend(rows.into_iter().map(|(_, kind, key, event)| ((kind, key), event)));
        Ok(state)
    }

    /// The state group after an event.
    pub async fn state_group_after(&self, event_id: &str) -> Result<Option<i64>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT state_group FROM event_state_groups WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A state group for the state after a state event: a delta on the state before it, or a
    /// full snapshot when the delta chain is long.
    pub(super) async fn new_state_group(
        tx: &mut Tx,
        event: &NewEvent,
        state_key: &str,
        before: Option<i64>,
    ) -> Result<i64, StorageError> {
        let id = Self::next_stream_position(tx, "state_groups").await?;
        let chain: Option<i64> = match before {
            Some(prev) => {
                sqlx::query_scalar("SELECT delta_chain FROM state_groups WHERE id = $1")
                    .bind(prev)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            None => None,
        };
        let snapshot = chain.is_none_or(|length| length + 1 >= MAX_DELTA_CHAIN);
        let (prev_group, delta_chain) = if snapshot {
            (None, 0)
        } else {
            (before, chain.unwrap_or(0) + 1)
        };
        sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, delta_chain) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(&event.room_id)
            .bind(prev_group)
            .bind(delta_chain)
            .execute(&mut **tx)
            .await?;
        if snapshot && let Some(before) = before {
            // Copy the full state before the event into the snapshot; the event then
            // overrides. (The state before may not be current state: a remote event on a
            // fork.)
            let state = Self::state_group_in(tx, before).await?;
            Self::insert_group_entries(tx, id, &state).await?;
        }
        sqlx::query(
            "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (state_group, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
        )
        .bind(id)
        .bind(&event.event_type)
        .bind(state_key)
        .bind(&event.event_id)
        .execute(&mut **tx)
        .await?;
        Ok(id)
    }
}

impl Storage {
    /// A state group holding exactly `entries` (type, state key, event ID): state that came
    /// from elsewhere, such as the room's state a join brought.
    pub(super) async fn snapshot_state_group(
        tx: &mut Tx,
        room_id: &str,
        state: &StateMap,
    ) -> Result<i64, StorageError> {
        let id = Self::next_stream_position(tx, "state_groups").await?;
        sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, delta_chain) VALUES ($1, $2, NULL, 0)")
            .bind(id)
            .bind(room_id)
            .execute(&mut **tx)
            .await?;
        Self::insert_group_entries(tx, id, state).await?;
        Ok(id)
    }

    /// Writes `state` into a state group's entries.
    async fn insert_group_entries(tx: &mut Tx, group: i64, state: &StateMap) -> Result<(), StorageError> {
        for ((kind, key), event_id) in state {
            sqlx::query(
                "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(group)
            .bind(kind)
            .bind(key)
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

impl Storage {
    /// The group holding the room's current state (see `rooms.current_state_group`).
    pub async fn current_state_group(&self, room_id: &str) -> Result<Option<i64>, StorageError> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT current_state_group FROM rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// A state group holding exactly `state`, in its own transaction (the resolved state
    /// before a remote event whose prev events disagree).
    pub async fn create_state_snapshot(&self, room_id: &str, state: &StateMap) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        let group = Self::snapshot_state_group(&mut tx, room_id, state).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// Replaces the room's current state with `state` (a resolution); returns the snapshot
    /// group holding it.
    pub(super) async fn replace_current_state(
        tx: &mut Tx,
        room_id: &str,
        state: &StateMap,
    ) -> Result<i64, StorageError> {
        let group = Self::snapshot_state_group(tx, room_id, state).await?;
        sqlx::query("DELETE FROM current_state_events WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut **tx)
            .await?;
        for ((kind, key), event_id) in state {
            let membership = if kind == "m.room.member" {
                let json: Option<String> = sqlx::query_scalar("SELECT json FROM events WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                json.and_then(|json| crate::json::content_field(&json, "membership"))
            } else {
                None
            };
            sqlx::query(
                "INSERT INTO current_state_events (room_id, event_type, state_key, event_id, membership)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(room_id)
            .bind(kind)
            .bind(key)
            .bind(event_id)
            .bind(membership)
            .execute(&mut **tx)
            .await?;
        }
        Ok(group)
    }
}
