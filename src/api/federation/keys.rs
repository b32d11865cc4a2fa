//! Keys: `GET /_matrix/key/v2/server` (this server's signing keys, self-signed) and the
//! notary endpoints `GET /_matrix/key/v2/query/{serverName}` and `POST /_matrix/key/v2/query`
//! (other servers' keys as we fetched and checked them, with our signature added).

use std::time::Duration;

use axum::extract::State;
use base64::{Engine, engine::general_purpose::STANDARD};
use hearth_federation::keys::{OldKey, server_key_document};
use ruma::{
    CanonicalJsonObject, ServerName,
    api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys},
    serde::Raw,
};

use crate::api::{
    federation::federation,
    ruma::{Ruma, RumaResponse},
    state::AppState,
};
use crate::{
    error::{ApiError, ApiResult},
    federation::keys::millis,
    storage::now_ms,
};

/// How long other servers may cache our keys before asking again.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Servers one notary query may ask about.
const MAX_SERVERS_PER_QUERY: usize = 100;

pub async fn server_keys(State(state): State<AppState>) -> ApiResult<RumaResponse<get_server_keys::v2::Response>> {
    let document = own_key_document(&state).await?;
    Ok(RumaResponse(get_server_keys::v2::Response::new(raw(&document)?)))
}

/// This server's key document, signed now.
async fn own_key_document(state: &AppState) -> ApiResult<CanonicalJsonObject> {
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
            expired_ts: millis(expired.max(0) as u64),
        });
    }
    let valid_until = millis((now_ms() + KEY_VALIDITY.as_millis() as i64) as u64);
    server_key_document(&state.config.server_name, &state.signing_key, &old, valid_until)
        .map_err(|_| ApiError::internal())
}

pub async fn query_keys(
    state: AppState,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> ApiResult<get_remote_server_keys::v2::Response> {
    limit_by_address(&state, request.client_ip)?;
    let minimum = u64::from(request.body.minimum_valid_until_ts.0);
    let documents = notarised(&state, &request.body.server_name, minimum).await?;
    Ok(get_remote_server_keys::v2::Response::new(documents))
}

pub async fn query_keys_batch(
    state: AppState,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> ApiResult<get_remote_server_keys_batch::v2::Response> {
    limit_by_address(&state, request.client_ip)?;
    if request.body.server_keys.len() > MAX_SERVERS_PER_QUERY {
        return Err(ApiError::invalid_param(format!(
            "At most {MAX_SERVERS_PER_QUERY} servers per query"
        )));
    }
    let mut documents = Vec::new();
    for (server, criteria) in &request.body.server_keys {
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.0))
            .max()
            .unwrap_or_else(|| now_ms() as u64);
        documents.extend(notarised(&state, server, minimum).await?);
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(documents))
}

/// The key documents we can vouch for: ours, or another server's as we checked it.
async fn notarised<T>(state: &AppState, server: &ServerName, minimum: u64) -> ApiResult<Vec<Raw<T>>> {
    let federation = federation(state)?;
    if server == state.config.server_name {
        return Ok(vec![raw(&own_key_document(state).await?)?]);
    }
    if federation.is_blocked(server) {
        return Ok(Vec::new());
    }
    match federation.notarise(server, minimum).await {
        Ok(Some(document)) => Ok(vec![raw(&document)?]),
        Ok(None) => Ok(Vec::new()),
        Err(_) => Err(ApiError::internal()),
    }
}

/// The notary endpoints are unauthenticated and may make us fetch from other servers: each
/// caller's address gets the per-server inbound rate.
fn limit_by_address(state: &AppState, address: std::net::IpAddr) -> ApiResult<()> {
    federation(state)?
        .inbound_limits
        .check(&format!("address {address}"))
        .map_err(|limited| ApiError::limit_exceeded(limited.retry_after))
}

fn raw<T>(document: &CanonicalJsonObject) -> ApiResult<Raw<T>> {
    let json = serde_json::value::to_raw_value(document).map_err(|_| ApiError::internal())?;
    Ok(Raw::from_json(json))
}
