//! Rooms, events and the DAG (`rooms`, `events`, `event_edges`, `event_forward_extremities`,
//! `event_relations`, `event_txn_ids`), persisting an event, and the server's signing keys.
//! Room state lives in `state.rs`.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, FromRow};

use super::{Storage, StorageError, Tx, now_ms};

/// A stored event.
#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub json: String,
    pub redacted_by: Option<String>,
    pub replaces_state: Option<String>,
    pub history_visibility: String,
}

pub(super) const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, depth, event_type, state_key, sender, \
                             origin_server_ts, json, redacted_by, replaces_state, \
                             history_visibility";

/// Where a written event landed: its stream position and the state group after it.
#[derive(Debug, Clone, Copy)]
pub struct Persisted {
    pub position: i64,
    /// The state group after the event (0 for an outlier, which has none).
    pub state_group: i64,
}

/// (event type, state key) → event ID.
pub type StateMap = BTreeMap<(String, String), String>;

/// An event to persist, with everything written with it in one transaction. The one shape an
/// event is written in, local or remote, whatever its kind; [`EventRow`] is how it reads back.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub origin_server_ts: i64,
    pub json: String,
    pub prev_events: Vec<String>,
    /// The state group holding the state before this event (None for a room's first event).
    pub state_before: Option<i64>,
    /// The membership in a member event's content, copied into current state.
    pub membership: Option<String>,
    /// (device, endpoint, txn ID) of the sender's client request, for idempotent retries.
    pub transaction: Option<(String, &'static str, String)>,
    /// (event it relates to, relation type) from the content's `m.relates_to`.
    pub relation: Option<(String, String)>,
    /// The room's history visibility when the event is sent.
    pub history_visibility: String,
    /// For a redaction: the event it redacts, marked redacted in the same transaction.
    pub redacts: Option<String>,
    /// What the event's kind lets it change (see `rooms::pipeline::context::EventKind`).
    pub writes: EventWrites,
    /// Why the event was rejected: it is stored (so it is not fetched again) but never
    /// served, never state and never an extremity.
    pub rejected_reason: Option<String>,
    /// The room's current state after this event when the DAG forked and the states of the
    /// forward extremities had to be resolved: (type, state key) → event ID. It replaces
    /// current state whole.
    pub resolved_state: Option<StateMap>,
}

/// What persisting one event changes besides its own row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWrites {
    /// Its `prev_events` edges (it is part of the DAG).
    pub edges: bool,
    /// For a state event, a new state group after it (else the state after is the state before).
    pub state_group: bool,
    /// It becomes a forward extremity, replacing its `prev_events`.
    pub extremity: bool,
    /// A state event updates the room's current state.
    pub current_state: bool,
    /// It takes a place in the room's live timeline: a positive stream position, which
    /// `/sync` and `/messages` read. Outliers and soft-failed events get a negative one
    /// (from their own counter), so no timeline reader ever sees them.
    pub timeline: bool,
    /// History fetched from another server: a negative position too, but `/messages` pages
    /// through it after the timeline.
    pub backfilled: bool,
}

impl EventWrites {
    /// Everything: a new event at the room's head.
    pub const ALL: Self = Self {
        edges: true,
        state_group: true,
        extremity: true,
        current_state: true,
        timeline: true,
        backfilled: false,
    };
}

/// An event relating to another, with what aggregations need.
#[derive(Debug, Clone, FromRow)]
pub struct RelationRow {
    pub relates_to_id: String,
    pub rel_type: String,
    pub event_id: String,
    pub sender: String,
    pub stream_ordering: i64,
    pub event_type: String,
    pub history_visibility: String,
}

/// A new group is a full snapshot once this many deltas have piled up, so reading the state
/// at any event walks a bounded chain.
pub(super) const MAX_DELTA_CHAIN: i64 = 50;

impl Storage {
    /// Signing keys: (key ID, base64 PKCS#8, expired_ts), oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<(String, String, Option<i64>)>, StorageError> {
        Ok(
            sqlx::query_as("SELECT key_id, pkcs8, expired_ts FROM server_signing_keys ORDER BY created_ts, key_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn insert_signing_key(&self, key_id: &str, pkcs8: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "INSERT INTO server_signing_keys (key_id, pkcs8, created_ts) VALUES ($1, $2, $3)
             ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(key_id)
            .bind(pkcs8)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Retires a signing key: it stops signing and is published as an old verify key.
    pub async fn expire_signing_key(&self, key_id: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("UPDATE server_signing_keys SET expired_ts = $2 WHERE key_id = $1 AND expired_ts IS NULL")
                .bind(key_id)
                .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    pub async fn room_version(&self, room_id: &str) -> Result<Option<String>, StorageError> {
        Ok(sqlx::query_scalar("SELECT room_version FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a new room; false if the room ID is taken (a room version 12 ID is the create
    /// event's hash: two identical creations in one millisecond would share it).
    pub async fn insert_room(tx: &mut Tx, room_id: &str, version: &str, creator: &str) -> Result<bool, StorageError> {
        let inserted = sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(version)
        .bind(creator)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// An accepted event by ID.
    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>, StorageError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1 AND rejected_reason IS NULL");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether an event is stored, accepted (`Some(None)`) or rejected (`Some(Some(reason))`).
    pub async fn stored_event_rejection(&self, event_id: &str) -> Result<Option<Option<String>>, StorageError> {
        let row: Option<(Option<String>,)> = sqlx::query_as("SELECT rejected_reason FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(reason,)| reason))
    }

    /// Accepted events by ID (missing ones are left out). Large lists (a big room's state)
    /// go in chunks: PostgreSQL takes at most 65,535 parameters per query.
    pub async fn events(&self, event_ids: &[String]) -> Result<Vec<EventRow>, StorageError> {
        let mut rows = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(1000) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({}) AND rejected_reason IS NULL",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// The forward extremities of a room with their depths and the state group after each.
    pub async fn forward_extremities(&self, room_id: &str) -> Result<Vec<(String, i64, i64)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT e.event_id, e.depth, g.state_group
             FROM event_forward_extremities x
             JOIN events e ON e.event_id = x.event_id
             JOIN event_state_groups g ON g.event_id = x.event_id
             WHERE x.room_id = $1
             ORDER BY e.stream_ordering",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every membership event of a user in a room, in order: (stream position, event ID, PDU
    /// JSON).
    pub async fn membership_history(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Vec<(i64, String, String)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT stream_ordering, event_id, json FROM events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2 AND rejected_reason IS NULL
             ORDER BY stream_ordering",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The room's event at or just before a stream position (for "state at" queries).
    /// The event at a stream position.
    pub async fn event_at(&self, position: i64) -> Result<Option<EventRow>, StorageError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(position)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn event_at_or_before(&self, room_id: &str, position: i64) -> Result<Option<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND stream_ordering > 0 AND rejected_reason IS NULL
             ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(position)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user's membership in the room now (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT membership FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records that the user forgot the room at their current membership, if that is a leave
    /// or a ban. Returns whether it was (false: joined, invited, knocking or never there).
    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let forgotten = sqlx::query(
            "INSERT INTO forgotten_rooms (user_id, room_id, membership_event_id)
             SELECT state_key, room_id, event_id FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2
               AND membership IN ('leave', 'ban')
             ON CONFLICT (user_id, room_id) DO UPDATE SET membership_event_id = excluded.membership_event_id",
        )
        .bind(room_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(forgotten)
    }

    /// The membership event at which the user forgot the room, if they did.
    pub async fn forgotten_at(&self, room_id: &str, user_id: &str) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT membership_event_id FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2")
                .bind(user_id)
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Rooms where the user's current membership is `membership`.
    pub async fn rooms_with_membership(&self, user_id: &str, membership: &str) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT room_id FROM current_state_events
             WHERE event_type = 'm.room.member' AND state_key = $1 AND membership = $2
             ORDER BY room_id",
        )
        .bind(user_id)
        .bind(membership)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The room's current member events (every membership).
    pub async fn member_events(&self, room_id: &str) -> Result<Vec<EventRow>, StorageError> {
        let sql = format!(
            "SELECT {} FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.room_id = $1 AND c.event_type = 'm.room.member' ORDER BY c.state_key",
            prefixed_event_columns("e")
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// A page of the room's timeline: events before (`backwards`) or after `from`, a stream
    /// position, nearest first.
    pub async fn room_events(
        &self,
        room_id: &str,
        from: i64,
        backwards: bool,
        limit: i64,
    ) -> Result<Vec<EventRow>, StorageError> {
        let (op, order) = if backwards { ("<", "DESC") } else { (">", "ASC") };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = $1 AND stream_ordering {op} $2 AND (stream_ordering > 0 OR backfilled = 1)
               AND rejected_reason IS NULL
             ORDER BY stream_ordering {order} LIMIT $3"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The room's event closest to a timestamp: the first at or after it (`forwards`), or the
    /// last at or before it.
    pub async fn event_near_timestamp(
        &self,
        room_id: &str,
        ts: i64,
        forwards: bool,
    ) -> Result<Option<EventRow>, StorageError> {
        let (op, order) = if forwards { (">=", "ASC") } else { ("<=", "DESC") };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = $1 AND origin_server_ts {op} $2 AND stream_ordering > 0 AND rejected_reason IS NULL
             ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(ts)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Accepted, unredacted events relating to any of `targets`, oldest first.
    pub async fn relations_to(&self, room_id: &str, targets: &[String]) -> Result<Vec<RelationRow>, StorageError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (2..targets.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT r.relates_to_id, r.rel_type, e.event_id, e.sender, e.stream_ordering, e.event_type, e.history_visibility
             FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = $1 AND r.relates_to_id IN ({}) AND e.rejected_reason IS NULL AND e.redacted_by IS NULL
             ORDER BY e.stream_ordering",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as(AssertSqlSafe(sql)).bind(room_id);
        for id in targets {
            query = query.bind(id);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The newest stream position of an event relating to another in the room (0 if none).
    pub async fn last_relation_position(&self, room_id: &str) -> Result<i64, StorageError> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(e.stream_ordering) FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = $1",
        )
        .bind(room_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(position.unwrap_or(0))
    }

    /// Thread roots of a room (events with at least one `m.thread` reply), by latest activity.
    pub async fn thread_roots(&self, room_id: &str) -> Result<Vec<(String, i64)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT r.relates_to_id, MAX(e.stream_ordering) AS latest
             FROM event_relations r JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = $1 AND r.rel_type = 'm.thread' AND e.rejected_reason IS NULL
             GROUP BY r.relates_to_id
             ORDER BY latest DESC",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The event a device already sent with this transaction ID to this room's `endpoint`.
    pub async fn event_for_transaction(
        &self,
        user_id: &str,
        device_id: &str,
        room_id: &str,
        endpoint: &str,
        txn_id: &str,
    ) -> Result<Option<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM event_txn_ids
             WHERE user_id = $1 AND device_id = $2 AND room_id = $3 AND endpoint = $4 AND txn_id = $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(room_id)
        .bind(endpoint)
        .bind(txn_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The transaction IDs one device of one user used for these events (shown to it only).
    pub async fn transaction_ids(
        &self,
        user_id: &str,
        device_id: &str,
        event_ids: &[String],
    ) -> Result<Vec<(String, String)>, StorageError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (3..event_ids.len() + 3).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT event_id, txn_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 AND event_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as(AssertSqlSafe(sql)).bind(user_id).bind(device_id);
        for id in event_ids {
            query = query.bind(id);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// Persists an event with everything its kind's [`EventWrites`] allow: its row at the next
    /// stream position, its DAG edges, the forward extremities, the state after it, current
    /// state, its relation, the transaction ID, and for a redaction the mark on the redacted
    /// event. Returns the stream position and the state group after it.
    ///
    /// Positions are handed out inside the transaction from a counter row that stays locked
    /// until commit, so positions become visible in order: no reader sees N+1 before N.
    pub async fn persist_event(tx: &mut Tx, event: &NewEvent) -> Result<Persisted, StorageError> {
        let writes = event.writes;
        let position = if writes.timeline {
            Self::next_stream_position(tx, "events").await?
        } else {
            -Self::next_stream_position(tx, "outliers").await?
        };
        let room_id = event.room_id.as_str();
        let event_id = event.event_id.as_str();
        let replaces_state: Option<String> = match event.state_key.as_deref() {
            Some(state_key) if writes.current_state => sqlx::query_scalar(
                "SELECT event_id FROM current_state_events WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
            )
            .bind(room_id)
            .bind(&event.event_type)
            .bind(state_key)
            .fetch_optional(&mut **tx)
            .await?,
            _ => None,
        };
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, depth, event_type, state_key, sender,
                                 origin_server_ts, json, replaces_state, history_visibility, rejected_reason,
                                 backfilled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(position)
        .bind(event_id)
        .bind(room_id)
        .bind(event.depth)
        .bind(&event.event_type)
        .bind(event.state_key.as_deref())
        .bind(&event.sender)
        .bind(event.origin_server_ts)
        .bind(&event.json)
        .bind(&replaces_state)
        .bind(&event.history_visibility)
        .bind(event.rejected_reason.as_deref())
        .bind(i64::from(writes.backfilled))
        .execute(&mut **tx)
        .await?;
        if writes.edges {
            for prev in &event.prev_events {
                // A remote event may name a prev event twice.
                sqlx::query("INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(event_id)
                    .bind(prev)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        if writes.extremity {
            for prev in &event.prev_events {
                sqlx::query("DELETE FROM event_forward_extremities WHERE room_id = $1 AND event_id = $2")
                    .bind(room_id)
                    .bind(prev)
                    .execute(&mut **tx)
                    .await?;
            }
            sqlx::query("INSERT INTO event_forward_extremities (room_id, event_id) VALUES ($1, $2)")
                .bind(room_id)
                .bind(event_id)
                .execute(&mut **tx)
                .await?;
        }

        let state_after = match (event.state_key.as_deref(), event.state_before) {
            (Some(state_key), before) if writes.state_group => {
                let group = Self::new_state_group(tx, event, state_key, before).await?;
                if writes.current_state {
                    sqlx::query(
                        "INSERT INTO current_state_events (room_id, event_type, state_key, event_id, membership)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (room_id, event_type, state_key)
                         DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership",
                    )
                    .bind(room_id)
                    .bind(&event.event_type)
                    .bind(state_key)
                    .bind(event_id)
                    .bind(event.membership.as_deref())
                    .execute(&mut **tx)
                    .await?;
                }
                Some(group)
            }
            (_, Some(before)) => Some(before),
            // An outlier has no place in the room's state.
            (_, None) if !writes.state_group => None,
            (_, None) => {
                return Err(StorageError::Invariant("a room's first event must be a state event"));
            }
        };
        if let Some(group) = state_after {
            sqlx::query("INSERT INTO event_state_groups (event_id, state_group) VALUES ($1, $2)")
                .bind(event_id)
                .bind(group)
                .execute(&mut **tx)
                .await?;
        }
        if writes.current_state {
            let current = match &event.resolved_state {
                Some(resolved) => Some(Self::replace_current_state(tx, room_id, resolved).await?),
                None => state_after,
            };
            if let Some(current) = current {
                sqlx::query("UPDATE rooms SET current_state_group = $2 WHERE room_id = $1")
                    .bind(room_id)
                    .bind(current)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        if event.rejected_reason.is_none() {
            if let Some((relates_to, rel_type)) = &event.relation {
                // Only relations within the room count: an event of another room cannot edit,
                // thread or annotate this one's.
                sqlx::query(
                    "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM events WHERE event_id = $2 AND room_id = $4)",
                )
                .bind(event_id)
                .bind(relates_to)
                .bind(rel_type)
                .bind(room_id)
                .execute(&mut **tx)
                .await?;
            }
            if let Some(redacted) = &event.redacts {
                Self::mark_redacted(tx, room_id, redacted, event_id).await?;
            }
        }
        if let Some((device_id, endpoint, txn_id)) = &event.transaction {
            sqlx::query(
                "INSERT INTO event_txn_ids (user_id, device_id, room_id, endpoint, txn_id, event_id, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&event.sender)
            .bind(device_id)
            .bind(room_id)
            .bind(*endpoint)
            .bind(txn_id)
            .bind(event_id)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        }
        Ok(Persisted {
            position,
            state_group: state_after.unwrap_or(0),
        })
    }

    /// Marks an event redacted by `redaction_id` (it is then served redacted).
    pub async fn mark_redacted(
        tx: &mut Tx,
        room_id: &str,
        event_id: &str,
        redaction_id: &str,
    ) -> Result<(), StorageError> {
        sqlx::query("UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND room_id = $3 AND redacted_by IS NULL")
            .bind(event_id)
            .bind(redaction_id)
            .bind(room_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

pub(super) fn prefixed_event_columns(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
