//! Delivery to push gateways (the Push Gateway API, `POST {url}` with `/_matrix/push/v1/notify`).
//!
//! Each pusher has its own task, so a slow or dead gateway delays nobody else. A task sends
//! the user's notifications in order, after the pusher's `last_stream_ordering`, and moves it
//! forward only once the gateway took the notification: pending pushes survive a restart.
//! Failures are retried with exponential backoff (1 s doubling to 10 min); a notification
//! still failing after `push.give_up_after_secs` is dropped. A pushkey the gateway rejects
//! removes the pusher. A notification already read when its turn comes is skipped.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Map, Value, json};
use tokio::{sync::Notify, task::AbortHandle};

use crate::{
    config::PushConfig,
    error::{ApiError, ApiResult},
    outbound::{AddressPolicy, guarded_client, refusal},
    state::AppState,
    storage::{PushActionRow, PusherRow, now_ms},
};

/// The path every pusher URL must end in.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The largest gateway answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// Notifications read per round from the database.
const BATCH: i64 = 20;

type PusherKey = (String, String, String);

/// A pusher's task: how to wake it, whether it owes the phone a badge update, and how to
/// stop it.
struct Running {
    wake: Arc<Notify>,
    badge: Arc<AtomicBool>,
    task: AbortHandle,
}

/// The running pushers: one task each, woken when their user has new notifications.
pub struct Gateways {
    client: reqwest::Client,
    policy: AddressPolicy,
    /// Ordered by user first, so one user's pushers are found without a scan of all.
    running: Mutex<BTreeMap<PusherKey, Running>>,
}

impl Gateways {
    pub fn new(config: &PushConfig) -> Self {
        let policy = AddressPolicy {
            denylist: config.ip_range_denylist.clone(),
            allowlist: config.ip_range_allowlist.clone(),
        };
        Self {
            client: guarded_client(policy.clone(), Duration::from_secs(config.timeout_secs)),
            policy,
            running: Mutex::default(),
        }
    }

    /// Checks a pusher URL: `http(s)`, ending in the notify path, not at a denied address.
    pub fn check_url(&self, url: &str) -> ApiResult<()> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| ApiError::invalid_param(format!("data.url is not a URL: {error}")))?;
        if !parsed.path().ends_with(NOTIFY_PATH) {
            return Err(ApiError::invalid_param(format!("data.url must end in {NOTIFY_PATH}")));
        }
        self.policy
            .check_url(&parsed)
            .map_err(|refused| ApiError::invalid_param(format!("data.url: {refused}")))
    }

    /// Wakes the pushers of these users.
    pub fn wake(&self, users: &HashSet<String>) {
        if users.is_empty() {
            return;
        }
        let running = self.running.lock().expect("pushers lock");
        for user in users {
            for pusher in pushers_of(&running, user) {
                pusher.wake.notify_one();
            }
        }
    }

    /// The user's pushers may be gone (deleted, their device logged out): their tasks look,
    /// and those whose pusher is gone end.
    pub fn pushers_changed(&self, user_id: &str) {
        let running = self.running.lock().expect("pushers lock");
        for pusher in pushers_of(&running, user_id) {
            pusher.wake.notify_one();
        }
    }

    /// The user read something: their phones' badges should drop. Each pusher sends a
    /// counts-only notification once it has nothing else pending (as Synapse does).
    pub fn badge_changed(&self, user_id: &str) {
        let running = self.running.lock().expect("pushers lock");
        for pusher in pushers_of(&running, user_id) {
            pusher.badge.store(true, Ordering::SeqCst);
            pusher.wake.notify_one();
        }
    }

    /// Stops every pusher (at shutdown). A notification being sent is sent again after the
    /// restart (the gateway API allows duplicates; losing one it does not).
    pub fn stop(&self) {
        for (_, pusher) in std::mem::take(&mut *self.running.lock().expect("pushers lock")) {
            pusher.task.abort();
        }
    }
}

/// The running pushers of one user.
fn pushers_of<'a>(running: &'a BTreeMap<PusherKey, Running>, user_id: &str) -> impl Iterator<Item = &'a Running> {
    let from = (user_id.to_owned(), String::new(), String::new());
    running
        .range(from..)
        .take_while(move |((user, _, _), _)| user == user_id)
        .map(|(_, pusher)| pusher)
}

/// Starts a task for every stored pusher (at server start).
pub async fn start_all(state: &AppState) -> ApiResult<()> {
    for pusher in state.storage.pushers(None).await? {
        ensure_running(state, &pusher);
    }
    Ok(())
}

/// Starts the pusher's task unless it runs already; wakes it either way.
pub fn ensure_running(state: &AppState, pusher: &PusherRow) {
    let key = (pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone());
    let mut running = state.push.gateways.running.lock().expect("pushers lock");
    if let Some(pusher) = running.get(&key) {
        pusher.wake.notify_one();
        return;
    }
    let wake = Arc::new(Notify::new());
    let badge = Arc::new(AtomicBool::new(false));
    // Spawned under the lock: the task's own removal of its entry waits until it is in.
    let task = tokio::spawn(run_pusher(state.clone(), key.clone(), wake.clone(), badge.clone())).abort_handle();
    running.insert(key, Running { wake, badge, task });
}

/// One pusher's loop. Ends when the pusher is gone (deleted, rejected, its device logged out).
async fn run_pusher(state: AppState, key: PusherKey, wake: Arc<Notify>, badge: Arc<AtomicBool>) {
    let (user_id, app_id, pushkey) = &key;
    loop {
        let woken = wake.notified();
        let pusher = match state.storage.pusher(user_id, app_id, pushkey).await {
            Ok(Some(pusher)) => pusher,
            Ok(None) => break,
            Err(_) => {
                tokio::time::sleep(FIRST_BACKOFF).await;
                continue;
            }
        };
        match deliver_pending(&state, &pusher).await {
            Ok(Progress::Idle) => {
                if badge.swap(false, Ordering::SeqCst) {
                    send_badge(&state, &pusher).await;
                }
                woken.await;
            }
            Ok(Progress::More) => {}
            Ok(Progress::Removed) => break,
            Err(_) => tokio::time::sleep(FIRST_BACKOFF).await,
        }
    }
    {
        let mut running = state.push.gateways.running.lock().expect("pushers lock");
        // Only this task's own entry (a new one may have replaced it).
        if running.get(&key).is_some_and(|entry| Arc::ptr_eq(&entry.wake, &wake)) {
            running.remove(&key);
        }
    }
    tracing::debug!(user_id, app_id, "pusher stopped");
    // Set again while this task was deciding to stop: ensure_running only woke this task.
    if let Ok(Some(pusher)) = state.storage.pusher(user_id, app_id, pushkey).await {
        ensure_running(&state, &pusher);
    }
}

enum Progress {
    /// Nothing left to send.
    Idle,
    /// A batch went out; there may be more.
    More,
    /// The pusher was removed.
    Removed,
}

/// Sends the pusher's pending notifications, one batch.
async fn deliver_pending(state: &AppState, pusher: &PusherRow) -> ApiResult<Progress> {
    let pending = state
        .storage
        .notifications_after(&pusher.user_id, pusher.last_stream_ordering, BATCH)
        .await?;
    if pending.is_empty() {
        return Ok(Progress::Idle);
    }
    let mut failing_since = pusher.failing_since;
    for (notification, read) in pending {
        if !read {
            match send_with_retries(state, pusher, &notification, &mut failing_since).await? {
                Sent::Delivered | Sent::GaveUp => {}
                Sent::Rejected => {
                    tracing::info!(
                        user_id = pusher.user_id,
                        app_id = pusher.app_id,
                        "the push gateway rejected the pushkey; pusher removed"
                    );
                    state
                        .storage
                        .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                        .await?;
                    return Ok(Progress::Removed);
                }
                // Reloaded by the caller: gone, or to go on with its new settings.
                Sent::Changed => return Ok(Progress::More),
            }
        }
        state
            .storage
            .update_pusher_progress(pusher, notification.stream_ordering, failing_since)
            .await?;
    }
    Ok(Progress::More)
}

enum Sent {
    Delivered,
    /// Failing for longer than `give_up_after_secs`: dropped.
    GaveUp,
    Rejected,
    /// The pusher was deleted or changed while we retried.
    Changed,
}

/// Sends one notification until the gateway takes it, rejects the pushkey, or the pusher has
/// failed for too long.
async fn send_with_retries(
    state: &AppState,
    pusher: &PusherRow,
    notification: &PushActionRow,
    failing_since: &mut Option<i64>,
) -> ApiResult<Sent> {
    let give_up_after = (state.config.push.give_up_after_secs as i64).saturating_mul(1000);
    let mut backoff = FIRST_BACKOFF;
    loop {
        // Built for each attempt: after a long outage the counts are today's.
        let body = notification_body(state, pusher, notification).await?;
        match post(state, pusher, &body).await {
            Ok(rejected) => {
                if failing_since.take().is_some() {
                    tracing::info!(
                        user_id = pusher.user_id,
                        app_id = pusher.app_id,
                        "push gateway reachable again"
                    );
                }
                state.metrics.pushes_sent.inc();
                return Ok(if rejected { Sent::Rejected } else { Sent::Delivered });
            }
            Err(reason) => {
                let since = *failing_since.get_or_insert_with(now_ms);
                state.metrics.push_failures.inc();
                if now_ms() - since >= give_up_after {
                    tracing::warn!(user_id = pusher.user_id, app_id = pusher.app_id, %reason, "dropping a notification the push gateway would not take");
                    return Ok(Sent::GaveUp);
                }
                tracing::debug!(user_id = pusher.user_id, app_id = pusher.app_id, %reason, ?backoff, "push failed; retrying");
                state.storage.set_pusher_failing_since(pusher, Some(since)).await?;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if state
                    .storage
                    .pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                    .await?
                    .is_none_or(|now| now.data != pusher.data)
                {
                    // Deleted, or pointed elsewhere: the new settings start over.
                    return Ok(Sent::Changed);
                }
            }
        }
    }
}

/// A counts-only notification (the user read something elsewhere), tried once: the next
/// one carries the count anyway.
async fn send_badge(state: &AppState, pusher: &PusherRow) {
    let unread = match unread_badge(state, &pusher.user_id).await {
        Ok(unread) => unread,
        Err(_) => return,
    };
    let body = json!({
        "notification": {
            "prio": "high",
            "counts": { "unread": unread },
            "devices": [device(pusher, Map::new())],
        }
    });
    match post(state, pusher, &body).await {
        Ok(_) => {
            state.metrics.pushes_sent.inc();
        }
        Err(reason) => {
            state.metrics.push_failures.inc();
            tracing::debug!(user_id = pusher.user_id, app_id = pusher.app_id, %reason, "badge update not sent");
        }
    }
}

/// The `devices` entry for this pusher: its data without the URL, and the tweaks.
fn device(pusher: &PusherRow, tweaks: Map<String, Value>) -> Value {
    let data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
    let device_data: Map<String, Value> = data.into_iter().filter(|(key, _)| key != "url").collect();
    json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ts / 1000,
        "data": device_data,
        "tweaks": tweaks,
    })
}

/// POSTs the notification; Ok(true) when the gateway rejected this pusher's pushkey.
async fn post(state: &AppState, pusher: &PusherRow, body: &Value) -> Result<bool, String> {
    let data: Value = serde_json::from_str(&pusher.data).unwrap_or_default();
    let url = data["url"].as_str().ok_or("the pusher has no URL")?;
    let response = state
        .push
        .gateways
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|error| match refusal(&error) {
            Some(refused) => refused.to_string(),
            None => error.without_url().to_string(),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the gateway answered HTTP {}", status.as_u16()));
    }
    // The answer is small; users choose the gateway, so read at most MAX_ANSWER of it.
    let mut response = response;
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err("the gateway's answer is too large".to_owned());
        }
        bytes.extend_from_slice(&chunk);
    }
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let rejected = answer["rejected"]
        .as_array()
        .is_some_and(|keys| keys.iter().any(|key| key.as_str() == Some(pusher.pushkey.as_str())));
    Ok(rejected)
}

/// The `notification` the Push Gateway API describes, for this pusher.
async fn notification_body(state: &AppState, pusher: &PusherRow, notification: &PushActionRow) -> ApiResult<Value> {
    let data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
    let actions: Vec<Value> = serde_json::from_str(&notification.actions).unwrap_or_default();
    let mut tweaks = Map::new();
    for action in &actions {
        if let Some(tweak) = action.get("set_tweak").and_then(Value::as_str) {
            // `highlight` without a value means true.
            let value = action.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(tweak.to_owned(), value);
        }
    }
    let unread = unread_badge(state, &pusher.user_id).await?;
    let event = state.storage.event(&notification.event_id).await?;
    let high = tweaks.contains_key("sound")
        || tweaks.get("highlight").is_some_and(|v| v.as_bool() == Some(true))
        || event
            .as_ref()
            .is_some_and(|event| event.event_type == "m.room.encrypted");
    let device = device(pusher, tweaks);
    let mut body = json!({
        "event_id": notification.event_id,
        "room_id": notification.room_id,
        "prio": if high { "high" } else { "low" },
        "counts": { "unread": unread },
        "devices": [device],
    });
    if data.get("format").and_then(Value::as_str) == Some("event_id_only") {
        return Ok(json!({ "notification": body }));
    }
    if let Some(event) = event {
        let pdu: Value = serde_json::from_str(&event.json).unwrap_or_default();
        body["type"] = Value::from(event.event_type.as_str());
        body["sender"] = Value::from(event.sender.as_str());
        if event.redacted_by.is_none() {
            body["content"] = pdu["content"].clone();
        }
        if event.event_type == "m.room.member" {
            body["user_is_target"] = Value::Bool(event.state_key.as_deref() == Some(pusher.user_id.as_str()));
        }
        let sender_name = state
            .storage
            .current_state_event(&notification.room_id, "m.room.member", &event.sender)
            .await?
            .and_then(|member| crate::rooms::access::content_field(&member.json, "displayname"));
        if let Some(name) = sender_name {
            body["sender_display_name"] = Value::from(name);
        }
        let room_name = state
            .storage
            .current_state_event(&notification.room_id, "m.room.name", "")
            .await?
            .and_then(|name| crate::rooms::access::content_field(&name.json, "name"));
        if let Some(name) = room_name.filter(|name| !name.is_empty()) {
            body["room_name"] = Value::from(name);
        }
        let alias = state
            .storage
            .current_state_event(&notification.room_id, "m.room.canonical_alias", "")
            .await?
            .and_then(|alias| crate::rooms::access::content_field(&alias.json, "alias"));
        if let Some(alias) = alias {
            body["room_alias"] = Value::from(alias);
        }
    }
    Ok(json!({ "notification": body }))
}

/// `counts.unread`: joined rooms with unread notifications (or all their unread notifications).
async fn unread_badge(state: &AppState, user_id: &str) -> ApiResult<i64> {
    // Rooms the user left keep their rows (for /notifications); they do not count.
    let joined = state.storage.rooms_with_membership(user_id, "join").await?;
    let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
    let rows = state.storage.unread_counts(user_id, Some(&joined)).await?;
    Ok(if state.config.push.group_unread_count_by_room {
        rows.iter()
            .map(|row| row.room_id.as_str())
            .collect::<HashSet<_>>()
            .len() as i64
    } else {
        rows.iter().map(|row| row.notifications).sum()
    })
}
