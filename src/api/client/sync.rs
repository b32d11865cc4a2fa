//! `/sync`, filters, and the ephemeral endpoints: typing, receipts, read markers, presence.

use std::time::Duration;

use axum::{
    Json,
    extract::{
        RawQuery, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use ruma::{
    api::client::{
        filter::{create_filter, get_filter},
        presence::{get_presence, set_presence},
        read_marker::set_read_marker,
        receipt::create_receipt,
        sync::sync_events::{self, v3::Filter},
        typing::create_typing_event::{self, v3::Typing},
    },
    presence::PresenceState,
};
use serde_json::Value;

use crate::api::state::AppState;
use crate::api::{
    extract::{Authed, MatrixJson, query_param},
    ruma::Ruma,
};
use crate::{
    ephemeral::{
        presence::presence_content,
        receipts::{set_fully_read, set_receipt},
    },
    error::{ApiError, ApiResult},
    streams::StreamToken,
    sync::{
        filter::{parse, resolve},
        sliding::{SlidingRequest, sliding_sync},
        v3::{SyncRequest, sync as run_sync},
        websocket,
    },
};

/// `GET /_matrix/client/v3/sync`
pub async fn sync(state: AppState, request: Ruma<sync_events::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let user_id = sender.user_id.as_str();
    let filter = match &body.filter {
        None => resolve(&state, user_id, None).await?,
        Some(Filter::FilterDefinition(definition)) => definition.clone(),
        Some(Filter::FilterId(id)) => resolve(&state, user_id, Some(id)).await?,
        Some(_) => return Err(ApiError::invalid_param("Unsupported filter")),
    };
    let since = body.since.as_deref().map(StreamToken::parse).transpose()?;
    let set_presence = match &body.set_presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
        other => {
            return Err(ApiError::invalid_param(format!(
                "set_presence must be online, unavailable or offline, not {other}"
            )));
        }
    };
    let _syncing = state.presence.syncing(&state, &sender.user_id, set_presence).await?;
    let max = Duration::from_millis(state.config.sync.max_timeout_ms);
    let timeout = body.timeout.unwrap_or_default().min(max);
    let sync_request = SyncRequest {
        since,
        filter,
        full_state: body.full_state,
        to_device_acknowledged: None,
    };
    let result = run_sync(&state, sender, &sync_request, timeout).await?;
    Ok(Json(result.body))
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
pub async fn create(
    state: AppState,
    request: Ruma<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    sender.ensure_is(&body.user_id, "filters")?;
    let json = serde_json::to_string(&body.filter).map_err(|_| ApiError::internal())?;
    let id = state.storage.create_filter(sender.user_id.as_str(), &json).await?;
    Ok(create_filter::v3::Response::new(id.to_string()))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub async fn get(state: AppState, request: Ruma<get_filter::v3::Request>) -> ApiResult<get_filter::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    sender.ensure_is(&body.user_id, "filters")?;
    let not_found = || ApiError::not_found("No such filter");
    let id: i64 = body.filter_id.parse().map_err(|_| not_found())?;
    let json = state
        .storage
        .filter(sender.user_id.as_str(), id)
        .await?
        .ok_or_else(not_found)?;
    Ok(get_filter::v3::Response::new(parse(&json)?))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub async fn typing(
    state: AppState,
    request: Ruma<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    sender.ensure_is(&body.user_id, "typing notices")?;
    crate::rooms::access::require_member(&state, &body.room_id, &sender.user_id).await?;
    let timeout = match &body.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    state
        .typing
        .set(&state.notifier, &body.room_id, &sender.user_id, timeout);
    // Other servers in the room hear of every notice (a renewal keeps theirs from expiring).
    state.publish(crate::base::Change::Typing {
        room_id: body.room_id.as_str(),
        user_id: sender.user_id.as_str(),
        typing: timeout.is_some(),
    });
    if timeout.is_some() {
        state.presence.active(&state, &sender.user_id).await?;
    }
    Ok(create_typing_event::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn receipt(
    state: AppState,
    request: Ruma<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let receipt_type = body.receipt_type.as_str();
    let thread = body.thread.as_str().unwrap_or("");
    match receipt_type {
        "m.read" | "m.read.private" => {
            set_receipt(
                &state,
                &body.room_id,
                &sender.user_id,
                receipt_type,
                body.event_id.as_str(),
                thread,
            )
            .await?;
            state.presence.active(&state, &sender.user_id).await?;
        }
        "m.fully_read" if thread.is_empty() => {
            set_fully_read(&state, &body.room_id, &sender.user_id, body.event_id.as_str()).await?;
        }
        "m.fully_read" => {
            return Err(ApiError::invalid_param("m.fully_read markers cannot be threaded"));
        }
        other => return Err(ApiError::invalid_param(format!("Unknown receipt type {other}"))),
    }
    Ok(create_receipt::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub async fn read_markers(
    state: AppState,
    request: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let user_id = &sender.user_id;
    if let Some(event_id) = &body.fully_read {
        set_fully_read(&state, &body.room_id, user_id, event_id.as_str()).await?;
    }
    for (receipt_type, event_id) in [
        ("m.read", &body.read_receipt),
        ("m.read.private", &body.private_read_receipt),
    ] {
        if let Some(event_id) = event_id {
            set_receipt(&state, &body.room_id, user_id, receipt_type, event_id.as_str(), "").await?;
            state.presence.active(&state, user_id).await?;
        }
    }
    Ok(set_read_marker::v3::Response::new())
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
pub async fn get_status(state: AppState, request: Ruma<get_presence::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let target = &request.body.user_id;
    if !state.config.presence.enabled {
        // As Synapse: with presence off everyone reads as offline.
        return Ok(Json(serde_json::json!({ "presence": "offline" })));
    }
    // Another server's user is known by sharing a room (checked next); ours must exist.
    let local = target.server_name() == state.config.server_name;
    if local && state.storage.user(target.as_str()).await?.is_none() {
        return Err(ApiError::not_found("Unknown user"));
    }
    if target != &sender.user_id
        && !state
            .storage
            .share_a_room(sender.user_id.as_str(), target.as_str())
            .await?
    {
        return Err(ApiError::forbidden("You do not share a room with this user"));
    }
    let content = match state.storage.presence(target.as_str()).await? {
        Some(row) => presence_content(&row),
        None => serde_json::json!({ "presence": "offline" }),
    };
    Ok(Json(content))
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
pub async fn set_status(
    state: AppState,
    request: Ruma<set_presence::v3::Request>,
) -> ApiResult<set_presence::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    sender.ensure_is(&body.user_id, "presence")?;
    let presence = match &body.presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
        other => {
            return Err(ApiError::invalid_param(format!(
                "presence must be online, unavailable or offline, not {other}"
            )));
        }
    };
    if state.config.presence.enabled {
        state
            .presence
            .set(&state, &sender.user_id, presence, body.status_msg.clone())
            .await?;
    }
    Ok(set_presence::v3::Response::new())
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (MSC4186). `pos`,
/// `timeout` and `set_presence` may come in the query string (as Element X sends them) or the
/// body.
pub async fn sliding(
    State(state): State<AppState>,
    Authed(sender): Authed,
    RawQuery(query): RawQuery,
    MatrixJson(mut request): MatrixJson<SlidingRequest>,
) -> ApiResult<Json<Value>> {
    let query = query.as_deref();
    if let Some(pos) = query_param(query, "pos") {
        request.pos = Some(pos);
    }
    if let Some(timeout) = query_param(query, "timeout") {
        request.timeout = Some(
            timeout
                .parse()
                .map_err(|_| ApiError::invalid_param("timeout must be a number of milliseconds"))?,
        );
    }
    if let Some(presence) = query_param(query, "set_presence") {
        request.set_presence = Some(presence);
    }
    let set_presence = request.set_presence.clone().unwrap_or_else(|| "online".to_owned());
    if !matches!(set_presence.as_str(), "online" | "unavailable" | "offline") {
        return Err(ApiError::invalid_param(
            "set_presence must be online, unavailable or offline",
        ));
    }
    let _syncing = state.presence.syncing(&state, &sender.user_id, &set_presence).await?;
    Ok(Json(sliding_sync(&state, &state.sliding, &sender, request).await?))
}

/// Bytes each WebSocket reserves for reading at first.
const WEBSOCKET_READ_BUFFER: usize = 4096;

/// `GET /_matrix/client/unstable/io.hearth.websocket/stream`: the WebSocket transport (see
/// docs/websocket.md). `since`, `filter`, `set_presence` and `full_state` as for `/sync`; the
/// access token in the `Authorization` header or, for browsers, the `access_token` parameter.
pub async fn websocket(
    State(state): State<AppState>,
    Authed(sender): Authed,
    RawQuery(query): RawQuery,
    headers: http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|_| {
        ApiError::unrecognized(
            http::StatusCode::BAD_REQUEST,
            "This endpoint speaks WebSocket only (Upgrade: websocket, subprotocol m.json)",
        )
    })?;
    let offered = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    if !offered.is_empty() && !offered.contains(&"m.json") {
        return Err(ApiError::invalid_param("The only subprotocol is m.json"));
    }
    let query = query.as_deref();
    let user_id = sender.user_id.as_str();
    let filter = resolve(&state, user_id, query_param(query, "filter").as_deref()).await?;
    let since = query_param(query, "since")
        .as_deref()
        .map(StreamToken::parse)
        .transpose()?;
    let full_state = match query_param(query, "full_state").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_param("full_state must be true or false")),
    };
    let set_presence = query_param(query, "set_presence").unwrap_or_else(|| "online".to_owned());
    if !matches!(set_presence.as_str(), "online" | "unavailable" | "offline") {
        return Err(ApiError::invalid_param(
            "set_presence must be online, unavailable or offline",
        ));
    }
    let token = bearer_or_query_token(&headers, query).ok_or_else(ApiError::missing_token)?;
    let presence = state.presence.syncing(&state, &sender.user_id, &set_presence).await?;
    // The socket's pushes carry no acknowledgement: to-device messages are deleted when the
    // client presents a token past them, here at connect.
    let request = SyncRequest {
        since,
        filter,
        full_state,
        to_device_acknowledged: Some(since.map_or(0, |s| s.get(crate::streams::token::Stream::ToDevice))),
    };
    let limit = state.config.limits.max_request_body_bytes;
    Ok(upgrade
        .protocols(["m.json"])
        // The library's default reserves 128 KiB per socket up front; client frames are small
        // and the buffer grows when one is not.
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| websocket::serve(state.services.clone(), sender, token, request, presence, socket))
        .into_response())
}

fn bearer_or_query_token(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned())
        .or_else(|| query_param(query, "access_token"))
}
