//! Dehydrated devices (MSC3814, unstable `org.matrix.msc3814.v1`): a device kept on the
//! server, without an access token, that receives to-device messages while the user has no
//! device online; a new login fetches its encrypted pickle, rehydrates it and reads what it
//! received.

use axum::Json;
use ruma::{
    api::client::dehydrated_device::{
        delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
    },
    serde::Raw,
};
use serde_json::{Value, json};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::sessions::Sender,
    e2ee::{self, TO_DEVICE_PER_SYNC, keys},
    error::{ApiError, ApiResult},
    streams::token::Stream,
};

fn none_found() -> ApiError {
    ApiError::not_found("No dehydrated device")
}

/// `PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device`: replaces the
/// user's dehydrated device, with its keys (checked as `/keys/upload` checks them).
pub async fn put(
    state: AppState,
    request: Ruma<put_dehydrated_device::unstable::Request>,
) -> ApiResult<put_dehydrated_device::unstable::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let user_id = sender.user_id.as_str();
    let current = state.storage.dehydrated_device(user_id).await?.map(|(id, _)| id);
    if current.as_deref() != Some(body.device_id.as_str())
        && state.storage.device(user_id, body.device_id.as_str()).await?.is_some()
    {
        return Err(ApiError::invalid_param("That device ID belongs to a logged-in device"));
    }
    let dehydrated = Sender {
        user_id: sender.user_id.clone(),
        device_id: body.device_id.clone(),
        is_guest: sender.is_guest,
        is_admin: false,
        appservice: None,
    };
    let upload = keys::check_upload(
        &state,
        &dehydrated,
        Some(&body.device_keys),
        &body.one_time_keys,
        &body.fallback_keys,
    )
    .await?;
    body.device_data
        .deserialize()
        .map_err(|e| ApiError::bad_json(format!("Invalid device_data: {e}")))?;
    let position = state
        .storage
        .put_dehydrated_device(
            user_id,
            body.device_id.as_str(),
            body.initial_device_display_name.as_deref(),
            body.device_data.json().get(),
        )
        .await?;
    e2ee::device_lists_changed(&state, &sender.user_id, position).await?;
    keys::store_upload(&state, &dehydrated, &upload).await?;
    Ok(put_dehydrated_device::unstable::Response::new(body.device_id.clone()))
}

/// `GET .../dehydrated_device`
pub async fn get(
    state: AppState,
    request: Ruma<get_dehydrated_device::unstable::Request>,
) -> ApiResult<get_dehydrated_device::unstable::Response> {
    let sender = request.sender()?;
    let (device_id, data) = state
        .storage
        .dehydrated_device(sender.user_id.as_str())
        .await?
        .ok_or_else(none_found)?;
    let data = Raw::from_json_string(data).map_err(|_| ApiError::internal())?;
    Ok(get_dehydrated_device::unstable::Response::new(device_id.into(), data))
}

/// `DELETE .../dehydrated_device`
pub async fn delete(
    state: AppState,
    request: Ruma<delete_dehydrated_device::unstable::Request>,
) -> ApiResult<delete_dehydrated_device::unstable::Response> {
    let sender = request.sender()?;
    let (device_id, position) = state
        .storage
        .delete_dehydrated_device(sender.user_id.as_str())
        .await?
        .ok_or_else(none_found)?;
    e2ee::device_lists_changed(&state, &sender.user_id, position).await?;
    Ok(delete_dehydrated_device::unstable::Response::new(device_id.into()))
}

/// `POST .../dehydrated_device/{deviceId}/events`: the to-device messages the dehydrated
/// device received, from `next_batch` on (those before it are acknowledged and deleted).
pub async fn events(state: AppState, request: Ruma<get_events::unstable::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let current = state.storage.dehydrated_device(sender.user_id.as_str()).await?;
    if current.is_none_or(|(id, _)| id != body.device_id.as_str()) {
        return Err(none_found());
    }
    let since = match body.next_batch.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|since| *since >= 0)
            .ok_or_else(|| ApiError::invalid_param("Invalid next_batch"))?,
    };
    let dehydrated = Sender {
        user_id: sender.user_id.clone(),
        device_id: body.device_id.clone(),
        is_guest: sender.is_guest,
        is_admin: false,
        appservice: None,
    };
    let until = state.notifier.position(Stream::ToDevice);
    let since = since.min(until);
    let (events, next) = e2ee::to_device_batch(&state, &dehydrated, since, since, until, TO_DEVICE_PER_SYNC).await?;
    Ok(Json(json!({ "events": events, "next_batch": next.to_string() })))
}
