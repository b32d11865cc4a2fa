//! The Synapse-compatible admin API that deployment scripts and Complement depend on:
//! shared-secret registration and registration tokens.

use axum::{
    Json,
    extract::{RawQuery, State},
};
use hmac::{Hmac, Mac};
use http::StatusCode;
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::api::extract::{Admin, MatrixJson, PathParam, query_param};
use crate::api::state::AppState;
use crate::{
    accounts::{Registration, available_user_id, register_account, sessions::SessionRequest, tokens::random_string},
    error::{ApiError, ApiResult},
    storage::now_ms,
};

/// How long a shared-secret registration nonce stays usable (as Synapse).
const NONCE_LIFETIME_MS: i64 = 60_000;

fn shared_secret(state: &AppState) -> ApiResult<&str> {
    state.config.registration.shared_secret.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Shared secret registration is not enabled",
        )
    })
}

/// `GET /_synapse/admin/v1/register`: a single-use nonce for the next registration.
pub async fn register_nonce(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    shared_secret(&state)?;
    state
        .storage
        .expire_registration_nonces(now_ms() - NONCE_LIFETIME_MS)
        .await?;
    let nonce = random_string(32);
    state.storage.insert_registration_nonce(&nonce).await?;
    Ok(Json(json!({ "nonce": nonce })))
}

#[derive(Deserialize)]
pub struct SharedSecretRegistration {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
    user_type: Option<String>,
    mac: String,
}

/// `POST /_synapse/admin/v1/register`: registers a user, proven by an HMAC-SHA1 over the
/// nonce, username, password, admin flag and user type keyed with the shared secret.
pub async fn register_with_shared_secret(
    State(state): State<AppState>,
    MatrixJson(body): MatrixJson<SharedSecretRegistration>,
) -> ApiResult<Json<Value>> {
    let secret = shared_secret(&state)?;
    if !state
        .storage
        .take_registration_nonce(&body.nonce, now_ms() - NONCE_LIFETIME_MS)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Unrecognised nonce",
        ));
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(|_| ApiError::internal())?;
    mac.update(body.nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(body.username.as_bytes());
    mac.update(b"\x00");
    mac.update(body.password.as_bytes());
    mac.update(b"\x00");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = &body.user_type {
        mac.update(b"\x00");
        mac.update(user_type.as_bytes());
    }
    let given = hex::decode(&body.mac).map_err(|_| ApiError::forbidden("HMAC incorrect"))?;
    mac.verify_slice(&given)
        .map_err(|_| ApiError::forbidden("HMAC incorrect"))?;

    let user_id = available_user_id(&state, &body.username).await?;
    let registration = Registration {
        user_id: &user_id,
        password: Some(&body.password),
        password_hash: None,
        is_admin: body.admin,
        is_guest: false,
        user_type: body.user_type.as_deref(),
        display_name: body.displayname.as_deref(),
        uia_session: None,
        session: Some(SessionRequest {
            user_id: user_id.as_str(),
            device_id: None,
            display_name: None,
            with_refresh_token: false,
            ip: None,
            refreshable_lifetime: state.refreshable_token_lifetime(),
        }),
    };
    let session = register_account(&state, registration)
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok(Json(json!({
        "user_id": user_id,
        "home_server": state.config.server_name,
        "access_token": session.access_token,
        "device_id": session.device_id,
    })))
}

/// `GET /_synapse/admin/v1/registration_tokens[?valid=true|false]`
pub async fn list_registration_tokens(
    State(state): State<AppState>,
    _admin: Admin,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let valid = match query_param(query.as_deref(), "valid").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid_param("valid must be true or false")),
    };
    let now = now_ms();
    let tokens: Vec<_> = state
        .storage
        .registration_tokens()
        .await?
        .into_iter()
        .filter(|token| valid.is_none_or(|valid| token.is_valid(now) == valid))
        .collect();
    Ok(Json(json!({ "registration_tokens": tokens })))
}

/// `GET /_synapse/admin/v1/registration_tokens/{token}`
pub async fn get_registration_token(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(token): PathParam,
) -> ApiResult<Json<Value>> {
    let token = state
        .storage
        .registration_token(&token)
        .await?
        .ok_or_else(|| ApiError::not_found("No such registration token"))?;
    Ok(Json(json!(token)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRegistrationToken {
    token: Option<String>,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
    length: Option<usize>,
}

/// `POST /_synapse/admin/v1/registration_tokens/new`
pub async fn create_registration_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    MatrixJson(body): MatrixJson<NewRegistrationToken>,
) -> ApiResult<Json<Value>> {
    check_token_limits(body.uses_allowed, body.expiry_time)?;
    let token = match body.token {
        Some(token) => {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
            if token.is_empty() || token.len() > 64 || !token.chars().all(allowed) {
                return Err(ApiError::invalid_param(
                    "token must be 1-64 characters from [A-Za-z0-9._~-]",
                ));
            }
            token
        }
        None => {
            let length = body.length.unwrap_or(16);
            if !(1..=64).contains(&length) {
                return Err(ApiError::invalid_param("length must be between 1 and 64"));
            }
            random_string(length)
        }
    };
    if !state
        .storage
        .insert_registration_token(&token, body.uses_allowed, body.expiry_time)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidParam,
            "Token already exists",
        ));
    }
    tracing::info!(admin = %admin.user_id, uses_allowed = body.uses_allowed, "created a registration token");
    let created = state
        .storage
        .registration_token(&token)
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok(Json(json!(created)))
}

fn check_token_limits(uses_allowed: Option<i64>, expiry_time: Option<i64>) -> ApiResult<()> {
    if uses_allowed.is_some_and(|uses| uses < 0) {
        return Err(ApiError::invalid_param(
            "uses_allowed must be a non-negative integer or null",
        ));
    }
    if expiry_time.is_some_and(|expiry| expiry < now_ms()) {
        return Err(ApiError::invalid_param("expiry_time must not be in the past"));
    }
    Ok(())
}

/// `PUT /_synapse/admin/v1/registration_tokens/{token}`: a field left out keeps its value,
/// `null` means unlimited.
pub async fn update_registration_token(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(token): PathParam,
    MatrixJson(body): MatrixJson<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let existing = state
        .storage
        .registration_token(&token)
        .await?
        .ok_or_else(|| ApiError::not_found("No such registration token"))?;
    let field = |name: &str, current: Option<i64>| -> ApiResult<Option<i64>> {
        match body.get(name) {
            None => Ok(current),
            Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid_param(format!("{name} must be an integer or null"))),
        }
    };
    if let Some(unknown) = body
        .keys()
        .find(|key| !matches!(key.as_str(), "uses_allowed" | "expiry_time"))
    {
        return Err(ApiError::invalid_param(format!("Unknown field {unknown}")));
    }
    let uses_allowed = field("uses_allowed", existing.uses_allowed)?;
    let expiry_time = field("expiry_time", existing.expiry_time)?;
    check_token_limits(uses_allowed, expiry_time.filter(|_| body.contains_key("expiry_time")))?;
    state
        .storage
        .update_registration_token(&token, uses_allowed, expiry_time)
        .await?;
    let updated = state
        .storage
        .registration_token(&token)
        .await?
        .ok_or_else(|| ApiError::not_found("No such registration token"))?;
    Ok(Json(json!(updated)))
}

/// `DELETE /_synapse/admin/v1/registration_tokens/{token}`
pub async fn delete_registration_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathParam(token): PathParam,
) -> ApiResult<Json<Value>> {
    tracing::info!(admin = %admin.user_id, "deleting a registration token");
    if !state.storage.delete_registration_token(&token).await? {
        return Err(ApiError::not_found("No such registration token"));
    }
    Ok(Json(json!({})))
}
