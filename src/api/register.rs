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
        Registration, available_user_id, generate_user_id, register_account,
        sessions::{SessionRequest, check_device_id},
        uia::{UiaRequest, authorize},
    },
    config::RegistrationMode,
    error::{ApiError, ApiResult},
    state::AppState,
    storage::now_ms,
};

/// How often a generated user ID may be taken by a concurrent registration before giving up.
const GENERATED_ID_ATTEMPTS: usize = 5;

/// `POST /_matrix/client/v3/register`
pub async fn register(state: AppState, request: Ruma<register::v3::Request>) -> ApiResult<register::v3::Response> {
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
    let stage = match state.config.registration_mode() {
        RegistrationMode::Closed if !is_guest => {
            return Err(ApiError::forbidden("Registration has been disabled"));
        }
        RegistrationMode::TokenRequired => AuthType::RegistrationToken,
        _ => AuthType::Dummy,
    };
    state.rate_limits.registration.check_available(&ip)?;
    check_device_id(body.device_id.as_deref().map(|d| d.as_str()))?;
    // A username that cannot be had is reported before any authentication, as Synapse does.
    let requested = match (&body.username, is_guest) {
        (Some(username), false) => Some(available_user_id(&state, username).await?),
        _ => None,
    };
    let uia = if is_guest {
        None
    } else {
        let flows = vec![AuthFlow::new(vec![stage])];
        let uia = UiaRequest {
            purpose: "register".into(),
            flows,
            user_id: None,
            client_ip: request.client_ip,
        };
        Some(authorize(&state, &uia, body.auth.as_ref()).await?)
    };
    if !is_guest && body.password.is_none() {
        return Err(ApiError::missing_param("A password is required to register"));
    }
    state.rate_limits.registration.check(&ip)?;

    let mut attempts = 0;
    loop {
        let user_id = match &requested {
            Some(user_id) => user_id.clone(),
            None => generate_user_id(&state).await?,
        };
        let session = (!body.inhibit_login).then(|| SessionRequest {
            user_id: user_id.as_str(),
            device_id: body.device_id.as_deref().map(|d| d.as_str()),
            display_name: body.initial_device_display_name.as_deref(),
            with_refresh_token: body.refresh_token,
            ip: Some(&ip),
            refreshable_lifetime: state.refreshable_token_lifetime(),
        });
        let registration = Registration {
            user_id: &user_id,
            password: body.password.as_deref(),
            is_admin: false,
            is_guest,
            user_type: None,
            display_name: None,
            uia_session: uia.as_ref().map(|c| c.session_id.as_str()),
            session,
        };
        match register_account(&state, registration).await {
            Ok(session) => {
                let mut response = register::v3::Response::new(user_id.clone());
                if let Some(session) = session {
                    response.access_token = Some(session.access_token);
                    response.device_id = Some(session.device_id);
                    response.refresh_token = session.refresh_token;
                    response.expires_in = session.expires_in;
                }
                return Ok(response);
            }
            // A generated ID taken by a concurrent registration: pick the next one.
            Err(error)
                if requested.is_none()
                    && attempts + 1 < GENERATED_ID_ATTEMPTS
                    && error.errcode() == Some(ErrorKind::UserInUse) =>
            {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// `GET /_matrix/client/v3/register/available`
pub async fn username_available(
    state: AppState,
    request: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    available_user_id(&state, &request.body.username).await?;
    Ok(get_username_availability::v3::Response::new(true))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn registration_token_validity(
    state: AppState,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    if state.config.registration_mode() != RegistrationMode::TokenRequired {
        return Err(ApiError::forbidden("Registration tokens are not in use on this server"));
    }
    state.rate_limits.registration.check(&request.client_ip.to_string())?;
    let valid = state
        .storage
        .registration_token(&request.body.token)
        .await?
        .is_some_and(|token| token.is_valid(now_ms()));
    Ok(check_registration_token_validity::v1::Response::new(valid))
}
