//! Push notifications: each user's push rules (the `m.push_rules` global account data), their
//! evaluation for every event and member (see [`evaluate`]), the unread counts that follow
//! from it, and delivery to push gateways (see [`gateway`]).
//!
//! Evaluation runs after an event is persisted, in its own task, following the events stream;
//! readers that show counts wait (briefly) until it has caught up with what they show.

pub mod evaluate;
pub mod gateway;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::{UserId, push::Ruleset};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::{
    base::{Base, Change, Subscriber},
    error::{ApiError, ApiResult},
    storage::{Storage, StorageError, UnreadCount},
};

/// The account data type push rules are kept (and synced) as.
pub const PUSH_RULES: &str = "m.push_rules";
const IGNORED_USERS: &str = "m.ignored_user_list";

/// Users whose push rules are kept built; past it the cache starts again.
const MAX_CACHED_USERS: usize = 10_000;
/// Longest a reader waits for evaluation to catch up before showing counts as they are.
const EVALUATION_WAIT: Duration = Duration::from_secs(2);

/// What evaluation needs of one user: their rules and whom they ignore.
#[derive(Debug)]
pub struct UserPushData {
    pub rules: Ruleset,
    pub ignored: HashSet<String>,
}

/// The push service: caches, the evaluator's progress and the pushers' tasks.
pub struct Push {
    base: Base,
    users: Mutex<HashMap<String, Arc<UserPushData>>>,
    /// Bumped by every invalidation: a load that raced one is not cached.
    generation: AtomicU64,
    /// Rule edits are read-modify-write of one document: one at a time.
    edits: tokio::sync::Mutex<()>,
    /// Woken when events are written.
    events_written: Notify,
    /// The last event position evaluated.
    evaluated: watch::Sender<i64>,
    pub gateways: gateway::Gateways,
    evaluator: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Push {
    pub fn new(base: &Base) -> Self {
        Self {
            base: base.clone(),
            users: Mutex::default(),
            generation: AtomicU64::new(0),
            edits: tokio::sync::Mutex::default(),
            events_written: Notify::new(),
            evaluated: watch::Sender::new(0),
            gateways: gateway::Gateways::new(base, &base.config.push),
            evaluator: Mutex::default(),
        }
    }

    /// Starts the evaluator and the pushers (at server start).
    pub async fn start(self: &Arc<Self>) -> ApiResult<()> {
        let evaluated = self.base.storage.push_evaluated().await?;
        self.evaluated.send_replace(evaluated);
        let evaluator = tokio::spawn(evaluate::run(self.clone(), evaluated)).abort_handle();
        *self.evaluator.lock().expect("evaluator lock") = Some(evaluator);
        self.gateways.start_all().await
    }

    /// Stops evaluation and the pushers (at shutdown). What is not done yet is picked up at
    /// the next start: progress is stored with each step.
    pub fn stop(&self) {
        if let Some(evaluator) = self.evaluator.lock().expect("evaluator lock").take() {
            evaluator.abort();
        }
        self.gateways.stop();
    }

    /// An event was written: evaluation has work.
    pub fn event_written(&self) {
        self.events_written.notify_one();
    }

    /// Changes the user's push rules with `edit` and stores them (as `m.push_rules` account
    /// data, which reaches the user's clients through sync). An error from `edit` changes
    /// nothing.
    pub async fn edit_rules<T>(
        &self,
        user_id: &UserId,
        edit: impl FnOnce(&mut Ruleset) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let _one_at_a_time = self.edits.lock().await;
        let mut ruleset = rules(&self.base, user_id).await?;
        let result = edit(&mut ruleset)?;
        let content = rules_content(&ruleset).to_string();
        crate::account_data::set_account_data(&self.base, user_id, "", PUSH_RULES, &content).await?;
        Ok(result)
    }

    /// The user's unread counts in these rooms, once evaluation has caught up with `position`.
    pub async fn unread_counts(
        &self,
        user_id: &UserId,
        rooms: &[&str],
        position: i64,
        by_thread: bool,
    ) -> ApiResult<RoomCounts> {
        if rooms.is_empty() {
            return Ok(RoomCounts::default());
        }
        self.caught_up(position).await;
        let rows = self.base.storage.unread_counts(user_id.as_str(), Some(rooms)).await?;
        Ok(RoomCounts::from_rows(rows, by_thread))
    }

    /// Waits until every event up to `position` is evaluated (or [`EVALUATION_WAIT`] passes),
    /// so counts shown beside those events include them.
    pub async fn caught_up(&self, position: i64) {
        let mut receiver = self.evaluated.subscribe();
        let _ = tokio::time::timeout(EVALUATION_WAIT, receiver.wait_for(|evaluated| *evaluated >= position)).await;
    }

    /// Account data changed: forget what the cache holds of it.
    pub fn account_data_changed(&self, user_id: &str, room_id: &str, data_type: &str) {
        if room_id.is_empty() && (data_type == PUSH_RULES || data_type == IGNORED_USERS) {
            let mut cache = self.users.lock().expect("push cache lock");
            self.generation.fetch_add(1, Ordering::SeqCst);
            cache.remove(user_id);
        }
    }

    /// The push data of these users, loaded in one query for those not cached.
    pub async fn users_data(
        &self,
        storage: &Storage,
        user_ids: &[&str],
    ) -> Result<HashMap<String, Arc<UserPushData>>, StorageError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut found = HashMap::with_capacity(user_ids.len());
        let mut missing = Vec::new();
        {
            let cache = self.users.lock().expect("push cache lock");
            for user in user_ids {
                match cache.get(*user) {
                    Some(data) => {
                        found.insert((*user).to_owned(), data.clone());
                    }
                    None => missing.push(*user),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let rows = storage
            .account_data_of_users(&missing, &[PUSH_RULES, IGNORED_USERS])
            .await?;
        let mut loaded: HashMap<&str, (Option<&str>, Option<&str>)> = HashMap::new();
        for (user, kind, content) in &rows {
            let entry = loaded.entry(user.as_str()).or_default();
            if kind == PUSH_RULES {
                entry.0 = Some(content);
            } else {
                entry.1 = Some(content);
            }
        }
        let mut cache = self.users.lock().expect("push cache lock");
        let cacheable = self.generation.load(Ordering::SeqCst) == generation;
        // A user's rules are ~10 KiB built: this bounds the cache near 100 MiB.
        if cache.len() > MAX_CACHED_USERS {
            cache.clear();
        }
        for user in missing {
            let Ok(user_id) = UserId::parse(user) else {
                continue;
            };
            let (rules, ignored) = loaded.get(user).copied().unwrap_or_default();
            let data = Arc::new(UserPushData {
                rules: rules_from_content(&user_id, rules),
                ignored: ignored.map(ignored_from_content).unwrap_or_default(),
            });
            if cacheable {
                cache.insert(user.to_owned(), data.clone());
            }
            found.insert(user.to_owned(), data);
        }
        Ok(found)
    }
}

/// The server's predefined rules for the user: the spec's (from ruma), plus the three legacy
/// mention rules Synapse still has and clients that do not send `m.mentions` rely on:
/// `.m.rule.contains_display_name`, `.m.rule.roomnotif` and `.m.rule.contains_user_name`.
/// (ruma disables them for events that carry `m.mentions`, as the spec says.)
pub fn predefined_rules(user_id: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user_id);
    let highlight_sound = json!(["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }]);
    let display_name = json!({
        "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
        "conditions": [{ "kind": "contains_display_name" }],
        "actions": highlight_sound,
    });
    let room_notif = json!({
        "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
        "conditions": [
            { "kind": "event_match", "key": "content.body", "pattern": "@room" },
            { "kind": "sender_notification_permission", "key": "room" },
        ],
        "actions": ["notify", { "set_tweak": "highlight" }],
    });
    for (after, rule) in [
        (".m.rule.is_user_mention", display_name),
        (".m.rule.is_room_mention", room_notif),
    ] {
        let Ok(rule) = serde_json::from_value(rule) else {
            continue;
        };
        let index = rules
            .override_
            .iter()
            .position(|existing| existing.rule_id == after)
            .map_or(rules.override_.len(), |index| index + 1);
        rules.override_.shift_insert(index, rule);
    }
    let user_name = json!({
        "rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
        "pattern": user_id.localpart(),
        "actions": highlight_sound,
    });
    if let Ok(rule) = serde_json::from_value(user_name) {
        rules.content.shift_insert(0, rule);
    }
    rules
}

/// The user's rules from the stored `m.push_rules` content (None: never edited): the stored
/// rules brought up to date with the server's predefined ones.
pub fn rules_from_content(user_id: &UserId, content: Option<&str>) -> Ruleset {
    let defaults = predefined_rules(user_id);
    let stored = content
        .and_then(|content| serde_json::from_str::<Value>(content).ok())
        .and_then(|mut content| content.get_mut("global").map(Value::take))
        .and_then(|global| serde_json::from_value::<Ruleset>(global).ok());
    match stored {
        Some(mut rules) => {
            rules.update_with_server_default(defaults);
            rules
        }
        None => defaults,
    }
}

fn ignored_from_content(content: &str) -> HashSet<String> {
    serde_json::from_str::<Value>(content)
        .ok()
        .and_then(|content| {
            content
                .get("ignored_users")?
                .as_object()
                .map(|users| users.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// The `m.push_rules` account data content for a rule set.
pub fn rules_content(rules: &Ruleset) -> Value {
    json!({ "global": rules })
}

/// The user's push rules.
pub async fn rules(state: &Base, user_id: &UserId) -> ApiResult<Ruleset> {
    let stored = state.storage.account_data(user_id.as_str(), "", PUSH_RULES).await?;
    Ok(rules_from_content(user_id, stored.as_deref()))
}

/// For a first sync: adds the user's push rules to the global account data events unless
/// they are there already (they are only stored once edited; clients read them from here).
pub async fn add_initial_rules(state: &Base, user_id: &UserId, global: &mut Vec<Value>) -> ApiResult<()> {
    if !global.iter().any(|event| event["type"] == PUSH_RULES) {
        let rules = rules(state, user_id).await?;
        global.push(json!({ "type": PUSH_RULES, "content": rules_content(&rules) }));
    }
    Ok(())
}

/// Unread counts of one room, as sync shows them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub notifications: i64,
    pub highlights: i64,
}

impl Counts {
    pub fn to_json(self) -> Value {
        json!({ "notification_count": self.notifications, "highlight_count": self.highlights })
    }
}

/// A user's unread counts per room: all threads together, or (`by_thread`) the main timeline
/// with each thread apart.
#[derive(Debug, Default)]
pub struct RoomCounts {
    pub room: HashMap<String, Counts>,
    pub threads: HashMap<String, HashMap<String, Counts>>,
}

impl RoomCounts {
    pub fn from_rows(rows: Vec<UnreadCount>, by_thread: bool) -> Self {
        let mut counts = Self::default();
        for row in rows {
            let add = |counts: &mut Counts| {
                counts.notifications += row.notifications;
                counts.highlights += row.highlights;
            };
            if by_thread && row.thread_id != "main" {
                add(counts
                    .threads
                    .entry(row.room_id.clone())
                    .or_default()
                    .entry(row.thread_id.clone())
                    .or_default());
            } else {
                add(counts.room.entry(row.room_id.clone()).or_default());
            }
        }
        counts
    }

    /// The room's `unread_notifications` (zeros for a room with none).
    pub fn room(&self, room_id: &str) -> Counts {
        self.room.get(room_id).copied().unwrap_or_default()
    }

    /// The room's `unread_thread_notifications`, if any thread has unread notifications.
    pub fn threads_json(&self, room_id: &str) -> Option<Value> {
        let threads = self.threads.get(room_id)?;
        Some(Value::Object(
            threads
                .iter()
                .map(|(thread, counts)| (thread.clone(), counts.to_json()))
                .collect(),
        ))
    }
}

/// Push follows committed changes: events to evaluate, rules to reload, pushers to restart,
/// badges to update.
impl Subscriber for Push {
    fn published(&self, change: Change<'_>) {
        match change {
            Change::Event { .. } => self.event_written(),
            Change::AccountData {
                user_id,
                room_id,
                data_type,
            } => self.account_data_changed(user_id, room_id, data_type),
            Change::Pushers { user_id } => self.gateways.pushers_changed(user_id),
            Change::ReadReceipt { user_id } => self.gateways.badge_changed(user_id),
            Change::Typing { .. }
            | Change::Receipt { .. }
            | Change::Presence { .. }
            | Change::DeviceList { .. }
            | Change::EdusQueued { .. }
            | Change::ToDevice { .. } => {}
        }
    }
}

/// A rule ID or kind in a path that names nothing.
pub fn rule_not_found() -> ApiError {
    ApiError::not_found("No such push rule")
}
