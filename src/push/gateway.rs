//! Delivery to push gateways (the Push Gateway API, `POST {url}` with `/_matrix/push/v1/notify`).
//!
//! Each pusher is a target of the outbox (see [`crate::outbox`]): its own task, so a slow or
//! dead gateway delays nobody else. The courier sends the user's notifications in order, after
//! the pusher's `last_stream_ordering`, and moves it forward only once the gateway took the
//! notification: pending pushes survive a restart. While the gateway fails the outbox backs
//! off (1 s doubling to 10 min); a notification still failing after `push.give_up_after_secs`
//! is dropped. A pushkey the gateway rejects removes the pusher. A notification already read
//! when its turn comes is skipped.

use std::{collections::HashSet, sync::Arc, time::Duration};

use serde_json::{Map, Value, json};

use crate::{
    base::Base,
    config::PushConfig,
    error::{ApiError, ApiResult},
    outbound::{AddressPolicy, guarded_client, refusal},
    outbox::{Courier, Outbox, Round},
    storage::{PushActionRow, PusherRow, now_ms},
};

/// The path every pusher URL must end in.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// The largest gateway answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// Notifications read per round from the database.
const BATCH: i64 = 20;

/// A pusher: (user, app ID, pushkey). Ordered by user first, so one user's pushers are found
/// without a scan of all.
pub type PusherKey = (String, String, String);

/// The pushers, each a target of the outbox.
pub struct Gateways {
    policy: AddressPolicy,
    outbox: Arc<Outbox<PushCourier>>,
}

/// Sends one pusher's notifications.
pub struct PushCourier {
    base: Base,
    client: reqwest::Client,
}

impl Gateways {
    pub fn new(base: &Base, config: &PushConfig) -> Self {
        let policy = AddressPolicy {
            denylist: config.ip_range_denylist.clone(),
            allowlist: config.ip_range_allowlist.clone(),
        };
        let courier = PushCourier {
            base: base.clone(),
            client: guarded_client(policy.clone(), Duration::from_secs(config.timeout_secs)),
        };
        Self {
            policy,
            outbox: Outbox::new(courier),
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

    /// Starts a task for every stored pusher (at server start).
    pub async fn start_all(&self) -> ApiResult<()> {
        for pusher in self.outbox.courier().base.storage.pushers(None).await? {
            self.ensure_running(&pusher);
        }
        Ok(())
    }

    /// Starts the pusher's task unless it runs already; wakes it either way.
    pub fn ensure_running(&self, pusher: &PusherRow) {
        self.outbox
            .ensure_running((pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone()));
    }

    /// Wakes the pushers of these users.
    pub fn wake(&self, users: &HashSet<String>) {
        for user in users {
            self.outbox.wake_range(&first_of(user), |(owner, _, _)| owner == user);
        }
    }

    /// The user's pushers may be gone (deleted, their device logged out): their tasks look,
    /// and those whose pusher is gone end.
    pub fn pushers_changed(&self, user_id: &str) {
        self.outbox
            .wake_range(&first_of(user_id), |(owner, _, _)| owner == user_id);
    }

    /// The user read something: their phones' badges should drop. Each pusher sends a
    /// counts-only notification once it has nothing else pending (as Synapse does).
    pub fn badge_changed(&self, user_id: &str) {
        self.outbox
            .nudge_range(&first_of(user_id), |(owner, _, _)| owner == user_id);
    }

    /// Stops every pusher (at shutdown). A notification being sent is sent again after the
    /// restart (the gateway API allows duplicates; losing one it does not).
    pub fn stop(&self) {
        self.outbox.stop();
    }
}

/// The first key of a user's pushers.
fn first_of(user_id: &str) -> PusherKey {
    (user_id.to_owned(), String::new(), String::new())
}

impl Courier for PushCourier {
    type Target = PusherKey;

    async fn deliver(&self, (user_id, app_id, pushkey): &PusherKey) -> Round {
        let pusher = match self.base.storage.pusher(user_id, app_id, pushkey).await {
            Ok(Some(pusher)) => pusher,
            Ok(None) => return Round::Gone,
            Err(_) => return Round::Retry,
        };
        deliver_pending(&self.base, &self.client, &pusher)
            .await
            .unwrap_or(Round::Retry)
    }

    async fn nudged(&self, (user_id, app_id, pushkey): &PusherKey) {
        if let Ok(Some(pusher)) = self.base.storage.pusher(user_id, app_id, pushkey).await {
            send_badge(&self.base, &self.client, &pusher).await;
        }
    }

    async fn exists(&self, (user_id, app_id, pushkey): &PusherKey) -> bool {
        matches!(self.base.storage.pusher(user_id, app_id, pushkey).await, Ok(Some(_)))
    }
}

/// Sends the pusher's pending notifications, one batch, stopping at the first the gateway
/// does not take. Each round reads what is pending afresh (as Synapse does): a notification
/// read while the gateway was down is not sent late, and a pusher set again starts a new
/// give-up clock.
async fn deliver_pending(state: &Base, client: &reqwest::Client, pusher: &PusherRow) -> ApiResult<Round> {
    let pending = state
        .storage
        .notifications_after(&pusher.user_id, pusher.last_stream_ordering, BATCH)
        .await?;
    if pending.is_empty() {
        return Ok(Round::Idle);
    }
    let give_up_after = (state.config.push.give_up_after_secs as i64).saturating_mul(1000);
    let mut failing_since = pusher.failing_since;
    // Whether a notification went out (or was given up on) this round: the backoff then starts
    // over. Skipping one the user read meanwhile does not count.
    let mut progressed = false;
    for (notification, read) in pending {
        if !read {
            // Built for each attempt: after a long outage the counts are today's.
            let body = notification_body(state, pusher, &notification).await?;
            match post(client, pusher, &body).await {
                Ok(rejected) => {
                    state.metrics.pushes_sent.inc();
                    progressed = true;
                    if failing_since.take().is_some() {
                        tracing::info!(
                            user_id = pusher.user_id,
                            app_id = pusher.app_id,
                            "push gateway reachable again"
                        );
                    }
                    if rejected {
                        tracing::info!(
                            user_id = pusher.user_id,
                            app_id = pusher.app_id,
                            "the push gateway rejected the pushkey; pusher removed"
                        );
                        state
                            .storage
                            .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                            .await?;
                        return Ok(Round::Gone);
                    }
                }
                Err(reason) => {
                    state.metrics.push_failures.inc();
                    let since = *failing_since.get_or_insert_with(now_ms);
                    if now_ms() - since < give_up_after {
                        tracing::debug!(user_id = pusher.user_id, app_id = pusher.app_id, %reason, "push failed; retrying");
                        state.storage.set_pusher_failing_since(pusher, Some(since)).await?;
                        return Ok(Round::Failed { progressed });
                    }
                    tracing::warn!(user_id = pusher.user_id, app_id = pusher.app_id, %reason, "dropping a notification the push gateway would not take");
                    progressed = true;
                }
            }
        }
        state
            .storage
            .update_pusher_progress(pusher, notification.stream_ordering, failing_since)
            .await?;
    }
    Ok(Round::More)
}

/// A counts-only notification (the user read something elsewhere), tried once: the next
/// one carries the count anyway.
async fn send_badge(state: &Base, client: &reqwest::Client, pusher: &PusherRow) {
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
    match post(client, pusher, &body).await {
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
async fn post(client: &reqwest::Client, pusher: &PusherRow, body: &Value) -> Result<bool, String> {
    let data: Value = serde_json::from_str(&pusher.data).unwrap_or_default();
    let url = data["url"].as_str().ok_or("the pusher has no URL")?;
    let response = client
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
async fn notification_body(state: &Base, pusher: &PusherRow, notification: &PushActionRow) -> ApiResult<Value> {
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
async fn unread_badge(state: &Base, user_id: &str) -> ApiResult<i64> {
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
