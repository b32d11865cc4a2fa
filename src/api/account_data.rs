//! Global account data: `GET/PUT /user/{userId}/account_data/{type}`. Stored with a stream
//! position; `/sync` delivers changes.

use ruma::{
    api::client::config::{get_global_account_data, set_global_account_data},
    serde::Raw,
};
use serde_json::value::RawValue;

use super::ruma::Ruma;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// Types the server manages itself and clients may not write through this endpoint (spec).
const SERVER_MANAGED_TYPES: &[&str] = &["m.push_rules"];

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set(
    state: AppState,
    request: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    let sender = request.sender()?;
    sender.ensure_is(&request.body.user_id, "account data")?;
    let data_type = request.body.event_type.to_string();
    if SERVER_MANAGED_TYPES.contains(&data_type.as_str()) {
        // The spec's status for server-controlled types is 405, with M_BAD_JSON.
        return Err(ApiError::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            ruma::api::error::ErrorKind::BadJson,
            format!("{data_type} is controlled by the server and cannot be set by clients"),
        ));
    }
    let content = request.body.data.json().get();
    if !content.trim_start().starts_with('{') {
        return Err(ApiError::bad_json(
            "Account data content must be a JSON object",
        ));
    }
    state
        .storage
        .set_global_account_data(sender.user_id.as_str(), &data_type, content)
        .await?;
    Ok(set_global_account_data::v3::Response::new())
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get(
    state: AppState,
    request: Ruma<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    let sender = request.sender()?;
    sender.ensure_is(&request.body.user_id, "account data")?;
    let data_type = request.body.event_type.to_string();
    let content = state
        .storage
        .global_account_data(sender.user_id.as_str(), &data_type)
        .await?
        .ok_or_else(|| ApiError::not_found("No account data of that type"))?;
    let raw = RawValue::from_string(content).map_err(|_| ApiError::internal())?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        raw,
    )))
}
