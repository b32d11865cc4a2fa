//! `POST /webhook/{roomIdOrAlias}`: posts a message into a room as a ghost.
//!
//! ```text
//! POST /webhook/%23alerts:example.org            (a `#` must be sent as %23)
//! Authorization: Bearer <webhook_secret>
//! {"text": "Deploy finished", "username": "CI"}  (username optional)
//! → 200 {"event_id": "$…", "room_id": "!…", "user_id": "@webhook_ci:example.org"}
//! ```

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequestParts, Path, State},
    routing::post,
};
use http::{StatusCode, request::Parts};
use ruma::{OwnedRoomId, RoomAliasId, RoomId, events::room::message::RoomMessageEventContent};
use serde::Deserialize;

use crate::{
    bridge::Bridge,
    common::{
        auth::{bearer_token, tokens_match},
        error::MatrixError,
        homeserver::HomeserverError,
    },
    ghosts,
};

/// A Matrix event may be 64 KiB in all; this leaves room for the rest of it.
const MAX_TEXT_BYTES: usize = 32 * 1024;

pub struct WebhookState {
    pub bridge: Arc<Bridge>,
    pub secret: String,
    /// Used when a call gives no `username`.
    pub default_username: String,
}

pub fn routes(state: WebhookState) -> Router {
    Router::new()
        .route("/webhook/{room}", post(post_message))
        .with_state(Arc::new(state))
}

/// The body a webhook caller sends.
#[derive(Deserialize)]
struct WebhookMessage {
    text: String,
    username: Option<String>,
}

/// Proof that the caller knows the webhook secret (`Authorization: Bearer <webhook_secret>`).
struct WebhookCaller;

impl FromRequestParts<Arc<WebhookState>> for WebhookCaller {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<WebhookState>) -> Result<Self, MatrixError> {
        match bearer_token(&parts.headers) {
            None => Err(MatrixError::missing_token()),
            Some(token) if tokens_match(token, &state.secret) => Ok(Self),
            Some(_) => Err(MatrixError::forbidden("Wrong webhook secret")),
        }
    }
}

async fn post_message(
    State(state): State<Arc<WebhookState>>,
    _: WebhookCaller,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, MatrixError> {
    // Any Content-Type: curl users forget the header, and the body says what it is.
    let message: WebhookMessage =
        serde_json::from_slice(&body).map_err(|error| bad_request("M_BAD_JSON", format!("Bad body: {error}")))?;
    if message.text.trim().is_empty() {
        return Err(bad_request("M_BAD_JSON", "`text` is empty"));
    }
    if message.text.len() > MAX_TEXT_BYTES {
        return Err(MatrixError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "`text` is too long",
        ));
    }
    let username = message.username.as_deref().unwrap_or(&state.default_username);
    let bridge = &state.bridge;
    let ghost = ghosts::ghost_user_id(username, &bridge.server_name)
        .ok_or_else(|| bad_request("M_INVALID_PARAM", "`username` needs a letter or digit"))?;

    let room_id = resolve_room(bridge, &room).await?;
    bridge.ensure_bot_joined(&room_id).await.map_err(|error| match error {
        HomeserverError::Refused { status, .. } if status == StatusCode::FORBIDDEN => MatrixError::forbidden(format!(
            "The bridge may not join {room_id}: invite {} first",
            bridge.homeserver.bot
        )),
        error => homeserver_failed(&error),
    })?;
    bridge
        .ensure_ghost(&ghost, username.trim())
        .await
        .map_err(|error| homeserver_failed(&error))?;
    bridge
        .ensure_ghost_joined(&room_id, &ghost)
        .await
        .map_err(|error| homeserver_failed(&error))?;
    let content = RoomMessageEventContent::text_plain(message.text);
    let event_id = bridge
        .homeserver
        .send_message(&room_id, &content, Some(&ghost))
        .await
        .map_err(|error| homeserver_failed(&error))?;
    tracing::info!(%room_id, %ghost, %event_id, "posted a webhook message");
    Ok(Json(
        serde_json::json!({ "event_id": event_id, "room_id": room_id, "user_id": ghost }),
    ))
}

/// A room ID (`!…`) as it is, an alias (`#…`) through the room directory.
async fn resolve_room(bridge: &Bridge, room: &str) -> Result<OwnedRoomId, MatrixError> {
    if room.starts_with('#') {
        let alias =
            <&RoomAliasId>::try_from(room).map_err(|error| bad_request("M_INVALID_PARAM", error.to_string()))?;
        return bridge
            .homeserver
            .resolve_alias(alias)
            .await
            .map_err(|error| match error {
                HomeserverError::Refused { status, .. } if status == StatusCode::NOT_FOUND => {
                    MatrixError::not_found(format!("No room has the alias {alias}"))
                }
                error => homeserver_failed(&error),
            });
    }
    RoomId::parse(room).map_err(|error| {
        bad_request(
            "M_INVALID_PARAM",
            format!("Not a room ID or alias ({error}); send `#` as %23"),
        )
    })
}

fn bad_request(errcode: &'static str, message: impl Into<String>) -> MatrixError {
    MatrixError::new(StatusCode::BAD_REQUEST, errcode, message)
}

/// The homeserver refused or could not be reached: 502, with its answer for the caller.
fn homeserver_failed(error: &HomeserverError) -> MatrixError {
    tracing::warn!(%error, "a webhook call failed at the homeserver");
    MatrixError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", error.to_string())
}
