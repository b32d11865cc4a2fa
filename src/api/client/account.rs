//! Account management: `POST /account/password`, `POST /account/deactivate`,
//! `GET /account/3pid`.

use ruma::api::client::{
    account::{ThirdPartyIdRemovalStatus, change_password, deactivate, get_3pids},
    uiaa::{AuthFlow, AuthType},
};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::{
        self,
        sessions::Sender,
        uia::{UiaRequest, authorize},
    },
    error::{ApiError, ApiResult},
};

/// The flows for operations that re-check the password of a logged-in user. `purpose` names
/// the operation and what it acts on.
pub fn password_uia<'a>(purpose: String, request: &'a Ruma<impl Sized>, sender: &'a Sender) -> UiaRequest<'a> {
    UiaRequest {
        purpose,
        flows: vec![AuthFlow::new(vec![AuthType::Password])],
        user_id: Some(&sender.user_id),
        client_ip: request.client_ip,
    }
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
    let uia = password_uia("change_password".into(), &request, sender);
    let completed = authorize(&state, &uia, body.auth.as_ref()).await?;
    accounts::change_password(
        &state,
        &sender.user_id,
        &body.new_password,
        Some(sender.device_id.as_str()),
        body.logout_devices,
        &completed.session_id,
    )
    .await?;
    Ok(change_password::v3::Response::new())
}

/// `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    state: AppState,
    request: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let sender = request.sender()?;
    forbid_guests(sender)?;
    let uia = password_uia("deactivate".into(), &request, sender);
    let completed = authorize(&state, &uia, request.body.auth.as_ref()).await?;
    accounts::deactivate_account(&state, &sender.user_id, request.body.erase, &completed.session_id).await?;
    // We never bound third-party IDs at an identity server, so there was nothing to unbind.
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
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

/// How long an OpenID token lasts (as Synapse).
const OPENID_TOKEN_SECS: u64 = 3600;

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`: a token a third party
/// checks with this server (`/_matrix/federation/v1/openid/userinfo`) to learn who the user
/// is, and nothing more.
pub async fn openid_token(
    state: AppState,
    request: Ruma<ruma::api::client::account::request_openid_token::v3::Request>,
) -> crate::error::ApiResult<ruma::api::client::account::request_openid_token::v3::Response> {
    let sender = request.sender()?;
    sender.ensure_is(&request.body.user_id, "OpenID tokens")?;
    let token = crate::accounts::tokens::random_string(32);
    let expires_ts = crate::storage::now_ms() + (OPENID_TOKEN_SECS * 1000) as i64;
    state
        .storage
        .insert_openid_token(
            &crate::accounts::tokens::hash_token(&token),
            sender.user_id.as_str(),
            expires_ts,
        )
        .await?;
    Ok(ruma::api::client::account::request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        state.config.server_name.clone(),
        std::time::Duration::from_secs(OPENID_TOKEN_SECS),
    ))
}
