//! Federation tables: other servers' keys, inbound transactions, destinations' positions.

use std::collections::HashSet;

use sqlx::AssertSqlSafe;

use super::{EventRow, Storage, StorageError, now_ms, rooms::EVENT_COLUMNS};

/// A stored verify key of another server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredServerKey {
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: i64,
    pub expired: i64,
}

impl Storage {
    /// Every key we hold for a server.
    pub async fn server_keys(&self, server_name: &str) -> Result<Vec<StoredServerKey>, StorageError> {
        Ok(
            sqlx::query_as(
                "SELECT key_id, public_key, valid_until_ts, expired FROM server_keys WHERE server_name = $1",
            )
            .bind(server_name)
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// Stores the keys of a checked key document, and the document (JSON). A key already
    /// held keeps the later of the two validity times: a stale copy from a notary never
    /// shortens what the server itself said.
    pub async fn store_server_keys(
        &self,
        server_name: &str,
        keys: &[StoredServerKey],
        document: &str,
        valid_until_ts: i64,
    ) -> Result<(), StorageError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired, fetched_ts)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (server_name, key_id) DO UPDATE SET
                     valid_until_ts = CASE WHEN excluded.valid_until_ts > server_keys.valid_until_ts
                                           THEN excluded.valid_until_ts ELSE server_keys.valid_until_ts END,
                     expired = excluded.expired,
                     fetched_ts = excluded.fetched_ts",
            )
            .bind(server_name)
            .bind(&key.key_id)
            .bind(&key.public_key)
            .bind(key.valid_until_ts)
            .bind(key.expired)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO server_key_documents (server_name, document, valid_until_ts, fetched_ts)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (server_name) DO UPDATE SET document = excluded.document,
                 valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts
             WHERE excluded.valid_until_ts >= server_key_documents.valid_until_ts",
        )
        .bind(server_name)
        .bind(document)
        .bind(valid_until_ts)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The last key document a server signed, with its validity: (JSON, valid_until_ts).
    pub async fn server_key_document(&self, server_name: &str) -> Result<Option<(String, i64)>, StorageError> {
        Ok(
            sqlx::query_as("SELECT document, valid_until_ts FROM server_key_documents WHERE server_name = $1")
                .bind(server_name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The answer given to a transaction already received.
    pub async fn inbound_transaction(&self, origin: &str, txn_id: &str) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar(
                "SELECT response FROM federation_inbound_transactions WHERE origin = $1 AND txn_id = $2",
            )
            .bind(origin)
            .bind(txn_id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Records the answer to a transaction (the first answer stays).
    pub async fn record_inbound_transaction(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
    ) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "INSERT INTO federation_inbound_transactions (origin, txn_id, response, received_ts)
             VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING",
            )
            .bind(origin)
            .bind(txn_id)
            .bind(response)
            .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// Forgets transactions received before `cutoff` (ms): a server retries within minutes.
    pub async fn prune_inbound_transactions(&self, cutoff: i64) -> Result<u64, StorageError> {
        Ok(self
            .write(sqlx::query("DELETE FROM federation_inbound_transactions WHERE received_ts < $1").bind(cutoff))
            .await?
            .rows_affected())
    }
}

impl Storage {
    /// Marks a remote event for sending on to the room's other servers.
    pub async fn forward_event(&self, event_id: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("INSERT INTO federation_forwarded_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(event_id),
        )
        .await?;
        Ok(())
    }

    /// Every destination we have sent to (their tasks restart at start-up).
    pub async fn destinations(&self) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar("SELECT destination FROM federation_destinations")
            .fetch_all(&self.pool)
            .await?)
    }

    /// How far a destination has been sent our events.
    pub async fn destination_position(&self, destination: &str) -> Result<Option<i64>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT sent_position FROM federation_destinations WHERE destination = $1")
                .bind(destination)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A destination first seen: it is owed what comes after `position`.
    pub async fn add_destination(&self, destination: &str, position: i64) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "INSERT INTO federation_destinations (destination, sent_position, retry_interval_ms)
             VALUES ($1, $2, 0) ON CONFLICT (destination) DO NOTHING",
            )
            .bind(destination)
            .bind(position),
        )
        .await?;
        Ok(())
    }

    /// Moves a destination's position forward (never back).
    pub async fn set_destination_position(&self, destination: &str, position: i64) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "UPDATE federation_destinations SET sent_position = $2, retry_interval_ms = 0, last_failure_ts = NULL
             WHERE destination = $1 AND sent_position < $2",
            )
            .bind(destination)
            .bind(position),
        )
        .await?;
        Ok(())
    }

    /// Records that a destination failed to take a transaction.
    pub async fn destination_failed(&self, destination: &str) -> Result<(), StorageError> {
        self.write(
            sqlx::query("UPDATE federation_destinations SET last_failure_ts = $2 WHERE destination = $1")
                .bind(destination)
                .bind(now_ms()),
        )
        .await?;
        Ok(())
    }

    /// The events after `after` that `destination` is owed, oldest first: ours (and those we
    /// forward) in rooms where it has a joined member, and membership changes of its users
    /// (a kick reaches the kicked server). (stream position, PDU JSON).
    pub async fn events_for_destination(
        &self,
        destination: &str,
        our_server: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StorageError> {
        let theirs = format!("%:{destination}");
        let ours = format!("%:{our_server}");
        Ok(sqlx::query_as(
            "SELECT e.stream_ordering, e.json FROM events e
             WHERE e.stream_ordering > $1
               AND e.rejected_reason IS NULL
               AND e.sender NOT LIKE $2
               AND (e.sender LIKE $3 OR e.event_id IN (SELECT event_id FROM federation_forwarded_events))
               AND ((e.room_id IN (SELECT room_id FROM current_state_events
                                   WHERE event_type = 'm.room.member' AND membership = 'join' AND state_key LIKE $2)
                     -- Only what came after its users joined: a server that joins late (or
                     -- again) is not sent the history from before.
                     AND e.stream_ordering > (SELECT MIN(j.stream_ordering)
                                              FROM current_state_events c JOIN events j ON j.event_id = c.event_id
                                              WHERE c.room_id = e.room_id AND c.event_type = 'm.room.member'
                                                AND c.membership = 'join' AND c.state_key LIKE $2))
                    OR (e.event_type = 'm.room.member' AND e.state_key LIKE $2)
                    -- A room joined with partial state: the servers its join named, from
                    -- the join on (their members are not known here yet).
                    OR EXISTS (SELECT 1 FROM partial_state_rooms p JOIN events j ON j.event_id = p.join_event_id
                               WHERE p.room_id = e.room_id AND p.servers LIKE $5
                                 AND e.stream_ordering >= j.stream_ordering))
             ORDER BY e.stream_ordering
             LIMIT $4",
        )
        .bind(after)
        .bind(&theirs)
        .bind(&ours)
        .bind(limit)
        // Server names hold neither quotes nor LIKE's wildcards.
        .bind(format!("%\"{destination}\"%"))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The servers with a joined member in a room.
    pub async fn servers_in_room(&self, room_id: &str) -> Result<Vec<String>, StorageError> {
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT state_key FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership = 'join'",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        let mut servers: Vec<String> = members
            .iter()
            .filter_map(|user| user.split_once(':').map(|(_, server)| server.to_owned()))
            .collect();
        // A room joined with partial state: the servers its join named, until the members
        // are known.
        servers.extend(self.partial_state_servers(room_id).await?);
        servers.sort();
        servers.dedup();
        Ok(servers)
    }
}

/// A room joined through another server, as the join brought it: the events of its state and
/// their auth chain (stored as outliers), its state, and our join on top.
pub struct JoinedRoom {
    pub room_id: String,
    pub version: String,
    pub creator: String,
    pub outliers: Vec<super::NewEvent>,
    /// (type, state key, event ID, membership for member events).
    pub state: Vec<(String, String, String, Option<String>)>,
    /// Our join, with `state_before` filled in here.
    pub join: super::NewEvent,
    /// Set when the resident server left the members out: the room is marked partial.
    pub partial: Option<super::PartialStateRoom>,
}

impl Storage {
    /// Stores the events of `outliers` not stored yet, in the caller's transaction.
    pub(super) async fn persist_new_outliers(
        tx: &mut super::Tx,
        outliers: &[super::NewEvent],
    ) -> Result<(), StorageError> {
        for event in outliers {
            let known: Option<i64> = sqlx::query_scalar("SELECT stream_ordering FROM events WHERE event_id = $1")
                .bind(&event.event_id)
                .fetch_optional(&mut **tx)
                .await?;
            if known.is_none() {
                Self::persist_event(tx, event).await?;
            }
        }
        Ok(())
    }

    /// Writes a room joined over federation in one transaction; returns the join's position.
    pub async fn persist_remote_join(&self, room: JoinedRoom) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        Self::insert_room(&mut tx, &room.room_id, &room.version, &room.creator).await?;
        // A row made by an earlier invite holds what the inviting server claimed; the join's
        // checked create event decides.
        sqlx::query("UPDATE rooms SET room_version = $2, creator = $3 WHERE room_id = $1")
            .bind(&room.room_id)
            .bind(&room.version)
            .bind(&room.creator)
            .execute(&mut *tx)
            .await?;
        Self::persist_new_outliers(&mut tx, &room.outliers).await?;
        let entries: super::StateMap = room
            .state
            .iter()
            .map(|(kind, key, id, _)| ((kind.clone(), key.clone()), id.clone()))
            .collect();
        let group = Self::snapshot_state_group(&mut tx, &room.room_id, &entries).await?;
        sqlx::query("DELETE FROM current_state_events WHERE room_id = $1")
            .bind(&room.room_id)
            .execute(&mut *tx)
            .await?;
        for (kind, key, id, membership) in &room.state {
            sqlx::query(
                "INSERT INTO current_state_events (room_id, event_type, state_key, event_id, membership)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&room.room_id)
            .bind(kind)
            .bind(key)
            .bind(id)
            .bind(membership.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        // The join is the room's only head here (its prev events are the resident's).
        sqlx::query("DELETE FROM event_forward_extremities WHERE room_id = $1")
            .bind(&room.room_id)
            .execute(&mut *tx)
            .await?;
        let mut join = room.join;
        join.state_before = Some(group);
        let persisted = Self::persist_event(&mut tx, &join).await?;
        if let Some(partial) = &room.partial {
            Self::mark_partial_state(&mut tx, partial).await?;
        } else {
            // A join with the whole state (again, after leaving) ends any partial state.
            sqlx::query("DELETE FROM partial_state_rooms WHERE room_id = $1")
                .bind(&room.room_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(persisted.position)
    }
}

impl Storage {
    /// A membership of a local user in a room we are not in (an invite from another server,
    /// or the rejection of one): the event is stored in our timeline and is the user's
    /// membership, nothing else of the room changes. `invite_state`: the stripped state
    /// that came with an invite (JSON), shown with it. Returns the event's position.
    pub async fn persist_remote_membership(
        &self,
        version: &str,
        event: &super::NewEvent,
        invite_state: Option<&str>,
    ) -> Result<i64, StorageError> {
        let user_id = event
            .state_key
            .as_deref()
            .ok_or(StorageError::Invariant("a membership event has a state key"))?;
        let mut tx = self.begin_write().await?;
        Self::insert_room(&mut tx, &event.room_id, version, &event.sender).await?;
        let persisted = Self::persist_event(&mut tx, event).await?;
        sqlx::query(
            "INSERT INTO current_state_events (room_id, event_type, state_key, event_id, membership)
             VALUES ($1, 'm.room.member', $2, $3, $4)
             ON CONFLICT (room_id, event_type, state_key)
             DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership",
        )
        .bind(&event.room_id)
        .bind(user_id)
        .bind(&event.event_id)
        .bind(event.membership.as_deref())
        .execute(&mut *tx)
        .await?;
        match invite_state {
            Some(events) => {
                sqlx::query(
                    "INSERT INTO remote_invite_state (room_id, user_id, events) VALUES ($1, $2, $3)
                     ON CONFLICT (room_id, user_id) DO UPDATE SET events = excluded.events",
                )
                .bind(&event.room_id)
                .bind(user_id)
                .bind(events)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM remote_invite_state WHERE room_id = $1 AND user_id = $2")
                    .bind(&event.room_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(persisted.position)
    }

    /// The stripped state a remote invite brought (JSON array), if any.
    pub async fn remote_invite_state(&self, room_id: &str, user_id: &str) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT events FROM remote_invite_state WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

impl Storage {
    /// The oldest events of the room's history here (timeline and backfilled), oldest first:
    /// where backfill continues from.
    pub async fn oldest_history_events(&self, room_id: &str, limit: i64) -> Result<Vec<EventRow>, StorageError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = $1 AND (stream_ordering > 0 OR backfilled = 1) AND rejected_reason IS NULL
             ORDER BY stream_ordering ASC LIMIT $2"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Which of `event_ids` are in a room's history here (timeline or backfilled), rejected
    /// ones included (they are not fetched again).
    pub async fn history_event_ids(&self, event_ids: &[String]) -> Result<HashSet<String>, StorageError> {
        let mut found = HashSet::new();
        for chunk in event_ids.chunks(1000) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT event_id FROM events WHERE (stream_ordering > 0 OR backfilled = 1) AND event_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            let rows: Vec<String> = query.fetch_all(&self.pool).await?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// Writes a batch of backfilled history in one transaction: `outliers` (auth events it
    /// needed) first, then `history`, newest first, each at the next (more negative) position,
    /// so older events sort before newer ones. An event we hold already as an outlier (the
    /// state a join brought) joins the history at its place; one in the history is skipped.
    /// Returns how many events entered the history.
    pub async fn persist_backfill(
        &self,
        outliers: &[super::NewEvent],
        history: &[super::NewEvent],
    ) -> Result<usize, StorageError> {
        let mut tx = self.begin_write().await?;
        for event in outliers {
            let known: Option<i64> = sqlx::query_scalar("SELECT stream_ordering FROM events WHERE event_id = $1")
                .bind(&event.event_id)
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_none() {
                Self::persist_event(&mut tx, event).await?;
            }
        }
        let mut added = 0;
        for event in history {
            let known: Option<(i64, i64, Option<String>)> =
                sqlx::query_as("SELECT stream_ordering, backfilled, rejected_reason FROM events WHERE event_id = $1")
                    .bind(&event.event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match known {
                None => {
                    Self::persist_event(&mut tx, event).await?;
                    added += 1;
                }
                // An outlier (no state group: not a soft-failed event) moves into the history.
                Some((position, 0, None)) if position < 0 => {
                    let in_state: Option<i64> =
                        sqlx::query_scalar("SELECT state_group FROM event_state_groups WHERE event_id = $1")
                            .bind(&event.event_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if in_state.is_some() {
                        continue;
                    }
                    let position = -Self::next_stream_position(&mut tx, "outliers").await?;
                    sqlx::query("UPDATE events SET stream_ordering = $2, backfilled = 1 WHERE event_id = $1")
                        .bind(&event.event_id)
                        .bind(position)
                        .execute(&mut *tx)
                        .await?;
                    for prev in &event.prev_events {
                        sqlx::query(
                            "INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        )
                        .bind(&event.event_id)
                        .bind(prev)
                        .execute(&mut *tx)
                        .await?;
                    }
                    added += 1;
                }
                Some(_) => {}
            }
        }
        tx.commit().await?;
        Ok(added)
    }
}
