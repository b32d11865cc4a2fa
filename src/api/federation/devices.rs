//! What other servers ask about our users' devices and keys: `GET /user/devices/{userId}`,
//! `POST /user/keys/query` and `POST /user/keys/claim`.

use axum::Json;
use ruma::api::federation::{
    device::get_devices,
    keys::{claim_keys, get_keys},
};
use serde_json::{Map, Value, json};

use crate::{
    api::{ruma::Ruma, state::AppState},
    e2ee::keys,
    error::{ApiError, ApiResult},
};

/// A local user's devices (with their keys and names), cross-signing keys, and the
/// `stream_id` of their last device list change, which later `m.device_list_update`s chain
/// on.
pub async fn user_devices(state: AppState, request: Ruma<get_devices::v1::Request>) -> ApiResult<Json<Value>> {
    request.origin()?;
    let user_id = &request.body.user_id;
    if user_id.server_name() != state.config.server_name {
        return Err(ApiError::invalid_param("The user is not on this server"));
    }
    let owner = user_id.as_str();
    let storage = &state.storage;
    let stream_id = storage.last_device_list_change(owner, i64::MAX).await?.unwrap_or(0);
    let requested = [(user_id.clone(), Vec::new())].into_iter().collect();
    let found = keys::query(&state, None, &requested).await?;
    let mut devices = Vec::new();
    for device in storage.devices(owner).await? {
        let Some(keys) = found["device_keys"][owner].get(&device.device_id) else {
            // A device with no keys yet cannot take part in encryption.
            continue;
        };
        let mut keys = keys.clone();
        if let Some(object) = keys.as_object_mut() {
            object.remove("unsigned");
        }
        // Device names stay on this server (as Synapse's default): they often say where
        // someone is or what they carry.
        devices.push(json!({ "device_id": device.device_id, "keys": keys }));
    }
    let mut answer = json!({ "user_id": owner, "stream_id": stream_id, "devices": devices });
    for (field, from) in [("master_key", "master_keys"), ("self_signing_key", "self_signing_keys")] {
        if let Some(key) = found[from].get(owner) {
            answer[field] = key.clone();
        }
    }
    Ok(Json(answer))
}

/// Keys of our users, for another server's client.
pub async fn user_keys_query(state: AppState, request: Ruma<get_keys::v1::Request>) -> ApiResult<Json<Value>> {
    request.origin()?;
    let mut answer = keys::query(&state, None, &request.body.device_keys).await?;
    if let Some(object) = answer.as_object_mut() {
        // Another server's users never see our users' user-signing keys, nor device names.
        object.remove("user_signing_keys");
        object.remove("failures");
        if let Some(users) = object.get_mut("device_keys").and_then(Value::as_object_mut) {
            for devices in users.values_mut().filter_map(Value::as_object_mut) {
                for key in devices.values_mut().filter_map(Value::as_object_mut) {
                    key.remove("unsigned");
                }
            }
        }
    }
    Ok(Json(answer))
}

/// One-time keys of our users' devices, for another server's client.
pub async fn user_keys_claim(state: AppState, request: Ruma<claim_keys::v1::Request>) -> ApiResult<Json<Value>> {
    request.origin()?;
    let answer = keys::claim(&state, &request.body.one_time_keys).await?;
    let claimed = answer
        .get("one_time_keys")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(Json(json!({ "one_time_keys": claimed })))
}
