//! Push notifications: the actions push rules gave each member for each event
//! (`event_push_actions`), unread counts read from them against read receipts, the evaluator's
//! progress, and pushers.

use sqlx::{AssertSqlSafe, FromRow};

use super::{Storage, StorageError, Tx, rooms::prefixed_event_columns};
use crate::storage::EventRow;

/// Bind parameters per `IN (...)` list at most (far below either database's limit).
const IN_CHUNK: usize = 500;

/// Push action rows per multi-row INSERT (8 parameters each).
const ACTION_ROWS_PER_INSERT: usize = 100;

/// What a member's push rules said about an event: it notifies.
#[derive(Debug, Clone)]
pub struct NewPushAction {
    pub user_id: String,
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
    pub thread_id: String,
    pub actions: String,
    pub highlight: bool,
    pub ts: i64,
}

/// A notification of one user (for `/notifications` and pushers).
#[derive(Debug, Clone)]
pub struct PushActionRow {
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
    pub thread_id: String,
    pub actions: String,
    pub highlight: i64,
    pub ts: i64,
}

#[derive(FromRow)]
struct NotificationRow {
    stream_ordering: i64,
    room_id: String,
    event_id: String,
    thread_id: String,
    actions: String,
    highlight: i64,
    ts: i64,
    is_read: i64,
}

/// Unread notifications of one user in one room and thread, after their read receipts.
#[derive(Debug, Clone)]
pub struct UnreadCount {
    pub room_id: String,
    pub thread_id: String,
    pub notifications: i64,
    pub highlights: i64,
}

/// A pusher as stored.
#[derive(Debug, Clone, FromRow)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub device_id: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    pub data: String,
    pub created_ts: i64,
    pub last_stream_ordering: i64,
    pub failing_since: Option<i64>,
}

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name, \
                              profile_tag, lang, data, created_ts, last_stream_ordering, failing_since";

/// The user's latest `m.read` or `m.read.private` receipt in the room (`a` is the push action
/// row), unthreaded or in the action's thread. Receipts store `main` for the main timeline and
/// `""` for unthreaded receipts. NULL when there is none.
const RECEIPT_AT: &str = "(SELECT MAX(r.event_stream_ordering) FROM receipts r
     WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.event_sender = ''
       AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', a.thread_id))";

/// Where the user last joined the room (not counting profile changes): without a receipt,
/// what came before it is not unread (as Synapse counts; an invite is not an unread message).
const JOINED_AT: &str = "(SELECT j.stream_ordering FROM push_room_joins j
     WHERE j.user_id = a.user_id AND j.room_id = a.room_id)";

/// What counts as read for unread counts and `/notifications`.
fn read_up_to() -> String {
    format!("COALESCE({RECEIPT_AT}, {JOINED_AT}, 0)")
}

/// What counts as read for pushers: only receipts (an invite is pushed).
fn receipt_up_to() -> String {
    format!("COALESCE({RECEIPT_AT}, 0)")
}

impl Storage {
    /// How far push evaluation has got on the events stream.
    pub async fn push_evaluated(&self) -> Result<i64, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM push_progress WHERE name = 'evaluated'")
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }

    /// Events after `after`, up to `until`, oldest first, at most `limit` (for evaluation).
    /// Rejected events are never evaluated (nor are outliers and soft-failed events, whose
    /// positions are negative).
    pub async fn events_in_range(&self, after: i64, until: i64, limit: i64) -> Result<Vec<EventRow>, StorageError> {
        let sql = format!(
            "SELECT {} FROM events e WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2
               AND e.rejected_reason IS NULL
             ORDER BY e.stream_ordering LIMIT $3",
            prefixed_event_columns("e")
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(after)
            .bind(until)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Global account data of many users of the given types: (user, type, content).
    pub async fn account_data_of_users(
        &self,
        user_ids: &[&str],
        types: &[&str],
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        let mut rows = Vec::new();
        for chunk in user_ids.chunks(IN_CHUNK) {
            let type_params: Vec<String> = (1..=types.len()).map(|i| format!("${i}")).collect();
            let user_params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", types.len() + 1 + i)).collect();
            let sql = format!(
                "SELECT user_id, data_type, content FROM account_data
                 WHERE room_id = '' AND data_type IN ({}) AND user_id IN ({})",
                type_params.join(", "),
                user_params.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(sql));
            for kind in types {
                query = query.bind(*kind);
            }
            for user in chunk {
                query = query.bind(*user);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// Stores the actions of a batch of events and the joins in it, and moves the evaluator's
    /// progress to `evaluated`, in one transaction (so a restart evaluates each event exactly
    /// once).
    pub async fn store_push_actions(
        &self,
        actions: &[NewPushAction],
        joins: &[(String, String, i64)],
        evaluated: i64,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        for (user_id, room_id, position) in joins {
            sqlx::query(
                "INSERT INTO push_room_joins (user_id, room_id, stream_ordering) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
            )
            .bind(user_id)
            .bind(room_id)
            .bind(position)
            .execute(&mut *tx)
            .await?;
        }
        // Many rows per statement: a message in a 500-member room is hundreds of rows.
        for chunk in actions.chunks(ACTION_ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = i * 8;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7,
                        p + 8
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO event_push_actions
                 (user_id, stream_ordering, room_id, event_id, thread_id, actions, highlight, ts)
                 VALUES {} ON CONFLICT (user_id, stream_ordering) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for action in chunk {
                query = query
                    .bind(&action.user_id)
                    .bind(action.stream_ordering)
                    .bind(&action.room_id)
                    .bind(&action.event_id)
                    .bind(&action.thread_id)
                    .bind(&action.actions)
                    .bind(i64::from(action.highlight))
                    .bind(action.ts);
            }
            query.execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE push_progress SET position = $1 WHERE name = 'evaluated' AND position < $1")
            .bind(evaluated)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user's unread notifications per room and thread (rooms with none are left out),
    /// in the given rooms, or all rooms when `rooms` is None.
    pub async fn unread_counts(&self, user_id: &str, rooms: Option<&[&str]>) -> Result<Vec<UnreadCount>, StorageError> {
        let chunks: Vec<Option<&[&str]>> = match rooms {
            Some(rooms) => rooms.chunks(IN_CHUNK).map(Some).collect(),
            None => vec![None],
        };
        let mut counts = Vec::new();
        for chunk in chunks {
            let room_filter = match chunk {
                Some(rooms) => {
                    let params: Vec<String> = (0..rooms.len()).map(|i| format!("${}", i + 2)).collect();
                    format!("AND room_id IN ({})", params.join(", "))
                }
                None => String::new(),
            };
            // The read position is worked out once per (room, thread) the user has rows in,
            // then the rows after it are counted along the index (not the position per row).
            let read = read_up_to()
                .replace("a.room_id", "g.room_id")
                .replace("a.user_id", "g.user_id")
                .replace("a.thread_id", "g.thread_id");
            let sql = format!(
                "SELECT g.room_id, g.thread_id, COUNT(*), CAST(SUM(a.highlight) AS BIGINT)
                 FROM (SELECT DISTINCT user_id, room_id, thread_id FROM event_push_actions
                       WHERE user_id = $1 {room_filter}) g
                 JOIN event_push_actions a
                   ON a.user_id = g.user_id AND a.room_id = g.room_id AND a.thread_id = g.thread_id
                  AND a.stream_ordering > {read}
                 GROUP BY g.room_id, g.thread_id"
            );
            let mut query = sqlx::query_as::<_, (String, String, i64, Option<i64>)>(AssertSqlSafe(sql)).bind(user_id);
            for room in chunk.unwrap_or(&[]) {
                query = query.bind(*room);
            }
            for (room_id, thread_id, notifications, highlights) in query.fetch_all(&self.pool).await? {
                counts.push(UnreadCount {
                    room_id,
                    thread_id,
                    notifications,
                    highlights: highlights.unwrap_or(0),
                });
            }
        }
        Ok(counts)
    }

    /// A page of the user's notifications, newest first, before `before` (exclusive), with
    /// whether each is read (a read receipt at or past it).
    pub async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<(PushActionRow, bool)>, StorageError> {
        let condition = if only_highlight {
            "a.stream_ordering < $2 AND a.highlight = 1 ORDER BY a.stream_ordering DESC"
        } else {
            "a.stream_ordering < $2 ORDER BY a.stream_ordering DESC"
        };
        self.notification_page(user_id, &read_up_to(), condition, before.unwrap_or(i64::MAX), limit)
            .await
    }

    async fn notification_page(
        &self,
        user_id: &str,
        read: &str,
        condition: &str,
        bound: i64,
        limit: i64,
    ) -> Result<Vec<(PushActionRow, bool)>, StorageError> {
        let sql = format!(
            "SELECT a.stream_ordering, a.room_id, a.event_id, a.thread_id, a.actions, a.highlight, a.ts,
                    CAST(CASE WHEN a.stream_ordering <= {read} THEN 1 ELSE 0 END AS BIGINT) AS is_read
             FROM event_push_actions a
             WHERE a.user_id = $1 AND {condition} LIMIT $3"
        );
        let rows: Vec<NotificationRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(bound)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let read = row.is_read != 0;
                let row = PushActionRow {
                    stream_ordering: row.stream_ordering,
                    room_id: row.room_id,
                    event_id: row.event_id,
                    thread_id: row.thread_id,
                    actions: row.actions,
                    highlight: row.highlight,
                    ts: row.ts,
                };
                (row, read)
            })
            .collect())
    }

    /// The user's notifications after `after`, oldest first, with whether each is read (what
    /// a pusher has still to send).
    pub async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(PushActionRow, bool)>, StorageError> {
        let condition = "a.stream_ordering > $2 ORDER BY a.stream_ordering";
        self.notification_page(user_id, &receipt_up_to(), condition, after, limit)
            .await
    }

    /// Every pusher of the user, or of every user when `user_id` is None.
    pub async fn pushers(&self, user_id: Option<&str>) -> Result<Vec<PusherRow>, StorageError> {
        let rows = match user_id {
            Some(user_id) => {
                let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts");
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers");
                sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.pool).await?
            }
        };
        Ok(rows)
    }

    /// One pusher.
    pub async fn pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<Option<PusherRow>, StorageError> {
        let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Creates or updates a pusher. Unless `append`, pushers of other users with the same app
    /// ID and pushkey are removed (the spec: a pushkey belongs to one user at a time).
    /// Returns the pushers removed that way, as (user, app ID, pushkey).
    pub async fn set_pusher(
        &self,
        pusher: &PusherRow,
        append: bool,
    ) -> Result<Vec<(String, String, String)>, StorageError> {
        let mut tx = self.begin_write().await?;
        let mut removed = Vec::new();
        if !append {
            removed = sqlx::query_as(
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3
                 RETURNING user_id, app_id, pushkey",
            )
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .bind(&pusher.user_id)
            .fetch_all(&mut *tx)
            .await?;
        }
        // An update keeps the pusher's place in the notification stream.
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name,
                                  profile_tag, lang, data, created_ts, last_stream_ordering, failing_since)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET
                device_id = excluded.device_id, kind = excluded.kind, app_display_name = excluded.app_display_name,
                device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,
                lang = excluded.lang, data = excluded.data, failing_since = NULL",
        )
        .bind(&pusher.user_id)
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .bind(&pusher.device_id)
        .bind(&pusher.kind)
        .bind(&pusher.app_display_name)
        .bind(&pusher.device_display_name)
        .bind(&pusher.profile_tag)
        .bind(&pusher.lang)
        .bind(&pusher.data)
        .bind(pusher.created_ts)
        .bind(pusher.last_stream_ordering)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Deletes a pusher; true if there was one.
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool, StorageError> {
        let result = self
            .write(
                sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                    .bind(user_id)
                    .bind(app_id)
                    .bind(pushkey),
            )
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Records a pusher's progress: delivered (or given up on) up to `last_stream_ordering`,
    /// failing since `failing_since` (None: healthy).
    pub async fn update_pusher_progress(
        &self,
        pusher: &PusherRow,
        last_stream_ordering: i64,
        failing_since: Option<i64>,
    ) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "UPDATE pushers SET last_stream_ordering = $1, failing_since = $2
             WHERE user_id = $3 AND app_id = $4 AND pushkey = $5 AND last_stream_ordering <= $1",
            )
            .bind(last_stream_ordering)
            .bind(failing_since)
            .bind(&pusher.user_id)
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey),
        )
        .await?;
        Ok(())
    }

    /// Deletes notifications older than `before` (ms); returns how many.
    pub async fn prune_push_actions(&self, before: i64) -> Result<u64, StorageError> {
        let result = self
            .write(sqlx::query("DELETE FROM event_push_actions WHERE ts < $1").bind(before))
            .await?;
        Ok(result.rows_affected())
    }

    /// Records when the pusher's deliveries started failing (None: they succeed again).
    pub async fn set_pusher_failing_since(&self, pusher: &PusherRow, since: Option<i64>) -> Result<(), StorageError> {
        self.write(
            sqlx::query("UPDATE pushers SET failing_since = $1 WHERE user_id = $2 AND app_id = $3 AND pushkey = $4")
                .bind(since)
                .bind(&pusher.user_id)
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey),
        )
        .await?;
        Ok(())
    }

    /// Deletes the pushers of a device going away (inside the deletion's transaction);
    /// `device_id` None means every device of the user except `keep`.
    pub(super) async fn delete_device_pushers(
        tx: &mut Tx,
        user_id: &str,
        device_id: Option<&str>,
        keep: Option<&str>,
    ) -> Result<(), StorageError> {
        let query = match (device_id, keep) {
            (Some(device), _) => sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device),
            (None, Some(keep)) => sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id <> $2")
                .bind(user_id)
                .bind(keep),
            (None, None) => sqlx::query("DELETE FROM pushers WHERE user_id = $1").bind(user_id),
        };
        query.execute(&mut **tx).await?;
        Ok(())
    }
}
