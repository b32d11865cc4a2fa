//! Push rules (`/pushrules/…`), pushers (`/pushers`, `/pushers/set`) and `/notifications`.
//!
//! Rules are the user's `m.push_rules` account data: every edit reaches their clients through
//! sync. The predefined rules can be enabled, disabled and given other actions, never removed
//! or replaced; user rules are added with `before`/`after` placement among rules of their kind.

use axum::Json;
use ruma::{
    api::client::push::{
        PusherKind, delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions,
        get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule,
        set_pushrule_actions, set_pushrule_enabled,
    },
    push::{AnyPushRule, InsertPushRuleError, RemovePushRuleError, RuleKind, RuleNotFoundError},
};
use serde_json::{Value, json};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    error::{ApiError, ApiResult},
    push,
    rooms::client_event::{Unsigned, client_event},
    storage::{PusherRow, now_ms},
};

/// `GET /_matrix/client/v3/pushrules/`
pub async fn all(
    state: AppState,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    let sender = request.sender()?;
    Ok(get_pushrules_all::v3::Response::new(
        push::rules(&state, &sender.user_id).await?,
    ))
}

/// `GET /_matrix/client/v3/pushrules/global/`
pub async fn global(
    state: AppState,
    request: Ruma<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    let sender = request.sender()?;
    Ok(get_pushrules_global_scope::v3::Response::new(
        push::rules(&state, &sender.user_id).await?,
    ))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn get_rule(
    state: AppState,
    request: Ruma<get_pushrule::v3::Request>,
) -> ApiResult<get_pushrule::v3::Response> {
    let rule = one_rule(&state, &request, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(get_pushrule::v3::Response::new(rule.into()))
}

/// The rule a `GET …/{kind}/{ruleId}[/…]` names (404 if none).
async fn one_rule<Req>(state: &AppState, request: &Ruma<Req>, kind: RuleKind, rule_id: &str) -> ApiResult<AnyPushRule> {
    known_kind(&kind)?;
    let rules = push::rules(state, &request.sender()?.user_id).await?;
    let rule = rules.get(kind, rule_id).ok_or_else(push::rule_not_found)?;
    Ok(rule.to_owned())
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn set_rule(
    state: AppState,
    request: Ruma<set_pushrule::v3::Request>,
) -> ApiResult<set_pushrule::v3::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    let rule_id = body.rule.rule_id();
    if rule_id.starts_with('.') {
        return Err(ApiError::invalid_param("Rule IDs starting with '.' are the server's"));
    }
    if rule_id.contains('/') || rule_id.contains('\\') {
        return Err(ApiError::invalid_param("Rule IDs cannot contain '/' or '\\'"));
    }
    state
        .push
        .edit_rules(&sender.user_id, |rules| {
            rules
                .insert(body.rule, body.after.as_deref(), body.before.as_deref())
                .map_err(|error| match error {
                    InsertPushRuleError::UnknownRuleId => push::rule_not_found(),
                    error => ApiError::invalid_param(error.to_string()),
                })
        })
        .await?;
    Ok(set_pushrule::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
pub async fn delete_rule(
    state: AppState,
    request: Ruma<delete_pushrule::v3::Request>,
) -> ApiResult<delete_pushrule::v3::Response> {
    let sender = request.sender()?;
    let (kind, rule_id) = (request.body.kind.clone(), request.body.rule_id.clone());
    known_kind(&kind)?;
    state
        .push
        .edit_rules(&sender.user_id, |rules| {
            rules.remove(kind, &rule_id).map_err(|error| match error {
                RemovePushRuleError::NotFound => push::rule_not_found(),
                RemovePushRuleError::ServerDefault => {
                    ApiError::forbidden("The server's predefined rules cannot be deleted")
                }
                error => ApiError::invalid_param(error.to_string()),
            })
        })
        .await?;
    Ok(delete_pushrule::v3::Response::new())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn get_enabled(
    state: AppState,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let rule = one_rule(&state, &request, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
pub async fn set_enabled(
    state: AppState,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    known_kind(&body.kind)?;
    state
        .push
        .edit_rules(&sender.user_id, |rules| {
            rules
                .set_enabled(body.kind, &body.rule_id, body.enabled)
                .map_err(not_found)
        })
        .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn get_actions(
    state: AppState,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let rule = one_rule(&state, &request, request.body.kind.clone(), &request.body.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions().to_vec()))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
pub async fn set_actions(
    state: AppState,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let sender = request.sender()?.clone();
    let body = request.body;
    known_kind(&body.kind)?;
    state
        .push
        .edit_rules(&sender.user_id, |rules| {
            rules
                .set_actions(body.kind, &body.rule_id, body.actions)
                .map_err(not_found)
        })
        .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

/// A kind the spec does not define is a bad request (400 `M_UNRECOGNIZED`, as Synapse).
fn known_kind(kind: &RuleKind) -> ApiResult<()> {
    match kind.as_str() {
        "override" | "underride" | "sender" | "room" | "content" => Ok(()),
        other => Err(ApiError::unrecognized(
            http::StatusCode::BAD_REQUEST,
            format!("Unknown push rule kind {other}"),
        )),
    }
}

fn not_found(_: RuleNotFoundError) -> ApiError {
    push::rule_not_found()
}

/// `GET /_matrix/client/v3/pushers`
pub async fn get_pushers(state: AppState, request: Ruma<get_pushers::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let pushers: Vec<Value> = state
        .storage
        .pushers(Some(sender.user_id.as_str()))
        .await?
        .into_iter()
        .map(|pusher| {
            let data: Value = serde_json::from_str(&pusher.data).unwrap_or_else(|_| json!({}));
            let mut out = json!({
                "app_id": pusher.app_id,
                "pushkey": pusher.pushkey,
                "kind": pusher.kind,
                "app_display_name": pusher.app_display_name,
                "device_display_name": pusher.device_display_name,
                "lang": pusher.lang,
                "data": data,
            });
            if let Some(tag) = pusher.profile_tag {
                out["profile_tag"] = Value::from(tag);
            }
            out
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

/// Longest `app_id` and `pushkey` the spec allows (64 and 512 bytes).
const MAX_APP_ID: usize = 64;
const MAX_PUSHKEY: usize = 512;
/// Pushers one user may have.
const MAX_PUSHERS_PER_USER: usize = 32;

/// `POST /_matrix/client/v3/pushers/set`
pub async fn set_pusher(
    state: AppState,
    request: Ruma<set_pusher::v3::Request>,
) -> ApiResult<set_pusher::v3::Response> {
    let sender = request.sender()?.clone();
    match request.body.action {
        set_pusher::v3::PusherAction::Delete(ids) => {
            // Deleting a pusher that does not exist is not an error (Synapse agrees).
            state
                .storage
                .delete_pusher(sender.user_id.as_str(), &ids.app_id, &ids.pushkey)
                .await?;
            state.publish(crate::base::Change::Pushers {
                user_id: sender.user_id.as_str(),
            });
        }
        set_pusher::v3::PusherAction::Post(post) => {
            let pusher = post.pusher;
            let (app_id, pushkey) = (pusher.ids.app_id, pusher.ids.pushkey);
            if app_id.is_empty() || app_id.len() > MAX_APP_ID {
                return Err(ApiError::invalid_param(format!(
                    "app_id must be 1 to {MAX_APP_ID} bytes"
                )));
            }
            if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY {
                return Err(ApiError::invalid_param(format!(
                    "pushkey must be 1 to {MAX_PUSHKEY} bytes"
                )));
            }
            let PusherKind::Http(http) = pusher.kind else {
                return Err(ApiError::invalid_param("Only pushers of kind http are supported"));
            };
            state.push.gateways.check_url(&http.url)?;
            // Each pusher is a POST per notification to a URL the user chose: a cap keeps one
            // account from turning a busy room into a flood at someone else's server.
            let existing = state.storage.pushers(Some(sender.user_id.as_str())).await?;
            let is_new = !existing.iter().any(|p| p.app_id == app_id && p.pushkey == pushkey);
            if is_new && existing.len() >= MAX_PUSHERS_PER_USER {
                return Err(ApiError::forbidden(format!(
                    "At most {MAX_PUSHERS_PER_USER} pushers per user; remove one first"
                )));
            }
            let data = serde_json::to_string(&http).map_err(|_| ApiError::internal())?;
            // A new pusher starts with what happens from now on: events written after this
            // point (whether or not their evaluation has finished).
            let start = state.notifier.position(crate::streams::Stream::Events);
            let row = PusherRow {
                user_id: sender.user_id.to_string(),
                app_id,
                pushkey,
                device_id: sender.device_id.to_string(),
                kind: "http".to_owned(),
                app_display_name: pusher.app_display_name,
                device_display_name: pusher.device_display_name,
                profile_tag: pusher.profile_tag,
                lang: pusher.lang,
                data,
                created_ts: now_ms(),
                last_stream_ordering: start,
                failing_since: None,
            };
            let taken_over = state.storage.set_pusher(&row, post.append).await?;
            // The pushers removed for other users: their tasks see it and stop.
            let users = taken_over.into_iter().map(|(user, _, _)| user).collect();
            state.push.gateways.wake(&users);
            let stored = state
                .storage
                .pusher(&row.user_id, &row.app_id, &row.pushkey)
                .await?
                .ok_or_else(ApiError::internal)?;
            state.push.gateways.ensure_running(&stored);
        }
        _ => return Err(ApiError::invalid_param("Unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

/// Notifications per page at most.
const MAX_NOTIFICATIONS: i64 = 100;

/// `GET /_matrix/client/v3/notifications`
pub async fn notifications(state: AppState, request: Ruma<get_notifications::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let before = match request.body.from.as_deref() {
        None | Some("") => None,
        Some(from) => Some(
            from.parse::<i64>()
                .map_err(|_| ApiError::invalid_param("from is not a token this server gave"))?,
        ),
    };
    let limit = request
        .body
        .limit
        .map_or(20, |limit| i64::try_from(u64::from(limit)).unwrap_or(MAX_NOTIFICATIONS))
        .clamp(1, MAX_NOTIFICATIONS);
    let only_highlight = request.body.only.as_deref() == Some("highlight");
    // Everything written so far has been evaluated (or nearly): include it.
    state
        .push
        .caught_up(state.notifier.position(crate::streams::Stream::Events))
        .await;
    let page = state
        .storage
        .notifications(sender.user_id.as_str(), before, limit, only_highlight)
        .await?;
    let event_ids: Vec<String> = page.iter().map(|(row, _)| row.event_id.clone()).collect();
    let events = state.storage.events(&event_ids).await?;
    let mut notifications = Vec::with_capacity(page.len());
    for (row, read) in &page {
        let Some(event) = events.iter().find(|event| event.event_id == row.event_id) else {
            continue;
        };
        let version = state
            .caches
            .room_version(&state.storage, &row.room_id)
            .await?
            .unwrap_or_else(|| "12".into());
        let actions: Value = serde_json::from_str(&row.actions).unwrap_or_else(|_| json!([]));
        notifications.push(json!({
            "actions": actions,
            "event": client_event(event, &version, Unsigned::default()),
            "read": read,
            "room_id": row.room_id,
            "ts": row.ts,
        }));
    }
    let mut body = json!({ "notifications": notifications });
    if page.len() as i64 == limit
        && let Some((last, _)) = page.last()
    {
        body["next_token"] = Value::from(last.stream_ordering.to_string());
    }
    Ok(Json(body))
}
