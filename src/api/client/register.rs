//! Registration: `POST /register`, `GET /register/available` and the registration token
//! validity check.

use axum::Json;
use http::StatusCode;
use ruma::OwnedUserId;
use ruma::api::{
    client::{
        account::{check_registration_token_validity, get_username_availability, register, register::LoginType},
        uiaa::{AuthData, AuthFlow, AuthType},
    },
    error::ErrorKind,
};
use serde_json::{Map, Value, json};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::{
        Registration, available_user_id, check_password_policy, generate_user_id,
        password::hash_password,
        register_account,
        sessions::{NewSession, SessionRequest, check_device_id},
        start_session,
        uia::{UiaRequest, authorize_with_params},
    },
    config::RegistrationMode,
    error::{ApiError, ApiResult},
    storage::now_ms,
};

/// How often a generated user ID may be taken by a concurrent registration before giving up.
const GENERATED_ID_ATTEMPTS: usize = 5;

/// `POST /_matrix/client/v3/register`
pub async fn register(state: AppState, request: Ruma<register::v3::Request>) -> ApiResult<Json<Value>> {
    let ip = request.client_ip.to_string();
    let body = request.body;
    let appservice = request.sender.and_then(|sender| sender.appservice);
    match (appservice, body.login_type == Some(LoginType::ApplicationService)) {
        (Some(service), true) => return register_appservice_user(&state, &service, &body, &ip).await,
        (None, true) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorKind::MissingToken,
                "m.login.application_service needs the application service's token",
            ));
        }
        (Some(_), false) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::InvalidParam,
                "An application service registers its users with type m.login.application_service",
            ));
        }
        (None, false) => {}
    }
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
    // A username that cannot be had is reported before any authentication, as Synapse does;
    // not to a retry of a session that already registered it.
    let registered = match body.auth.as_ref().and_then(AuthData::session) {
        Some(id) => state.storage.uia_session(id).await?.and_then(|session| session.result),
        None => None,
    };
    match (&body.username, is_guest, &registered) {
        (Some(username), false, None) => {
            available_user_id(&state, username).await?;
        }
        (Some(username), false, Some(registered)) => {
            let asked = crate::accounts::username::user_id_for_new_account(username, &state.config.server_name)?;
            if asked.as_str() != registered {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Unknown,
                    "A different user ID has already been registered for this session",
                ));
            }
        }
        _ => {}
    }
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
        let params = remembered_params(&state, &body, &ip).await?;
        Some(authorize_with_params(&state, &uia, body.auth.as_ref(), params).await?)
    };
    // What the session remembers from earlier requests fills what this one left out.
    let remembered = |key: &str| {
        uia.as_ref()
            .and_then(|uia| uia.params.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let inhibit_login = body.inhibit_login
        || uia
            .as_ref()
            .is_some_and(|uia| uia.params.get("inhibit_login") == Some(&Value::Bool(true)));
    let device_id = body
        .device_id
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| remembered("device_id"));
    let device_name = body
        .initial_device_display_name
        .clone()
        .or_else(|| remembered("initial_device_display_name"));
    let session_base = SessionRequest {
        user_id: "",
        device_id: device_id.as_deref(),
        display_name: device_name.as_deref(),
        with_refresh_token: body.refresh_token,
        ip: Some(&ip),
        refreshable_lifetime: state.refreshable_token_lifetime(),
    };

    // A retry of a registration that succeeded (its response lost): the same account, logged
    // in again (as Synapse).
    if let Some(registered) = uia.as_ref().and_then(|uia| uia.result.clone()) {
        let user_id = OwnedUserId::try_from(registered).map_err(|_| ApiError::internal())?;
        state.rate_limits.registration.check(&ip)?;
        if state
            .storage
            .user(user_id.as_str())
            .await?
            .is_none_or(|user| user.is_deactivated())
        {
            return Err(ApiError::forbidden("This account has been deactivated"));
        }
        // Only the device the first request named: a retry must not take over another one.
        let remembered_device = remembered("device_id");
        let session_base = SessionRequest {
            device_id: remembered_device.as_deref(),
            ..session_base
        };
        let session = if inhibit_login {
            None
        } else {
            Some(
                start_session(
                    &state,
                    SessionRequest {
                        user_id: user_id.as_str(),
                        ..session_base
                    },
                )
                .await?,
            )
        };
        return Ok(response(user_id, session));
    }

    let password_hash = remembered("password_hash");
    if !is_guest && body.password.is_none() && password_hash.is_none() {
        return Err(ApiError::missing_param("A password is required to register"));
    }
    let requested = match (body.username.clone().or_else(|| remembered("username")), is_guest) {
        (Some(username), false) => Some(available_user_id(&state, &username).await?),
        _ => None,
    };
    state.rate_limits.registration.check(&ip)?;

    let mut attempts = 0;
    loop {
        let user_id = match &requested {
            Some(user_id) => user_id.clone(),
            None => generate_user_id(&state).await?,
        };
        let registration = Registration {
            user_id: &user_id,
            password: body.password.as_deref(),
            password_hash: password_hash.as_deref(),
            is_admin: false,
            is_guest,
            user_type: None,
            display_name: None,
            uia_session: uia.as_ref().map(|c| c.session_id.as_str()),
            session: (!inhibit_login).then_some(SessionRequest {
                user_id: user_id.as_str(),
                ..session_base
            }),
        };
        match register_account(&state, registration).await {
            Ok(session) => return Ok(response(user_id.clone(), session)),
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

/// `m.login.application_service`: an appservice registers a user of its namespace, with no
/// password and no user-interactive auth, and (unless `inhibit_login`) a first device.
async fn register_appservice_user(
    state: &AppState,
    service: &hearth_appservices::Appservice,
    body: &register::v3::Request,
    ip: &str,
) -> ApiResult<Json<Value>> {
    let username = body
        .username
        .as_deref()
        .ok_or_else(|| ApiError::missing_param("An application service must give the username"))?;
    let user_id = crate::accounts::username::user_id_for_appservice(username, &state.config.server_name)?;
    if !service.is_user_in_namespace(user_id.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Exclusive,
            format!("{user_id} is not in the application service's user namespace"),
        ));
    }
    // Another appservice's exclusive namespace is its alone, whatever this one's regex says.
    if let Some(owner) = state.appservice_registry().claiming_user(user_id.as_str())
        && owner.id() != service.id()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Exclusive,
            format!("{user_id} is reserved by another application service ({})", owner.id()),
        ));
    }
    check_device_id(body.device_id.as_deref().map(|d| d.as_str()))?;
    let registration = Registration {
        user_id: &user_id,
        password: None,
        password_hash: None,
        is_admin: false,
        is_guest: false,
        user_type: None,
        display_name: None,
        uia_session: None,
        session: (!body.inhibit_login).then_some(SessionRequest {
            user_id: user_id.as_str(),
            device_id: body.device_id.as_deref().map(|d| d.as_str()),
            display_name: body.initial_device_display_name.as_deref(),
            with_refresh_token: body.refresh_token,
            ip: Some(ip),
            refreshable_lifetime: state.refreshable_token_lifetime(),
        }),
    };
    let session = register_account(state, registration).await?;
    tracing::info!(%user_id, appservice = service.id(), "application service registered a user");
    Ok(response(user_id, session))
}

/// The parameters of this request a registration's UIA session remembers for later ones:
/// the username, the device, `inhibit_login`, and the password, checked and hashed (a
/// password is never stored as given).
async fn remembered_params(state: &AppState, body: &register::v3::Request, ip: &str) -> ApiResult<Map<String, Value>> {
    let mut params = Map::new();
    if let Some(username) = &body.username {
        params.insert("username".into(), Value::from(username.as_str()));
    }
    if let Some(device_id) = &body.device_id {
        params.insert("device_id".into(), Value::from(device_id.as_str()));
    }
    if let Some(name) = &body.initial_device_display_name {
        params.insert("initial_device_display_name".into(), Value::from(name.as_str()));
    }
    if body.inhibit_login {
        params.insert("inhibit_login".into(), Value::Bool(true));
    }
    // The password is remembered from the request that starts the session (the one without
    // `auth`): later ones that carry it again use it as given, with no second hash. Hashing is
    // deliberately costly, so starting sessions counts against the IP's login limit.
    if let (Some(password), None) = (&body.password, &body.auth) {
        check_password_policy(state, password)?;
        state.rate_limits.login.check(&format!("register:{ip}"))?;
        params.insert("password_hash".into(), Value::from(hash_password(password).await?));
    }
    Ok(params)
}

/// The answer: the user ID, and the new session unless login was inhibited. Built by hand:
/// ruma's type writes `"device_id": null` for an inhibited login, where the spec has a string
/// or nothing.
fn response(user_id: OwnedUserId, session: Option<NewSession>) -> Json<Value> {
    let mut response = json!({ "user_id": user_id });
    if let Some(session) = session {
        response["access_token"] = Value::from(session.access_token);
        response["device_id"] = Value::from(session.device_id.as_str());
        if let Some(refresh_token) = session.refresh_token {
            response["refresh_token"] = Value::from(refresh_token);
        }
        if let Some(expires_in) = session.expires_in {
            response["expires_in_ms"] = Value::from(u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX));
        }
    }
    Json(response)
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
