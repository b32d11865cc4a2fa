//! Account management: `POST /account/password`, `POST /account/deactivate`,
//! `GET /account/3pid`.

use ruma::api::client::{
    account::{ThirdPartyIdRemovalStatus, change_password, deactivate, get_3pids},
    uiaa::{AuthFlow, AuthType},
};

use super::ruma::Ruma;
use crate::{
    accounts::{
        self,
        sessions::Sender,
        uia::{UiaRequest, authorize},
    },
    error::{ApiError, ApiResult},
    state::AppState,
    storage::Storage,
};

/// The flows for operations that re-check the password of a logged-in user.
pub fn password_uia<'a>(purpose: &'static str, sender: &'a Sender) -> UiaRequest<'a> {
    UiaRequest {
        purpose,
        flows: vec![AuthFlow::new(vec![AuthType::Password])],
        user_id: Some(&sender.user_id),
    }
}

/// Ends a UIA session whose operation has been carried out.
pub async fn finish_uia(state: &AppState, session_id: &str) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    Storage::delete_uia_session(&mut tx, session_id).await?;
    tx.commit()
        .await
        .map_err(crate::storage::StorageError::from)?;
    Ok(())
}

/// `POST /_matrix/client/v3/account/password`
pub async fn change_password(
    state: AppState,
    request: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    // Without a token the spec allows a reset proven by email; we hold no email addresses.
    let sender = request.sender()?;
    forbid_guests(sender)?;
    let body = &request.body;
    let completed = authorize(
        &state.storage,
        &password_uia("change_password", sender),
        body.auth.as_ref(),
    )
    .await?;
    accounts::change_password(
        &state,
        &sender.user_id,
        &body.new_password,
        Some(sender.device_id.as_str()),
        body.logout_devices,
    )
    .await?;
    finish_uia(&state, &completed.session_id).await?;
    Ok(change_password::v3::Response::new())
}

/// `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    state: AppState,
    request: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let sender = request.sender()?;
    forbid_guests(sender)?;
    let completed = authorize(
        &state.storage,
        &password_uia("deactivate", sender),
        request.body.auth.as_ref(),
    )
    .await?;
    accounts::deactivate_account(&state, &sender.user_id, request.body.erase).await?;
    finish_uia(&state, &completed.session_id).await?;
    // We never bound third-party IDs at an identity server, so there was nothing to unbind.
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

/// `GET /_matrix/client/v3/account/3pid`: we store no third-party IDs, so the list is empty.
pub async fn third_party_ids(
    _state: AppState,
    request: Ruma<get_3pids::v3::Request>,
) -> ApiResult<get_3pids::v3::Response> {
    request.sender()?;
    Ok(get_3pids::v3::Response::new(Vec::new()))
}

/// Used by handlers that need a logged-in, non-guest user.
pub fn forbid_guests(sender: &Sender) -> ApiResult<()> {
    if sender.is_guest {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::GuestAccessForbidden,
            "Guests cannot do this",
        ));
    }
    Ok(())
}
