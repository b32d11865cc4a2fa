//! Encryption keys and to-device messages: `/keys/upload`, `/keys/query`, `/keys/claim`,
//! `/keys/changes`, `/keys/device_signing/upload`, `/keys/signatures/upload`,
//! `/sendToDevice/{eventType}/{txnId}`.

use std::{collections::BTreeMap, time::Duration};

use axum::Json;
use ruma::{
    UInt,
    api::client::{
        keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
        to_device::send_event_to_device,
    },
};
use serde_json::{Value, json};

use super::account::password_uia;
use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::uia::authorize,
    e2ee::{self, keys},
    error::{ApiError, ApiResult},
    streams::token::StreamToken,
};

/// `POST /_matrix/client/v3/keys/upload`
pub async fn upload(state: AppState, request: Ruma<upload_keys::v3::Request>) -> ApiResult<upload_keys::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let upload = keys::check_upload(
        &state,
        sender,
        body.device_keys.as_ref(),
        &body.one_time_keys,
        &body.fallback_keys,
    )
    .await?;
    let counts = keys::store_upload(&state, sender, &upload).await?;
    Ok(upload_keys::v3::Response::new(
        counts
            .into_iter()
            .map(|(algorithm, count)| (algorithm.into(), UInt::try_from(count).unwrap_or_default()))
            .collect(),
    ))
}

/// `POST /_matrix/client/v3/keys/query`
pub async fn query(state: AppState, request: Ruma<get_keys::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let requested = &request.body.device_keys;
    let mut answer = keys::query(&state, Some(&sender.user_id), requested).await?;
    let remote: BTreeMap<_, _> = requested
        .iter()
        .filter(|(user_id, _)| user_id.server_name() != state.config.server_name)
        .map(|(user_id, devices)| (user_id.clone(), devices.clone()))
        .collect();
    if remote.is_empty() {
        return Ok(Json(answer));
    }
    let Some(federation) = &state.federation else {
        for user_id in remote.keys() {
            answer["failures"][user_id.server_name().as_str()] =
                json!({ "status": 503, "message": "Federation is disabled on this server" });
        }
        return Ok(Json(answer));
    };
    let found = federation
        .query_remote_keys(&sender.user_id, &remote, remote_timeout(request.body.timeout))
        .await?;
    for (field, entries) in [
        ("device_keys", found.device_keys),
        ("master_keys", found.master_keys),
        ("self_signing_keys", found.self_signing_keys),
        ("failures", found.failures),
    ] {
        if let Some(target) = answer[field].as_object_mut() {
            target.extend(entries);
        }
    }
    Ok(Json(answer))
}

/// How long to wait for other servers' keys: the client's `timeout`, 10 s by default, at most
/// a minute.
fn remote_timeout(asked: Option<Duration>) -> Duration {
    asked.unwrap_or(Duration::from_secs(10)).min(Duration::from_secs(60))
}

/// `POST /_matrix/client/v3/keys/claim`
pub async fn claim(state: AppState, request: Ruma<claim_keys::v3::Request>) -> ApiResult<Json<Value>> {
    request.sender()?;
    let requested = &request.body.one_time_keys;
    let mut answer = keys::claim(&state, requested).await?;
    let remote: BTreeMap<_, _> = requested
        .iter()
        .filter(|(user_id, _)| user_id.server_name() != state.config.server_name)
        .map(|(user_id, devices)| (user_id.clone(), devices.clone()))
        .collect();
    if remote.is_empty() {
        return Ok(Json(answer));
    }
    let (claimed, failures) = match &state.federation {
        Some(federation) => {
            federation
                .claim_remote_keys(&remote, remote_timeout(request.body.timeout))
                .await
        }
        None => (
            serde_json::Map::new(),
            remote
                .keys()
                .map(|user_id| {
                    (
                        user_id.server_name().to_string(),
                        json!({ "status": 503, "message": "Federation is disabled on this server" }),
                    )
                })
                .collect(),
        ),
    };
    if let Some(target) = answer["one_time_keys"].as_object_mut() {
        target.extend(claimed);
    }
    if let Some(target) = answer["failures"].as_object_mut() {
        target.extend(failures);
    }
    Ok(Json(answer))
}

/// `GET /_matrix/client/v3/keys/changes?from=&to=`
pub async fn changes(
    state: AppState,
    request: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let sender = request.sender()?;
    let now = state.notifier.current();
    let from = StreamToken::parse(&request.body.from)?.clamp_to(&now);
    let to = StreamToken::parse(&request.body.to)?.clamp_to(&now);
    let (changed, left) = e2ee::device_list_changes(&state, sender.user_id.as_str(), &from, &to).await?;
    let parse =
        |users: std::collections::BTreeSet<String>| users.into_iter().filter_map(|u| u.try_into().ok()).collect();
    Ok(get_key_changes::v3::Response::new(parse(changed), parse(left)))
}

fn raw<T>(key: Option<&ruma::serde::Raw<T>>) -> Option<&str> {
    key.map(|key| key.json().get())
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`. Replacing cross-signing keys needs
/// user-interactive auth; the first upload, or uploading the same keys again, does not
/// (spec v1.11, MSC3967).
pub async fn upload_signing_keys(
    state: AppState,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<upload_signing_keys::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let stored = state.storage.cross_signing_keys(sender.user_id.as_str()).await?;
    let checked = keys::check_cross_signing_keys(
        sender,
        [
            ("master", raw(body.master_key.as_ref())),
            ("self_signing", raw(body.self_signing_key.as_ref())),
            ("user_signing", raw(body.user_signing_key.as_ref())),
        ],
        &stored,
    )?;
    let unchanged = checked.iter().all(|key| {
        stored
            .iter()
            .any(|s| s.key_type == key.key_type && s.key_json == key.json)
    });
    if unchanged {
        return Ok(upload_signing_keys::v3::Response::new());
    }
    let has_master = stored.iter().any(|s| s.key_type == "master");
    let session = if has_master {
        let uia = password_uia("device_signing_upload".into(), &request, sender);
        Some(authorize(&state, &uia, body.auth.as_ref()).await?.session_id)
    } else {
        None
    };
    keys::store_cross_signing_keys(&state, &sender.user_id, &checked, session.as_deref()).await?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
pub async fn upload_signatures(
    state: AppState,
    request: Ruma<upload_signatures::v3::Request>,
) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let body = serde_json::to_value(&request.body.signed_keys).map_err(|_| ApiError::bad_json("Invalid body"))?;
    Ok(Json(keys::upload_signatures(&state, sender, &body).await?))
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
pub async fn send_to_device(
    state: AppState,
    request: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<send_event_to_device::v3::Response> {
    let sender = request.sender()?;
    state.rate_limits.check_user(&state.rate_limits.to_device, sender)?;
    e2ee::to_device::send(&state, sender, &request.body).await?;
    Ok(send_event_to_device::v3::Response::new())
}
