//! Registration: `POST /register`, `GET /register/available` and the registration token
//! validity check.

use http::StatusCode;
use ruma::api::{
    client::{
        account::{check_registration_token_validity, get_username_availability, register},
        uiaa::{AuthFlow, AuthType},
    },
    error::ErrorKind,
};

use super::ruma::Ruma;
use crate::{
    accounts::{
        Registration, generate_user_id, register_account,
        sessions::SessionRequest,
        start_session,
        uia::{UiaRequest, authorize},
        user_in_use,
        username::user_id_for_new_account,
    },
    config::RegistrationMode,
    error::{ApiError, ApiResult},
    state::AppState,
    storage::now_ms,
};

/// `POST /_matrix/client/v3/register`
pub async fn register(
    state: AppState,
    request: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    let ip = request.client_ip.to_string();
    let body = request.body;
    let is_guest = body.kind == register::RegistrationKind::Guest;
    if is_guest && !state.config.registration.allow_guests {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
    }
    let flow = match state.config.registration_mode() {
        RegistrationMode::Closed if !is_guest => {
            return Err(ApiError::forbidden("Registration has been disabled"));
        }
        RegistrationMode::TokenRequired => AuthType::RegistrationToken,
        _ => AuthType::Dummy,
    };
    // A username that cannot be had is reported before any authentication, as Synapse does.
    let user_id = match (&body.username, is_guest) {
        (Some(username), false) => {
            let user_id = user_id_for_new_account(username, &state.config.server_name)?;
            if state.storage.user(user_id.as_str()).await?.is_some() {
                return Err(user_in_use());
            }
            Some(user_id)
        }
        _ => None,
    };

    let completed = if is_guest {
        None
    } else {
        let uia = UiaRequest {
            purpose: "register",
            flows: vec![AuthFlow::new(vec![flow])],
            user_id: None,
        };
        let completed = authorize(&state.storage, &uia, body.auth.as_ref()).await?;
        Some(completed)
    };
    state.rate_limits.registration.check(&ip)?;

    if !is_guest && body.password.is_none() {
        return Err(ApiError::missing_param(
            "A password is required to register",
        ));
    }
    let user_id = match user_id {
        Some(user_id) => user_id,
        None => generate_user_id(&state).await?,
    };
    register_account(
        &state,
        Registration {
            user_id: &user_id,
            password: body.password.as_deref(),
            is_admin: false,
            is_guest,
            user_type: None,
            display_name: None,
            registration_token: completed
                .as_ref()
                .and_then(|c| c.registration_token.as_deref()),
            uia_session: completed.as_ref().map(|c| c.session_id.as_str()),
        },
    )
    .await?;

    let mut response = register::v3::Response::new(user_id.clone());
    if !body.inhibit_login {
        let session = start_session(
            &state,
            SessionRequest {
                user_id: user_id.as_str(),
                device_id: body.device_id.as_deref().map(|d| d.as_str()),
                display_name: body.initial_device_display_name.as_deref(),
                with_refresh_token: body.refresh_token,
                ip: Some(&ip),
            },
        )
        .await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
        response.refresh_token = session.refresh_token;
        response.expires_in = session.expires_in;
    }
    Ok(response)
}

/// `GET /_matrix/client/v3/register/available`
pub async fn username_available(
    state: AppState,
    request: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    let user_id = user_id_for_new_account(&request.body.username, &state.config.server_name)?;
    if state.storage.user(user_id.as_str()).await?.is_some() {
        return Err(user_in_use());
    }
    Ok(get_username_availability::v3::Response::new(true))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn registration_token_validity(
    state: AppState,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    if state.config.registration_mode() != RegistrationMode::TokenRequired {
        return Err(ApiError::forbidden(
            "Registration tokens are not in use on this server",
        ));
    }
    state
        .rate_limits
        .registration
        .check(&request.client_ip.to_string())?;
    let valid = state
        .storage
        .registration_token(&request.body.token)
        .await?
        .is_some_and(|token| token.is_valid(now_ms()));
    Ok(check_registration_token_validity::v1::Response::new(valid))
}
