//! Rooms: `POST /createRoom`, sending events and state, reading state and single events,
//! history (`/messages`), and redaction.

use std::collections::HashSet;

use http::StatusCode;
use ruma::api::client::filter::UrlFilter;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomId, RoomVersionId, UserId,
    api::{
        Direction,
        client::{
            context::get_context,
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::{Visibility, create_room, get_event_by_timestamp, get_room_event, upgrade_room},
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
        error::ErrorKind,
    },
    serde::Raw,
};
use serde_json::{Map, Value, value::RawValue};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
    rooms::{
        access::{ReadAccess, read_access, visible_event},
        client_event::render_events,
        create::{Preset, RoomSpec, create_room as create_room_with},
        pipeline::{EventDraft, Transaction, append_event, room_version_rules},
        send,
        upgrade::upgrade_room as upgrade_room_to,
    },
    storage::{EventRow, StateMap},
};

/// Default and largest page size of `/messages`.
const DEFAULT_PAGE: u64 = 10;
const MAX_PAGE: u64 = 1000;

fn object_of(raw: &RawValue, what: &str) -> ApiResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_json(format!("{what} must be a JSON object"))),
        // Say what is wrong (a number out of range, say), not that it is no object.
        Err(error) => Err(ApiError::bad_json(format!("{what} is not valid JSON: {error}"))),
    }
}

/// Every power level in `power_level_content_override` must be an integer (numeric strings
/// too, as old room versions allow), in the ranges and maps the event has.
fn check_power_level_override(levels: &Map<String, Value>) -> ApiResult<()> {
    let level = |value: &Value| match value {
        Value::Number(n) => n.is_i64(),
        Value::String(text) => text.trim().parse::<i64>().is_ok(),
        _ => false,
    };
    for (key, value) in levels {
        let valid = match key.as_str() {
            "users" | "events" => value.as_object().is_some_and(|map| map.values().all(level)),
            "notifications" => value.as_object().is_some_and(|map| map.values().all(level)),
            "ban" | "kick" | "redact" | "invite" | "events_default" | "state_default" | "users_default" => level(value),
            _ => true,
        };
        if !valid {
            return Err(ApiError::bad_json(format!(
                "power_level_content_override: {key} must hold integer power levels"
            )));
        }
    }
    Ok(())
}

/// `POST /_matrix/client/v3/createRoom`
pub async fn create(state: AppState, request: Ruma<create_room::v3::Request>) -> ApiResult<create_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if !body.invite_3pid.is_empty() {
        return Err(ApiError::invalid_param(
            "invite_3pid is not supported: this server uses no identity server",
        ));
    }
    let alias = match &body.room_alias_name {
        Some(name) => {
            if name.is_empty() {
                return Err(ApiError::invalid_param("room_alias_name needs a localpart"));
            }
            let alias = OwnedRoomAliasId::try_from(format!("#{name}:{}", state.config.server_name))
                .map_err(|_| ApiError::invalid_param("room_alias_name is not a valid alias localpart"))?;
            crate::rooms::directory::check_alias_claim(&state, sender, &alias)?;
            if state.storage.alias(alias.as_str()).await?.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::RoomInUse,
                    "Room alias already taken",
                ));
            }
            Some(alias)
        }
        None => None,
    };
    let version = match &body.room_version {
        Some(version) => version.clone(),
        None => RoomVersionId::try_from(state.config.rooms.default_room_version.as_str())
            .map_err(|_| ApiError::internal())?,
    };
    room_version_rules(version.as_str())?;
    let preset = match body.preset.as_ref().map(|p| p.as_str()) {
        Some("private_chat") => Preset::PrivateChat,
        Some("trusted_private_chat") => Preset::TrustedPrivateChat,
        Some("public_chat") => Preset::PublicChat,
        Some(other) => return Err(ApiError::bad_json(format!("Unknown preset {other}"))),
        None if body.visibility == Visibility::Public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let creation_content = match &body.creation_content {
        Some(raw) => object_of(raw.json(), "creation_content")?,
        None => Map::new(),
    };
    let power_level_override = match &body.power_level_content_override {
        Some(raw) => object_of(raw.json(), "power_level_content_override")?,
        None => Map::new(),
    };
    // Checked before anything is made: a room must not be left half built by a bad value.
    check_power_level_override(&power_level_override)?;
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = object_of(raw.json(), "initial_state entries")?;
        let event_type = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_json("initial_state entry without type"))?;
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        // Membership goes through `invite` (and the creator's join); the create event and the
        // power levels have their own fields.
        if matches!(event_type, "m.room.member" | "m.room.create") {
            return Err(ApiError::invalid_param(format!(
                "initial_state may not hold {event_type} events"
            )));
        }
        if event_type.len() > 255 || state_key.len() > 255 {
            return Err(ApiError::invalid_param(
                "initial_state event types and state keys are at most 255 bytes",
            ));
        }
        let content = event
            .get("content")
            .filter(|c| c.is_object())
            .cloned()
            .ok_or_else(|| ApiError::bad_json("initial_state entry without content"))?;
        initial_state.push((event_type.to_owned(), state_key.to_owned(), content));
    }
    // Invitees are checked as /invite checks them, before anything is made.
    for invitee in &body.invite {
        if invitee.server_name() != state.config.server_name {
            if state.federation.is_none() {
                return Err(ApiError::forbidden(
                    "Inviting users of other servers needs federation, which is off on this server",
                ));
            }
            continue;
        }
        // A user an appservice has yet to create (a bridge's ghost) is asked of it.
        if state.storage.user(invitee.as_str()).await?.is_none() && !state.appservices.query_user(invitee).await {
            return Err(ApiError::not_found(format!("No such user: {invitee}")));
        }
    }
    let limits = &state.rate_limits;
    limits.check_user(&limits.room_creation, sender)?;
    for invitee in &body.invite {
        limits.check_invite(sender, invitee.as_str())?;
    }
    let spec = RoomSpec {
        version,
        preset,
        creation_content,
        power_level_override,
        initial_state,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: body.invite.clone(),
        is_direct: body.is_direct,
        alias,
        publish: body.visibility == Visibility::Public,
    };
    let room_id = create_room_with(&state, &sender.user_id, spec).await?;
    // Users of other servers: invited now that the room exists, each through their server. A
    // server that refuses or does not answer leaves the room made, without that invite.
    for invitee in body
        .invite
        .iter()
        .filter(|user| user.server_name() != state.config.server_name)
    {
        if let Err(error) =
            crate::rooms::joins::invite_with(&state, sender, &room_id, invitee, None, body.is_direct).await
        {
            tracing::info!(%room_id, %invitee, %error, "could not invite a user of another server");
        }
    }
    Ok(create_room::v3::Response::new(room_id))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`: idempotent per device
/// and transaction ID.
pub async fn send_message(
    state: AppState,
    request: Ruma<send_message_event::v3::Request>,
) -> ApiResult<send_message_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let content = object_of(body.body.json(), "Event content")?;
    let event_type = body.event_type.to_string();
    let sent = send::send_message(
        &state,
        sender,
        &body.room_id,
        &event_type,
        content,
        Transaction {
            device_id: sender.device_id.as_str(),
            endpoint: "send",
            txn_id: body.txn_id.as_str(),
        },
        massaged_ts(sender, body.timestamp),
    )
    .await?;
    if sent.appended {
        state.presence.active(&state, &sender.user_id).await?;
    }
    Ok(send_message_event::v3::Response::new(sent.event_id))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state(
    state: AppState,
    request: Ruma<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let content = object_of(body.body.json(), "State content")?;
    let event_type = body.event_type.to_string();
    let ts = massaged_ts(sender, body.timestamp);
    let event_id = send::send_state(&state, sender, &body.room_id, &event_type, &body.state_key, content, ts).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

/// The `ts` of a send: honoured for application services (timestamp massaging), ignored for
/// anyone else (as Synapse).
fn massaged_ts(sender: &Sender, ts: Option<ruma::MilliSecondsSinceUnixEpoch>) -> Option<i64> {
    sender.appservice.as_ref()?;
    ts.map(|ts| i64::from(ts.0))
}

/// Renders events for the requesting user and device.
async fn render(state: &AppState, rows: &[EventRow], version: &str, sender: &Sender) -> ApiResult<Vec<Value>> {
    Ok(render_events(state, rows, version, &sender.user_id, sender.device_id.as_str()).await?)
}

fn raw<T>(value: &Value) -> ApiResult<Raw<T>> {
    let json = RawValue::from_string(value.to_string()).map_err(|_| ApiError::internal())?;
    Ok(Raw::from_json(json))
}

async fn room_version_of(state: &AppState, room_id: &OwnedRoomId) -> ApiResult<String> {
    state
        .storage
        .room_version(room_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("Unknown room"))
}

/// The room state a user may see: the current state for members (and everyone in a
/// world-readable room), the state as it was when they left for former members.
pub(super) async fn visible_state(
    state: &AppState,
    room_id: &RoomId,
    user_id: &UserId,
    access: &ReadAccess,
) -> ApiResult<StateMap> {
    if access.sees_current_state() {
        return Ok(state.storage.current_state(room_id.as_str()).await?);
    }
    let member = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.member", user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::forbidden("You are not a member of this room"))?;
    let group = state
        .storage
        .state_group_after(&member.event_id)
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok(state.storage.state_group(group).await?)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn get_state(
    state: AppState,
    request: Ruma<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    let access = read_access(&state, room_id, &sender.user_id).await?;
    let version = room_version_of(&state, room_id).await?;
    let ids: Vec<String> = visible_state(&state, room_id, &sender.user_id, &access)
        .await?
        .into_values()
        .collect();
    let rows = state.storage.events(&ids).await?;
    let events = render(&state, &rows, &version, sender).await?;
    Ok(get_state_events::v3::Response::new(
        events.iter().map(raw).collect::<ApiResult<_>>()?,
    ))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state_event(
    state: AppState,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let access = read_access(&state, &body.room_id, &sender.user_id).await?;
    let key = (body.event_type.to_string(), body.state_key.clone());
    let id = visible_state(&state, &body.room_id, &sender.user_id, &access)
        .await?
        .remove(&key)
        .ok_or_else(|| ApiError::not_found("No such state event"))?;
    let row = state
        .storage
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such state event"))?;
    let version = room_version_of(&state, &body.room_id).await?;
    let event = render(&state, std::slice::from_ref(&row), &version, sender)
        .await?
        .remove(0);
    let wants_event = body.format == ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event;
    let value = if wants_event { event } else { event["content"].clone() };
    let json = RawValue::from_string(value.to_string()).map_err(|_| ApiError::internal())?;
    Ok(get_state_event_for_key::v3::Response::new(json))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_event(
    state: AppState,
    request: Ruma<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    // An event of a room the user may not read is as unknown as one that does not exist
    // (as Synapse): 404, not 403, so the answer tells nothing about the room.
    let (_, row) = visible_event(&state, &body.room_id, &sender.user_id, body.event_id.as_str())
        .await
        .map_err(|error| match error {
            crate::rooms::EventError::Forbidden(_) => ApiError::not_found("Event not found"),
            other => other.into(),
        })?;
    let version = room_version_of(&state, &body.room_id).await?;
    let event = render(&state, std::slice::from_ref(&row), &version, sender)
        .await?
        .remove(0);
    Ok(get_room_event::v3::Response::new(raw(&event)?))
}

/// Pagination tokens are `s<N>`: the gap just before stream position N. Paginating backwards
/// from it reads events below N; forwards, events from N on. A `/sync` token (`s<N>_...`)
/// reads as its events part.
pub(super) fn parse_token(token: &str) -> ApiResult<i64> {
    parse_position(token)
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad_token(token))
}

/// A `/messages` token, which may point into history fetched from other servers (negative
/// positions, below the timeline).
fn parse_history_token(token: &str) -> ApiResult<i64> {
    parse_position(token).ok_or_else(|| bad_token(token))
}

fn parse_position(token: &str) -> Option<i64> {
    token
        .split('_')
        .next()
        .unwrap_or_default()
        .strip_prefix('s')
        .and_then(|n| n.parse().ok())
}

fn bad_token(token: &str) -> ApiError {
    ApiError::invalid_param(format!("Invalid pagination token {token}"))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn messages(
    state: AppState,
    request: Ruma<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let access = read_access(&state, &body.room_id, &sender.user_id).await?;
    let backwards = body.dir == Direction::Backward;
    let from = match &body.from {
        Some(token) => parse_history_token(token)?,
        None if backwards => state.storage.current_event_position().await? + 1,
        None => 0,
    };
    // Start no later than the last readable event.
    let from = if backwards {
        from.min(access.last().saturating_add(1))
    } else {
        from
    };
    let to = body.to.as_deref().map(parse_history_token).transpose()?;
    let limit = u64::from(body.limit).clamp(1, MAX_PAGE);
    let limit = if u64::from(body.limit) == 0 {
        DEFAULT_PAGE
    } else {
        limit
    };
    let filter = &body.filter;
    // A filter's own limit narrows the page further.
    let limit = filter.limit.map_or(limit, |l| limit.min(u64::from(l).max(1)));
    let mut chunk = Vec::new();
    let mut cursor = from;
    let mut exhausted = false;
    // A filter that matches little must not make one request scan a whole room: past this
    // many rows the page ends early, with `end` where the scan stopped.
    let scan_limit = (limit * 20).max(1000);
    let mut scanned = 0;
    // Backwards past the oldest event here, older history may be on other servers (a room
    // joined over federation): fetched once per request, when the reader may see it.
    let mut asked_other_servers = false;
    loop {
        let mut at_start = false;
        while (chunk.len() as u64) < limit && scanned < scan_limit {
            let page = state
                .storage
                .room_events(
                    body.room_id.as_str(),
                    if backwards { cursor } else { cursor - 1 },
                    backwards,
                    limit as i64,
                )
                .await?;
            if page.is_empty() {
                exhausted = true;
                at_start = true;
                break;
            }
            scanned += page.len() as u64;
            for row in page {
                let past_to = to.is_some_and(|to| {
                    if backwards {
                        row.stream_ordering < to
                    } else {
                        row.stream_ordering >= to
                    }
                });
                let beyond = !backwards && row.stream_ordering > access.last();
                if past_to || beyond {
                    exhausted = true;
                    break;
                }
                // The next page starts in the gap beyond this event.
                cursor = if backwards {
                    row.stream_ordering
                } else {
                    row.stream_ordering + 1
                };
                if !access.allows(row.stream_ordering, &row.history_visibility) {
                    continue;
                }
                let wanted_type = filter
                    .types
                    .as_ref()
                    .is_none_or(|types| types.iter().any(|t| t == &row.event_type))
                    && !filter.not_types.iter().any(|t| t == &row.event_type);
                let wanted_sender = filter
                    .senders
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|u| u.as_str() == row.sender))
                    && !filter.not_senders.iter().any(|u| u.as_str() == row.sender);
                let wanted_url = match &filter.url_filter {
                    None => true,
                    Some(url_filter) => {
                        let has_url = serde_json::from_str::<Value>(&row.json)
                            .is_ok_and(|pdu| pdu["content"].get("url").is_some_and(Value::is_string));
                        has_url == (*url_filter == UrlFilter::EventsWithUrl)
                    }
                };
                if wanted_type && wanted_sender && wanted_url {
                    chunk.push(row);
                    if chunk.len() as u64 == limit {
                        break;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        if !(backwards && at_start && !asked_other_servers && (chunk.len() as u64) < limit) {
            break;
        }
        asked_other_servers = true;
        let Some(federation) = &state.federation else {
            break;
        };
        let visibility = crate::rooms::access::history_visibility_now(&state, &body.room_id).await?;
        if !access.allows(cursor.saturating_sub(1), &visibility) {
            break;
        }
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(chunk.len());
        // Older history is a bonus: failing to fetch it never fails the page already read.
        match federation.fetch_history(&body.room_id, wanted).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(room_id = %body.room_id, %error, "fetching older history failed");
                break;
            }
        }
        exhausted = false;
    }
    let version = room_version_of(&state, &body.room_id).await?;
    let events = render(&state, &chunk, &version, sender).await?;
    let mut response = get_message_events::v3::Response::new();
    response.start = format!("s{from}");
    // Backwards, no `end` once the room's start (or the user's view of it) is reached: nothing
    // more will ever come. Forwards there is always an `end`: newer events may still arrive,
    // and the client continues from there (as Synapse).
    response.end = (!exhausted || !backwards).then(|| format!("s{cursor}"));
    response.chunk = events.iter().map(raw).collect::<ApiResult<_>>()?;
    if !filter.lazy_load_options.is_disabled() {
        // Lazy-loading members: the current member events of the page's senders.
        let mut senders: Vec<&str> = chunk.iter().map(|row| row.sender.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let keys: Vec<(String, String)> = senders
            .iter()
            .map(|s| ("m.room.member".to_owned(), (*s).to_owned()))
            .collect();
        let ids: Vec<String> = state
            .storage
            .current_state_entries(body.room_id.as_str(), &keys)
            .await?
            .into_values()
            .collect();
        let members = state.storage.events(&ids).await?;
        response.state = render(&state, &members, &version, sender)
            .await?
            .iter()
            .map(raw)
            .collect::<ApiResult<_>>()?;
    }
    Ok(response)
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact(
    state: AppState,
    request: Ruma<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    // The pipeline checks the right to redact; here only that the target is visible.
    visible_event(&state, &body.room_id, &sender.user_id, body.event_id.as_str()).await?;
    let mut content = serde_json::json!({});
    if let Some(reason) = &body.reason {
        content["reason"] = Value::from(reason.as_str());
    }
    let draft = EventDraft {
        event_type: "m.room.redaction".to_owned(),
        state_key: None,
        content,
        redacts: Some(body.event_id.clone()),
        origin_server_ts: None,
    };
    let transaction = Transaction {
        device_id: sender.device_id.as_str(),
        endpoint: "redact",
        txn_id: body.txn_id.as_str(),
    };
    if let Some(event_id) = send::limit_sends(&state, sender, &body.room_id, Some(&transaction)).await? {
        return Ok(redact_event::v3::Response::new(event_id));
    }
    let appended = append_event(&state, &body.room_id, &sender.user_id, draft, Some(transaction)).await?;
    Ok(redact_event::v3::Response::new(appended.event_id))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`: the event with up to `limit`
/// events around it (half before, half after) and the room state.
pub async fn context(state: AppState, request: Ruma<get_context::v3::Request>) -> ApiResult<get_context::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (access, row) = visible_event(&state, &body.room_id, &sender.user_id, body.event_id.as_str()).await?;
    let limit = u64::from(body.limit).min(MAX_PAGE) as i64;
    let before_count = limit / 2;
    let after_count = limit - before_count;
    let mut before = state
        .storage
        .room_events(body.room_id.as_str(), row.stream_ordering, true, before_count)
        .await?;
    let mut after = state
        .storage
        .room_events(body.room_id.as_str(), row.stream_ordering, false, after_count)
        .await?;
    before.retain(|event| access.allows(event.stream_ordering, &event.history_visibility));
    after.retain(|event| access.allows(event.stream_ordering, &event.history_visibility));
    let version = room_version_of(&state, &body.room_id).await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(format!(
        "s{}",
        before.last().map_or(row.stream_ordering, |e| e.stream_ordering)
    ));
    response.end = Some(format!(
        "s{}",
        after.last().map_or(row.stream_ordering, |e| e.stream_ordering) + 1
    ));
    response.events_before = render(&state, &before, &version, sender)
        .await?
        .iter()
        .map(raw)
        .collect::<ApiResult<_>>()?;
    response.event = Some(raw(&render(&state, std::slice::from_ref(&row), &version, sender)
        .await?
        .remove(0))?);
    response.events_after = render(&state, &after, &version, sender)
        .await?
        .iter()
        .map(raw)
        .collect::<ApiResult<_>>()?;
    // Members see the current state; a former member the state at the event.
    let state_ids: Vec<String> = if access.sees_current_state() {
        state
            .storage
            .current_state(body.room_id.as_str())
            .await?
            .into_values()
            .collect()
    } else {
        let group = state
            .storage
            .state_group_after(&row.event_id)
            .await?
            .ok_or_else(ApiError::internal)?;
        state.storage.state_group(group).await?.into_values().collect()
    };
    let mut state_rows = state.storage.events(&state_ids).await?;
    if !body.filter.lazy_load_options.is_disabled() {
        // Lazy-loading members: only those who sent the returned events (and the user).
        let mut senders: HashSet<&str> = before.iter().chain(&after).map(|e| e.sender.as_str()).collect();
        senders.insert(row.sender.as_str());
        senders.insert(sender.user_id.as_str());
        state_rows.retain(|event| {
            event.event_type != "m.room.member" || event.state_key.as_deref().is_some_and(|key| senders.contains(key))
        });
    }
    response.state = render(&state, &state_rows, &version, sender)
        .await?
        .iter()
        .map(raw)
        .collect::<ApiResult<_>>()?;
    Ok(response)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
pub async fn timestamp_to_event(
    state: AppState,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> ApiResult<get_event_by_timestamp::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let access = read_access(&state, &body.room_id, &sender.user_id).await?;
    let ts = i64::try_from(u64::from(body.ts.0)).map_err(|_| ApiError::invalid_param("ts is out of range"))?;
    let row = state
        .storage
        .event_near_timestamp(body.room_id.as_str(), ts, body.dir == Direction::Forward)
        .await?
        .filter(|row| access.allows(row.stream_ordering, &row.history_visibility))
        .ok_or_else(|| ApiError::not_found("No event found in that direction"))?;
    let event_id = row.event_id.try_into().map_err(|_| ApiError::internal())?;
    let origin_ts = ruma::MilliSecondsSinceUnixEpoch(ruma::UInt::try_from(row.origin_server_ts).unwrap_or_default());
    Ok(get_event_by_timestamp::v1::Response::new(event_id, origin_ts))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade(
    state: AppState,
    request: Ruma<upgrade_room::v3::Request>,
) -> ApiResult<upgrade_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    // An upgrade makes a room.
    state.rate_limits.check_user(&state.rate_limits.room_creation, sender)?;
    let new_room = upgrade_room_to(&state, &body.room_id, &sender.user_id, body.new_version.clone()).await?;
    Ok(upgrade_room::v3::Response::new(new_room))
}
