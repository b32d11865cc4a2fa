//! Sessions: `GET/POST /login`, `POST /refresh`, `POST /logout`, `POST /logout/all`,
//! `GET /account/whoami`.

use http::StatusCode;
use ruma::{
    OwnedUserId, UserId,
    api::{
        client::{
            account::whoami,
            session::{
                get_login_types::{self, v3::LoginType},
                login::{self, v3::LoginInfo},
                logout, logout_all, refresh_token,
            },
            uiaa::UserIdentifier,
        },
        error::ErrorKind,
    },
};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::{
        check_login_password, delete_devices, log_out_everywhere,
        sessions::{SessionRequest, refresh_session},
        start_session,
    },
    error::{ApiError, ApiResult},
};

/// `GET /_matrix/client/v3/login`
pub async fn login_types(
    _state: AppState,
    _request: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(Default::default()),
        LoginType::ApplicationService(Default::default()),
    ]))
}

/// `POST /_matrix/client/v3/login`
pub async fn login(state: AppState, request: Ruma<login::v3::Request>) -> ApiResult<login::v3::Response> {
    let ip = request.client_ip.to_string();
    let body = request.body;
    if let LoginInfo::ApplicationService(login) = &body.login_info {
        return appservice_login(&state, request.sender.as_ref(), login, &body, &ip).await;
    }
    if request.sender.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidParam,
            "An application service token was given, but the login type is not m.login.application_service",
        ));
    }
    let LoginInfo::Password(password) = &body.login_info else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Unknown login type",
        ));
    };
    state.rate_limits.login.check(&ip)?;
    #[allow(deprecated)] // The legacy top-level `user` field is still sent by older clients.
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => {
            return Err(ApiError::forbidden("Only Matrix user IDs can log in on this server"));
        }
        (None, None) => return Err(ApiError::missing_param("No identifier given")),
    };
    let user_id = resolve_user(&state, &user)?;
    // Guessing one account is slowed by counting its failures, not its attempts, and only
    // against addresses that failed: the owner, with the right password from an address that
    // did not guess, still gets in while someone else hammers the account.
    let limits = &state.rate_limits.login;
    let (failures, failures_here) = (format!("failed:{user_id}"), format!("failed:{user_id}:{ip}"));
    if let Err(limited) = limits.check_available(&failures)
        && !limits.is_full(&failures_here)
    {
        return Err(limited.into());
    }
    if let Err(error) = check_login_password(&state, &user_id, &password.password).await {
        if error.status() == StatusCode::FORBIDDEN {
            // Both are counted whatever their level: the failure happened.
            let _ = limits.check(&failures);
            let _ = limits.check(&failures_here);
        }
        return Err(error);
    }
    let session = start_session(
        &state,
        SessionRequest {
            user_id: user_id.as_str(),
            device_id: body.device_id.as_deref().map(|d| d.as_str()),
            display_name: body.initial_device_display_name.as_deref(),
            with_refresh_token: body.refresh_token,
            ip: Some(&ip),
            refreshable_lifetime: state.refreshable_token_lifetime(),
        },
    )
    .await?;
    tracing::info!(%user_id, device_id = %session.device_id, "logged in");
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(response)
}

/// `m.login.application_service`: an appservice logs one of its users in on a new (or given)
/// device, without a password (spec: "Appservice Login").
async fn appservice_login(
    state: &AppState,
    sender: Option<&crate::accounts::sessions::Sender>,
    login: &login::v3::ApplicationService,
    body: &login::v3::Request,
    ip: &str,
) -> ApiResult<login::v3::Response> {
    let service = sender
        .and_then(|sender| sender.appservice.as_ref())
        .ok_or_else(ApiError::missing_token)?;
    #[allow(deprecated)] // The legacy top-level `user` field is still sent by older clients.
    let user = match (&login.identifier, &login.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => return Err(ApiError::forbidden("Only Matrix user IDs can log in on this server")),
        (None, None) => return Err(ApiError::missing_param("No identifier given")),
    };
    let user_id = resolve_user(state, &user)?;
    if !service.is_user_in_namespace(user_id.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Exclusive,
            format!("{user_id} is not in the application service's namespace"),
        ));
    }
    if state
        .storage
        .user(user_id.as_str())
        .await?
        .is_none_or(|user| user.is_deactivated())
    {
        return Err(ApiError::forbidden("Invalid username or password"));
    }
    let session = start_session(
        state,
        SessionRequest {
            user_id: user_id.as_str(),
            device_id: body.device_id.as_deref().map(|d| d.as_str()),
            display_name: body.initial_device_display_name.as_deref(),
            with_refresh_token: body.refresh_token,
            ip: Some(ip),
            refreshable_lifetime: state.refreshable_token_lifetime(),
        },
    )
    .await?;
    tracing::info!(%user_id, device_id = %session.device_id, appservice = service.id(), "logged in");
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(response)
}

/// A login identifier is a full user ID or a localpart of ours; localparts are case-folded, as
/// registration folds them.
fn resolve_user(state: &AppState, user: &str) -> ApiResult<OwnedUserId> {
    let invalid = || ApiError::forbidden("Invalid username or password");
    if user.starts_with('@') {
        let user_id = UserId::parse(user).map_err(|_| invalid())?;
        UserId::parse(format!(
            "@{}:{}",
            user_id.localpart().to_lowercase(),
            user_id.server_name()
        ))
        .map_err(|_| invalid())
    } else {
        UserId::parse(format!("@{}:{}", user.to_lowercase(), state.config.server_name)).map_err(|_| invalid())
    }
}

/// `POST /_matrix/client/v3/refresh`
pub async fn refresh(
    state: AppState,
    request: Ruma<refresh_token::v3::Request>,
) -> ApiResult<refresh_token::v3::Response> {
    let session = refresh_session(
        &state.storage,
        &request.body.refresh_token,
        state.refreshable_token_lifetime(),
    )
    .await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    response.refresh_token = session.refresh_token;
    response.expires_in_ms = session.expires_in;
    Ok(response)
}

/// `POST /_matrix/client/v3/logout`: ends this session, deleting its device.
pub async fn logout(state: AppState, request: Ruma<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    let sender = request.sender()?;
    delete_devices(&state, &sender.user_id, &[sender.device_id.as_str()], None).await?;
    Ok(logout::v3::Response::new())
}

/// `POST /_matrix/client/v3/logout/all`: ends every session of the user.
pub async fn logout_all(
    state: AppState,
    request: Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    let sender = request.sender()?;
    log_out_everywhere(&state, &sender.user_id).await?;
    Ok(logout_all::v3::Response::new())
}

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(_state: AppState, request: Ruma<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let sender = request.sender()?;
    let mut response = whoami::v3::Response::new(sender.user_id.clone(), sender.is_guest);
    // An appservice acting without a device (spec: the device ID "can be omitted").
    if sender.device_id != crate::appservices::auth::NO_DEVICE {
        response.device_id = Some(sender.device_id.clone());
    }
    Ok(response)
}
