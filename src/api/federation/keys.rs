//! `GET /_matrix/key/v2/server`: this server's signing keys, self-signed.

use std::time::Duration;

use axum::extract::State;
use base64::{Engine, engine::general_purpose::STANDARD};
use hearth_federation::keys::{OldKey, server_key_document};
use ruma::{MilliSecondsSinceUnixEpoch, UInt, api::federation::discovery::get_server_keys, serde::Raw};

use crate::api::{ruma::RumaResponse, state::AppState};
use crate::{
    error::{ApiError, ApiResult},
    storage::now_ms,
};

/// How long other servers may cache our keys before asking again.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

pub async fn server_keys(State(state): State<AppState>) -> ApiResult<RumaResponse<get_server_keys::v2::Response>> {
    let millis = |ms: i64| MilliSecondsSinceUnixEpoch(UInt::try_from(ms.max(0)).unwrap_or_default());
    let mut old = Vec::new();
    for (key_id, document, expired) in state.storage.signing_keys().await? {
        let Some(expired) = expired else { continue };
        let version = key_id.trim_start_matches("ed25519:");
        let Ok(bytes) = STANDARD.decode(&document) else {
            continue;
        };
        let Ok(key) = hearth_federation::ServerKey::from_pkcs8(&bytes, version) else {
            continue;
        };
        old.push(OldKey {
            key_id,
            public_key_base64: key.public_key_base64(),
            expired_ts: millis(expired),
        });
    }
    let valid_until = millis(now_ms() + KEY_VALIDITY.as_millis() as i64);
    let document = server_key_document(&state.config.server_name, &state.signing_key, &old, valid_until)
        .map_err(|_| ApiError::internal())?;
    let raw = serde_json::value::to_raw_value(&document).map_err(|_| ApiError::internal())?;
    Ok(RumaResponse(get_server_keys::v2::Response::new(Raw::from_json(raw))))
}
