//! What `/sync` reads beyond rooms and state: stream positions, filters, receipts, presence,
//! the user's memberships and room summaries.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, FromRow};

use super::{
    Storage, StorageError,
    rooms::{EVENT_COLUMNS, EventRow},
};

/// A user's current membership in one room, with the event that set it.
#[derive(Debug, Clone, FromRow)]
pub struct MembershipRow {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct ReceiptRow {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

/// A receipt to store.
/// (room, receipt type, user, thread, event sender): what identifies a receipt row.
type ReceiptKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn receipt_key<'a>(receipt: &NewReceipt<'a>) -> ReceiptKey<'a> {
    (
        receipt.room_id,
        receipt.receipt_type,
        receipt.user_id,
        receipt.thread_id,
        receipt.event_sender,
    )
}

/// Rows per multi-row receipt upsert (9 parameters each; both databases take far more).
const RECEIPTS_PER_STATEMENT: usize = 500;

pub struct NewReceipt<'a> {
    pub room_id: &'a str,
    pub receipt_type: &'a str,
    pub user_id: &'a str,
    pub thread_id: &'a str,
    /// For delivery receipts: the sender of the receipted event ('' otherwise).
    pub event_sender: &'a str,
    pub event_id: &'a str,
    pub event_stream_ordering: i64,
    pub ts: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub currently_active: i64,
    pub stream_position: i64,
}

/// Joined and invited member counts and up to five other members, for a room's summary.
#[derive(Debug, Clone, Default)]
pub struct RoomSummary {
    pub joined: i64,
    pub invited: i64,
    pub heroes: Vec<String>,
}

/// Restricts a query to rooms the viewer (`$1`) has a membership in.
const VIEWER_MEMBER: &str = "JOIN current_state_events viewer ON viewer.room_id = {room} \
     AND viewer.event_type = 'm.room.member' AND viewer.state_key = $1 AND viewer.membership IS NOT NULL";

fn viewer_member(room_column: &str) -> String {
    VIEWER_MEMBER.replace("{room}", room_column)
}

/// A room in a user's sliding-sync room list, with its activity.
#[derive(Debug, Clone, FromRow)]
pub struct RoomActivity {
    pub room_id: String,
    pub membership: String,
    pub membership_event_id: String,
    pub membership_ordering: i64,
    pub membership_sender: String,
    /// The room's newest event (up to the bound asked for).
    pub last_ordering: Option<i64>,
    /// The newest event of the kinds that bump a room in the list (messages, not reactions).
    pub bump_ordering: Option<i64>,
}

impl Storage {
    /// Stores a filter and returns its ID (counting up per user). Two uploads racing for the
    /// same ID: the loser takes the next.
    pub async fn create_filter(&self, user_id: &str, json: &str) -> Result<i64, StorageError> {
        let mut attempt = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
            let inserted = sqlx::query(
                "INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(id)
            .bind(json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            attempt += 1;
            if inserted == 1 {
                return Ok(id);
            }
            if attempt == 10 {
                return Err(StorageError::Invariant("could not allocate a filter ID"));
            }
        }
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id)
                .bind(filter_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every room the user has a membership in and has not forgotten, with the membership
    /// event's position.
    pub async fn user_memberships(&self, user_id: &str) -> Result<Vec<MembershipRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT c.room_id, c.membership, c.event_id, e.stream_ordering
             FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.event_type = 'm.room.member' AND c.state_key = $1 AND c.membership IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f
                               WHERE f.user_id = $1 AND f.room_id = c.room_id AND f.membership_event_id = c.event_id)",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The rooms the user has any membership in that have events in (`after`, `until`]. The
    /// caller keeps those the user was joined to at its token: a kick after it must not hide
    /// what came before.
    pub async fn member_rooms_with_events(
        &self,
        user_id: &str,
        after: i64,
        until: i64,
    ) -> Result<Vec<String>, StorageError> {
        let sql = format!(
            "SELECT DISTINCT e.room_id FROM events e {}
             WHERE e.stream_ordering > $2 AND e.stream_ordering <= $3",
            viewer_member("e.room_id")
        );
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after)
            .bind(until)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The newest `limit` events of a room in (`after`, `until`], newest first.
    pub async fn latest_room_events(
        &self,
        room_id: &str,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StorageError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 AND rejected_reason IS NULL
             ORDER BY stream_ordering DESC LIMIT $4"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(until)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every room the user has a membership in, with the position of its newest event and of
    /// its newest "proper" activity (both at most `until`).
    pub async fn room_activity(&self, user_id: &str, until: i64) -> Result<Vec<RoomActivity>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT c.room_id, c.membership, c.event_id AS membership_event_id,
                    e.stream_ordering AS membership_ordering, e.sender AS membership_sender,
                    (SELECT MAX(x.stream_ordering) FROM events x
                     WHERE x.room_id = c.room_id AND x.stream_ordering <= $2) AS last_ordering,
                    (SELECT MAX(x.stream_ordering) FROM events x
                     WHERE x.room_id = c.room_id AND x.stream_ordering <= $2
                       AND x.event_type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker',
                                            'm.call.invite', 'm.poll.start', 'm.beacon_info')) AS bump_ordering
             FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.event_type = 'm.room.member' AND c.state_key = $1 AND c.membership IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f
                               WHERE f.user_id = $1 AND f.room_id = c.room_id AND f.membership_event_id = c.event_id)",
        )
        .bind(user_id)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Joined and invited counts and the first five other joined or invited members.
    pub async fn room_summary(&self, room_id: &str, viewer: &str) -> Result<RoomSummary, StorageError> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT membership, COUNT(*) FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership IN ('join', 'invite')
             GROUP BY membership",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        let heroes = sqlx::query_scalar(
            "SELECT state_key FROM current_state_events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership IN ('join', 'invite')
               AND state_key <> $2
             ORDER BY state_key LIMIT 5",
        )
        .bind(room_id)
        .bind(viewer)
        .fetch_all(&self.pool)
        .await?;
        let count = |m: &str| counts.iter().find(|(kind, _)| kind == m).map_or(0, |(_, n)| *n);
        Ok(RoomSummary {
            joined: count("join"),
            invited: count("invite"),
            heroes,
        })
    }

    /// Stores a receipt unless the user already has one of this kind on a later event.
    /// Returns the new position on the `receipts` stream, or `None` when nothing changed.
    pub async fn upsert_receipt(&self, receipt: &NewReceipt<'_>) -> Result<Option<i64>, StorageError> {
        Ok(self
            .upsert_receipts(std::slice::from_ref(receipt))
            .await?
            .pop()
            .flatten())
    }

    /// Stores many receipts in one transaction, each unless the user already has one of its
    /// kind on a later event; returns each one's new position (`None`: unchanged).
    ///
    /// A batch (a flush of delivery receipts: hundreds) costs three statements per thousand
    /// receipts, not three per receipt: positions are reserved as one block, and the rows go
    /// in one multi-row upsert that skips stale ones and returns those it wrote.
    pub async fn upsert_receipts(&self, receipts: &[NewReceipt<'_>]) -> Result<Vec<Option<i64>>, StorageError> {
        let mut positions = vec![None; receipts.len()];
        // One row per key, the newest event winning: a statement may not touch a row twice.
        let mut newest: HashMap<ReceiptKey<'_>, usize> = HashMap::new();
        for (index, receipt) in receipts.iter().enumerate() {
            let slot = newest.entry(receipt_key(receipt)).or_insert(index);
            if receipts[*slot].event_stream_ordering < receipt.event_stream_ordering {
                *slot = index;
            }
        }
        let mut chosen: Vec<usize> = newest.values().copied().collect();
        chosen.sort_unstable();
        if chosen.is_empty() {
            return Ok(positions);
        }
        let mut tx = self.begin_write().await?;
        // Taking the counter first also makes concurrent writers of receipts take turns, so
        // each upsert's "is it newer" test sees the latest rows. Positions of receipts left
        // unchanged become gaps, which no reader minds: streams are read as ranges.
        let count = i64::try_from(chosen.len()).map_err(|_| StorageError::Invariant("too many receipts"))?;
        let last = Self::reserve_stream_positions(&mut tx, "receipts", count).await?;
        let first = last - count + 1;
        let mut changed = false;
        for (chunk_index, chunk) in chosen.chunks(RECEIPTS_PER_STATEMENT).enumerate() {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let columns: Vec<String> = (1..=9).map(|column| format!("${}", row * 9 + column)).collect();
                    format!("({})", columns.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_sender, event_id,
                                       event_stream_ordering, ts, stream_position)
                 VALUES {}
                 ON CONFLICT (room_id, receipt_type, user_id, thread_id, event_sender)
                 DO UPDATE SET event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering,
                               ts = excluded.ts, stream_position = excluded.stream_position
                 WHERE receipts.event_stream_ordering < excluded.event_stream_ordering
                 RETURNING room_id, receipt_type, user_id, thread_id, event_sender, stream_position",
                rows.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String, String, String, String, String, i64)>(AssertSqlSafe(sql));
            for (offset, &index) in chunk.iter().enumerate() {
                let receipt = &receipts[index];
                let position = first + i64::try_from(chunk_index * RECEIPTS_PER_STATEMENT + offset).unwrap_or(0);
                query = query
                    .bind(receipt.room_id)
                    .bind(receipt.receipt_type)
                    .bind(receipt.user_id)
                    .bind(receipt.thread_id)
                    .bind(receipt.event_sender)
                    .bind(receipt.event_id)
                    .bind(receipt.event_stream_ordering)
                    .bind(receipt.ts)
                    .bind(position);
            }
            for (room_id, receipt_type, user_id, thread_id, event_sender, position) in query.fetch_all(&mut *tx).await?
            {
                let key = (
                    room_id.as_str(),
                    receipt_type.as_str(),
                    user_id.as_str(),
                    thread_id.as_str(),
                    event_sender.as_str(),
                );
                if let Some(&index) = newest.get(&key) {
                    positions[index] = Some(position);
                    changed = true;
                }
            }
        }
        if changed {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(positions)
    }

    /// Receipts in rooms the viewer has a membership in (the caller keeps those it was joined to at
    /// its token), changed in (`after`, `until`]: private receipts
    /// only the viewer's own, delivery receipts only on the viewer's own events.
    pub async fn receipts_since(&self, viewer: &str, after: i64, until: i64) -> Result<Vec<ReceiptRow>, StorageError> {
        let sql = format!(
            "SELECT r.room_id, r.receipt_type, r.user_id, r.thread_id, r.event_id, r.ts FROM receipts r {}
             WHERE r.stream_position > $2 AND r.stream_position <= $3
               AND (r.receipt_type <> 'm.read.private' OR r.user_id = $1)
               AND (r.receipt_type <> 'io.hearth.delivered' OR r.event_sender = $1)
             ORDER BY r.stream_position",
            viewer_member("r.room_id")
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(viewer)
            .bind(after)
            .bind(until)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Rooms where the user moved their own read receipt (`m.read` or `m.read.private`) in
    /// (`after`, `until`]: their unread counts there changed.
    pub async fn rooms_read_since(&self, user_id: &str, after: i64, until: i64) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT room_id FROM receipts
             WHERE stream_position > $2 AND stream_position <= $3 AND user_id = $1
               AND receipt_type IN ('m.read', 'm.read.private') AND event_sender = ''",
        )
        .bind(user_id)
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The user's latest receipt of a kind in a room (any thread).
    pub async fn own_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<ReceiptRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a presence change at a new position on the `presence` stream.
    pub async fn set_presence(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
        currently_active: bool,
    ) -> Result<i64, StorageError> {
        let mut tx = self.begin_write().await?;
        let position = Self::next_stream_position(&mut tx, "presence").await?;
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_position)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
                 last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
                 stream_position = excluded.stream_position",
        )
        .bind(user_id)
        .bind(state)
        .bind(status_msg)
        .bind(last_active_ts)
        .bind(i64::from(currently_active))
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    pub async fn presence(&self, user_id: &str) -> Result<Option<PresenceRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_position
             FROM presence WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The stored presence of each of these users who has one.
    pub async fn presence_of(&self, user_ids: &[&str]) -> Result<Vec<PresenceRow>, StorageError> {
        let mut rows = Vec::new();
        for chunk in user_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_position
                 FROM presence WHERE user_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// Every stored presence that is not offline (for the timers that age it after a restart).
    pub async fn presence_not_offline(&self) -> Result<Vec<PresenceRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_position
             FROM presence WHERE state <> 'offline'",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Presence changed in (`after`, `until`] of the viewer and of users sharing a joined room
    /// with the viewer.
    pub async fn presence_since(&self, viewer: &str, after: i64, until: i64) -> Result<Vec<PresenceRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.currently_active, p.stream_position
             FROM presence p
             WHERE p.stream_position > $2 AND p.stream_position <= $3
               AND (p.user_id = $1 OR EXISTS (
                   SELECT 1 FROM current_state_events mine JOIN current_state_events theirs
                       ON theirs.room_id = mine.room_id AND theirs.event_type = 'm.room.member'
                   WHERE mine.event_type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
                     AND theirs.state_key = p.user_id AND theirs.membership = 'join'))
             ORDER BY p.stream_position",
        )
        .bind(viewer)
        .bind(after)
        .bind(until)
        .fetch_all(&self.pool)
        .await?)
    }

    /// True when the two users are both joined to some room.
    pub async fn share_a_room(&self, a: &str, b: &str) -> Result<bool, StorageError> {
        let shared: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM current_state_events mine JOIN current_state_events theirs
                 ON theirs.room_id = mine.room_id AND theirs.event_type = 'm.room.member'
             WHERE mine.event_type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'
               AND theirs.state_key = $2 AND theirs.membership = 'join'
             LIMIT 1",
        )
        .bind(a)
        .bind(b)
        .fetch_optional(&self.pool)
        .await?;
        Ok(shared.is_some())
    }
}
