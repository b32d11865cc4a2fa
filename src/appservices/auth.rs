//! Requests made with an appservice's `as_token`: the appservice acts as its own user
//! (`sender_localpart`), or as a user of its namespace named by `user_id` (spec: "Identity
//! assertion"), on a device of that user named by `device_id` (MSC4326, as encrypted bridges
//! use it).

use std::sync::Arc;

use hearth_appservices::Appservice;
use http::StatusCode;
use ruma::{OwnedDeviceId, UserId, api::error::ErrorKind};

use crate::{
    accounts::sessions::Sender,
    base::Base,
    error::{ApiError, ApiResult},
};

/// The device of an appservice request that names none (reserved: no real device has it).
pub use crate::accounts::sessions::NO_DEVICE;

/// Who acts: `None` when the token is no appservice's (it is then an ordinary access token).
/// `user_id` and `device_id` are the request's query parameters.
pub async fn authenticate(
    base: &Base,
    token: &str,
    user_id: Option<&str>,
    device_id: Option<&str>,
) -> ApiResult<Option<Sender>> {
    let registry = base.appservice_registry();
    let Some(service) = registry.by_as_token(token) else {
        return Ok(None);
    };
    let user_id = match user_id {
        Some(asserted) => UserId::parse(asserted)
            .map_err(|_| ApiError::invalid_param(format!("user_id {asserted:?} is not a user ID")))?,
        None => service.sender.clone(),
    };
    if !service.is_user_in_namespace(user_id.as_str()) || user_id.server_name() != base.config.server_name {
        return Err(ApiError::forbidden(format!(
            "Application service cannot masquerade as this user ({user_id})"
        )));
    }
    match base.storage.user(user_id.as_str()).await? {
        Some(user) if !user.is_deactivated() => {}
        Some(_) => return Err(ApiError::forbidden(format!("{user_id} has been deactivated"))),
        None => {
            return Err(ApiError::forbidden(format!(
                "Application service has not registered this user ({user_id})"
            )));
        }
    }
    let device_id = match device_id {
        Some(device_id) => {
            if base.storage.device(user_id.as_str(), device_id).await?.is_none() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::UnknownDevice,
                    format!(
                        "Application service trying to use a device that doesn't exist ('{device_id}' for {user_id})"
                    ),
                ));
            }
            OwnedDeviceId::from(device_id)
        }
        None => OwnedDeviceId::from(NO_DEVICE),
    };
    Ok(Some(Sender {
        user_id,
        device_id,
        is_guest: false,
        is_admin: false,
        appservice: Some(Arc::clone(service)),
    }))
}

/// The appservice of a request, or 403 for anyone else (ping, the network directory).
pub fn require_appservice(sender: &Sender) -> ApiResult<&Arc<Appservice>> {
    sender
        .appservice
        .as_ref()
        .ok_or_else(|| ApiError::forbidden("Only an application service can do this"))
}
