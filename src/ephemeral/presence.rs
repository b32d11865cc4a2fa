//! Presence: `online` while a user syncs or acts, `unavailable` after `idle_timeout_secs`
//! without activity, `offline` once syncing stops for `offline_timeout_secs`, or whatever
//! the user set. The timers run in memory; every change is stored on the `presence` stream
//! and wakes the user's rooms. Only changes of state or status are written, plus the last
//! active time at most once a minute, never one write per sync.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::streams::Stream;
use crate::{
    base::Base,
    storage::{PresenceRow, StorageError, now_ms},
};

/// How stale a stored `last_active_ts` may get before activity rewrites it.
const LAST_ACTIVE_GRANULARITY_MS: i64 = 60_000;
/// Activity within this long counts as `currently_active`.
const CURRENTLY_ACTIVE_MS: i64 = 60_000;

#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<OwnedUserId, Tracked>>,
}

#[derive(Clone)]
struct Tracked {
    state: String,
    status_msg: Option<String>,
    last_active_ts: i64,
    currently_active: bool,
    /// The last sync request's start or end.
    last_sync: Instant,
    /// Sync requests in flight: while one is open, the user is syncing.
    syncing: u32,
    /// The `set_presence` of the latest sync: a client that says `unavailable` stays so while
    /// its user acts.
    requested: String,
}

/// Held for the duration of a sync request; dropping it records the time syncing stopped.
pub struct SyncGuard {
    presence: Arc<Presence>,
    user_id: OwnedUserId,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let mut users = self
            .presence
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tracked) = users.get_mut(&self.user_id) {
            tracked.syncing = tracked.syncing.saturating_sub(1);
            tracked.last_sync = Instant::now();
        }
    }
}

/// What a change to write looks like.
struct Change {
    state: String,
    status_msg: Option<String>,
    last_active_ts: i64,
    currently_active: bool,
}

impl Presence {
    /// Picks up users stored as present, so a restart ages them out instead of leaving them
    /// online for ever.
    pub async fn restore(&self, state: &Base) -> Result<(), StorageError> {
        let rows = state.storage.presence_not_offline().await?;
        let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for row in rows {
            if let Ok(user_id) = OwnedUserId::try_from(row.user_id.as_str()) {
                // Other servers' users are aged by their servers, not here.
                if user_id.server_name() != state.config.server_name {
                    continue;
                }
                users.insert(user_id, tracked_from(&row));
            }
        }
        Ok(())
    }

    /// A sync request started with `set_presence` (`online`, `unavailable`, or `offline`, which
    /// leaves presence alone).
    pub async fn syncing(
        self: &Arc<Self>,
        state: &Base,
        user_id: &UserId,
        set_presence: &str,
    ) -> Result<Option<SyncGuard>, StorageError> {
        if !state.config.presence.enabled || set_presence == "offline" {
            return Ok(None);
        }
        // Users not tracked in memory (offline, or unseen since a restart) start from what is
        // stored, so their status message survives a reconnect.
        let known = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(user_id);
        let stored = if known {
            None
        } else {
            state.storage.presence(user_id.as_str()).await?
        };
        let change = {
            let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = now_ms();
            let tracked = users
                .entry(user_id.to_owned())
                .or_insert_with(|| stored.as_ref().map_or_else(Tracked::offline, tracked_from));
            tracked.syncing += 1;
            tracked.requested = set_presence.to_owned();
            tracked.last_sync = Instant::now();
            // As Synapse: syncing brings an offline user online (and counts as activity), and
            // `unavailable` marks them idle; it never overrides idleness the timers found.
            let moves = match set_presence {
                "online" => tracked.state == "offline",
                _ => tracked.state != set_presence,
            };
            moves.then(|| {
                let last_active_ts = if set_presence == "online" {
                    now
                } else {
                    tracked.last_active_ts
                };
                Change {
                    state: set_presence.to_owned(),
                    status_msg: tracked.status_msg.clone(),
                    last_active_ts,
                    currently_active: set_presence == "online",
                }
            })
        };
        if let Some(change) = change {
            self.write(state, user_id, change).await?;
        }
        Ok(Some(SyncGuard {
            presence: Arc::clone(self),
            user_id: user_id.to_owned(),
        }))
    }

    /// The user did something (sent an event, a receipt, typed): they are online and active.
    pub async fn active(&self, state: &Base, user_id: &UserId) -> Result<(), StorageError> {
        if !state.config.presence.enabled {
            return Ok(());
        }
        let now = now_ms();
        let change = {
            let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(tracked) = users.get_mut(user_id) else {
                // Not syncing: a bot or script acting without a client. Nothing to show.
                return Ok(());
            };
            if tracked.state == "offline" {
                // Offline by choice or by no longer syncing: acting does not reveal them.
                return Ok(());
            }
            let stale = now - tracked.last_active_ts >= LAST_ACTIVE_GRANULARITY_MS;
            let state = if tracked.requested == "unavailable" {
                tracked.state.clone()
            } else {
                "online".to_owned()
            };
            (tracked.state != state || !tracked.currently_active || stale).then(|| Change {
                state,
                status_msg: tracked.status_msg.clone(),
                last_active_ts: now,
                currently_active: true,
            })
        };
        if let Some(change) = change {
            self.write(state, user_id, change).await?;
        }
        Ok(())
    }

    /// `PUT /presence/{userId}/status`.
    pub async fn set(
        &self,
        state: &Base,
        user_id: &UserId,
        presence: &str,
        status_msg: Option<String>,
    ) -> Result<(), StorageError> {
        let now = now_ms();
        let previous = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(user_id)
            .cloned();
        let (last_active_ts, currently_active) = match (presence, previous) {
            ("online", _) => (now, true),
            (_, Some(previous)) => (previous.last_active_ts, false),
            (_, None) => (now, false),
        };
        self.write(
            state,
            user_id,
            Change {
                state: presence.to_owned(),
                status_msg,
                last_active_ts,
                currently_active,
            },
        )
        .await
    }

    async fn write(&self, state: &Base, user_id: &UserId, change: Change) -> Result<(), StorageError> {
        self.write_if(state, user_id, change, None).await
    }

    /// Stores a change, unless `expected` is given and the user's state moved away from it
    /// in the meantime (a timer's decision must not undo activity that just happened).
    async fn write_if(
        &self,
        state: &Base,
        user_id: &UserId,
        change: Change,
        expected: Option<&str>,
    ) -> Result<(), StorageError> {
        if let Some(expected) = expected {
            let users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if users.get(user_id).is_some_and(|tracked| tracked.state != expected) {
                return Ok(());
            }
        }
        let position = state
            .storage
            .set_presence(
                user_id.as_str(),
                &change.state,
                change.status_msg.as_deref(),
                change.last_active_ts,
                change.currently_active,
            )
            .await?;
        {
            let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let tracked = users.entry(user_id.to_owned()).or_insert_with(Tracked::offline);
            tracked.state = change.state;
            tracked.status_msg = change.status_msg;
            tracked.last_active_ts = change.last_active_ts;
            tracked.currently_active = change.currently_active;
        }
        // The position moves at once; waking the rooms' members follows (if looking them up
        // fails, the change still reaches everyone at their next wake).
        state.notifier.advance(Stream::Presence, position, [user_id.as_str()]);
        state.publish(crate::base::Change::Presence {
            user_id: user_id.as_str(),
        });
        let rooms = state.storage.rooms_with_membership(user_id.as_str(), "join").await?;
        state.notifier.wake(rooms.iter().map(String::as_str));
        Ok(())
    }

    /// The presence of another server's user, as their server sent it: stored and shown to
    /// the rooms they are in, never aged here (their server says when they go offline).
    pub async fn remote(
        &self,
        state: &Base,
        user_id: &UserId,
        presence: &str,
        status_msg: Option<&str>,
        last_active_ago: Option<i64>,
        currently_active: bool,
    ) -> Result<(), StorageError> {
        let last_active_ts = last_active_ago.map_or(0, |ago| now_ms() - ago.max(0));
        let position = state
            .storage
            .set_presence(user_id.as_str(), presence, status_msg, last_active_ts, currently_active)
            .await?;
        state.notifier.advance(Stream::Presence, position, [user_id.as_str()]);
        let rooms = state.storage.rooms_with_membership(user_id.as_str(), "join").await?;
        state.notifier.wake(rooms.iter().map(String::as_str));
        Ok(())
    }

    /// Ages everyone: idle users become `unavailable`, users who stopped syncing `offline`.
    pub async fn tick(&self, state: &Base) {
        let config = &state.config.presence;
        let idle_ms = i64::try_from(config.idle_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let offline_after = Duration::from_secs(config.offline_timeout_secs);
        let now = now_ms();
        let changes: Vec<(OwnedUserId, Change, String)> = {
            let mut users = self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut changes = Vec::new();
            users.retain(|user_id, tracked| {
                let gone = tracked.syncing == 0 && tracked.last_sync.elapsed() >= offline_after;
                let change = if gone && tracked.state != "offline" {
                    Some("offline")
                } else if tracked.state == "online" && now - tracked.last_active_ts >= idle_ms {
                    Some("unavailable")
                } else if tracked.currently_active && now - tracked.last_active_ts >= CURRENTLY_ACTIVE_MS {
                    Some(tracked.state.as_str())
                } else {
                    None
                };
                if let Some(new_state) = change {
                    changes.push((
                        user_id.clone(),
                        Change {
                            state: new_state.to_owned(),
                            status_msg: tracked.status_msg.clone(),
                            last_active_ts: tracked.last_active_ts,
                            currently_active: false,
                        },
                        tracked.state.clone(),
                    ));
                }
                // Users offline and not syncing need no timers.
                !(gone && tracked.state == "offline")
            });
            changes
        };
        for (user_id, change, expected) in changes {
            if let Err(error) = self.write_if(state, &user_id, change, Some(&expected)).await {
                tracing::warn!(%user_id, ?error, "could not age presence");
            }
        }
    }
}

impl Tracked {
    /// A user never seen online.
    fn offline() -> Self {
        Self {
            state: "offline".to_owned(),
            status_msg: None,
            last_active_ts: 0,
            currently_active: false,
            last_sync: Instant::now(),
            syncing: 0,
            requested: String::new(),
        }
    }
}

fn tracked_from(row: &PresenceRow) -> Tracked {
    Tracked {
        state: row.state.clone(),
        status_msg: row.status_msg.clone(),
        last_active_ts: row.last_active_ts,
        currently_active: row.currently_active != 0,
        last_sync: Instant::now(),
        syncing: 0,
        requested: String::new(),
    }
}

/// The `content` of an `m.presence` event (also the body of `GET /presence/{userId}/status`).
pub fn presence_content(row: &PresenceRow) -> Value {
    let mut content = json!({
        "presence": row.state,
        "currently_active": row.currently_active != 0,
    });
    if row.last_active_ts > 0 {
        content["last_active_ago"] = Value::from((now_ms() - row.last_active_ts).max(0));
    }
    if let Some(status) = &row.status_msg {
        content["status_msg"] = Value::from(status.as_str());
    }
    content
}
