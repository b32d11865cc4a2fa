//! Devices: `GET /devices`, `GET/PUT/DELETE /devices/{deviceId}`, `POST /delete_devices`.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ruma::api::client::device::{delete_device, delete_devices, get_device, get_devices, update_device};
use serde_json::{Value, json};

use super::account::password_uia;
use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::{self, uia::authorize},
    error::{ApiError, ApiResult},
    storage::{Device, Storage},
};

/// Longest device display name accepted (as Synapse).
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// A device as the spec's `Device` object. Built by hand: ruma's type writes `null` for an
/// unnamed device, and clients (matrix-nio) crash on a `null` where the spec has a string.
fn device_json(device: Device) -> Value {
    let mut out = json!({ "device_id": device.device_id });
    if let Some(name) = device.display_name {
        out["display_name"] = Value::from(name);
    }
    if let Some(ip) = device.last_seen_ip {
        out["last_seen_ip"] = Value::from(ip);
    }
    if let Some(ts) = device.last_seen_ts {
        out["last_seen_ts"] = Value::from(ts);
    }
    out
}

/// `GET /_matrix/client/v3/devices`
pub async fn list(state: AppState, request: Ruma<get_devices::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let devices = state.storage.devices(sender.user_id.as_str()).await?;
    let devices: Vec<Value> = devices.into_iter().map(device_json).collect();
    Ok(Json(json!({ "devices": devices })))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get(state: AppState, request: Ruma<get_device::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let device = state
        .storage
        .device(sender.user_id.as_str(), request.body.device_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("No such device"))?;
    Ok(Json(device_json(device)))
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update(state: AppState, request: Ruma<update_device::v3::Request>) -> ApiResult<Response> {
    let sender = request.sender()?;
    let name = request.body.display_name.as_deref();
    if name.is_some_and(|name| name.chars().count() > MAX_DISPLAY_NAME_CHARS) {
        return Err(ApiError::invalid_param(format!(
            "Device display name must be at most {MAX_DISPLAY_NAME_CHARS} characters"
        )));
    }
    // MSC4190: an appservice creates its users' devices this way (201 when new, as Synapse).
    if crate::appservices::manages_devices(sender) {
        let created =
            crate::appservices::create_device(&state, &sender.user_id, request.body.device_id.as_str(), name).await?;
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        return Ok((status, Json(json!({}))).into_response());
    }
    let user_id = sender.user_id.as_str();
    let mut tx = state.storage.begin_write().await?;
    if !Storage::set_device_display_name(&mut tx, user_id, request.body.device_id.as_str(), name).await? {
        return Err(ApiError::not_found("No such device"));
    }
    // The name is part of the device keys others download: they must fetch them again.
    let position = Storage::record_device_change(&mut tx, user_id, Some(request.body.device_id.as_str())).await?;
    tx.commit().await?;
    crate::e2ee::device_lists_changed(&state, &sender.user_id, position).await?;
    Ok(Json(json!({})).into_response())
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}` (user-interactive auth)
pub async fn delete(
    state: AppState,
    request: Ruma<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    let sender = request.sender()?;
    let device_id = request.body.device_id.as_str();
    if state
        .storage
        .device(sender.user_id.as_str(), device_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("No such device"));
    }
    if crate::appservices::manages_devices(sender) {
        accounts::delete_devices(&state, &sender.user_id, &[device_id], None).await?;
        return Ok(delete_device::v3::Response::new());
    }
    let uia = password_uia(format!("delete_device:{device_id}"), &request, sender);
    let completed = authorize(&state, &uia, request.body.auth.as_ref()).await?;
    accounts::delete_devices(&state, &sender.user_id, &[device_id], Some(&completed.session_id)).await?;
    Ok(delete_device::v3::Response::new())
}

/// `POST /_matrix/client/v3/delete_devices` (user-interactive auth). Unknown device IDs are
/// ignored, as the spec allows.
pub async fn delete_many(
    state: AppState,
    request: Ruma<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    let sender = request.sender()?;
    let mut ids: Vec<&str> = request.body.devices.iter().map(|id| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if crate::appservices::manages_devices(sender) {
        accounts::delete_devices(&state, &sender.user_id, &ids, None).await?;
        return Ok(delete_devices::v3::Response::new());
    }
    // The session is bound to this exact set of devices.
    let uia = password_uia(format!("delete_devices:{}", ids.join(",")), &request, sender);
    let completed = authorize(&state, &uia, request.body.auth.as_ref()).await?;
    accounts::delete_devices(&state, &sender.user_id, &ids, Some(&completed.session_id)).await?;
    Ok(delete_devices::v3::Response::new())
}
