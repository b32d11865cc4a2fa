//! Accounts: registration, password login, password changes, deactivation and sessions.
//! The HTTP handlers in `api::` call these; nothing here knows about HTTP.

pub mod password;
pub mod sessions;
pub mod tokens;
pub mod uia;
pub mod username;

use http::StatusCode;
use ruma::{OwnedUserId, UserId, api::error::ErrorKind};
use serde_json::Value;

use self::{
    password::{MAX_PASSWORD_BYTES, hash_password, verify_password},
    sessions::{NewSession, SessionRequest, create_session},
};
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    storage::{NewUser, Storage, StorageError, User},
};

/// A new account.
pub struct Registration<'a> {
    pub user_id: &'a UserId,
    pub password: Option<&'a str>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub user_type: Option<&'a str>,
    pub display_name: Option<&'a str>,
    /// The registration token whose reserved use this registration completes.
    pub registration_token: Option<&'a str>,
    /// The UIA session that authorised it, deleted in the same transaction.
    pub uia_session: Option<&'a str>,
}

/// Creates the account and its profile; `M_USER_IN_USE` if the ID is taken. The account, the
/// token use and the end of the UIA session commit together or not at all.
pub async fn register_account(state: &AppState, registration: Registration<'_>) -> ApiResult<()> {
    let hash = match registration.password {
        Some(password) => {
            check_password_policy(state, password)?;
            Some(hash_password(password).await?)
        }
        None => None,
    };
    let mut tx = state.storage.begin_write().await?;
    let user = NewUser {
        user_id: registration.user_id.as_str(),
        password_hash: hash.as_deref(),
        is_admin: registration.is_admin,
        is_guest: registration.is_guest,
        user_type: registration.user_type,
    };
    if !Storage::insert_user(&mut tx, &user).await? {
        return Err(user_in_use());
    }
    if let Some(token) = registration.registration_token {
        Storage::complete_registration_token(&mut tx, token).await?;
    }
    if let Some(session) = registration.uia_session {
        Storage::delete_uia_session(&mut tx, session).await?;
    }
    tx.commit().await.map_err(StorageError::from)?;
    // New accounts start with their localpart as display name, as on Synapse.
    let display_name = registration
        .display_name
        .unwrap_or(registration.user_id.localpart());
    state
        .storage
        .set_profile_field(
            registration.user_id.as_str(),
            "displayname",
            &Value::from(display_name),
        )
        .await?;
    tracing::info!(user_id = %registration.user_id, admin = registration.is_admin, guest = registration.is_guest, "registered account");
    Ok(())
}

pub fn user_in_use() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::UserInUse,
        "User ID already taken",
    )
}

pub fn check_password_policy(state: &AppState, password: &str) -> ApiResult<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidParam,
            format!("Password must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    let min = state.config.registration.password_min_length.max(1);
    if password.chars().count() < min {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::WeakPassword,
            format!("Password must be at least {min} characters"),
        ));
    }
    Ok(())
}

/// A fresh numeric localpart (as Synapse hands out for registrations without a username).
pub async fn generate_user_id(state: &AppState) -> ApiResult<OwnedUserId> {
    let mut candidate = state.storage.count_users().await? + 1;
    loop {
        let user_id = UserId::parse(format!("@{candidate}:{}", state.config.server_name))
            .map_err(|_| ApiError::internal())?;
        if state.storage.user(user_id.as_str()).await?.is_none() {
            return Ok(user_id);
        }
        candidate += 1;
    }
}

/// Checks a password login. Unknown users and wrong passwords get the same answer; a
/// deactivated account is told so, but only after the right password.
pub async fn check_login_password(
    state: &AppState,
    user_id: &UserId,
    password: &str,
) -> ApiResult<User> {
    let invalid = || ApiError::forbidden("Invalid username or password");
    let user = if user_id.server_name() == state.config.server_name {
        state.storage.user(user_id.as_str()).await?
    } else {
        None
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let deactivated = user.as_ref().is_some_and(User::is_deactivated);
    if deactivated {
        // The hash is gone on deactivation, so there is nothing to verify against.
        verify_password(None, password).await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    if !verify_password(hash, password).await {
        return Err(invalid());
    }
    user.ok_or_else(invalid)
}

/// Starts a session for a user who just proved who they are.
pub async fn start_session(state: &AppState, request: SessionRequest<'_>) -> ApiResult<NewSession> {
    create_session(&state.storage, request, state.refreshable_token_lifetime()).await
}

/// Sets a new password; with `log_out_other_devices`, every other device is deleted too.
pub async fn change_password(
    state: &AppState,
    user_id: &UserId,
    new_password: &str,
    keep_device: Option<&str>,
    log_out_other_devices: bool,
) -> ApiResult<()> {
    check_password_policy(state, new_password)?;
    let hash = hash_password(new_password).await?;
    let mut tx = state.storage.begin_write().await?;
    Storage::set_password_hash(&mut tx, user_id.as_str(), &hash).await?;
    if log_out_other_devices {
        Storage::delete_devices_except(&mut tx, user_id.as_str(), keep_device).await?;
    }
    tx.commit().await.map_err(StorageError::from)?;
    tracing::info!(%user_id, log_out_other_devices, "password changed");
    Ok(())
}

/// Deactivates the account for good: every device and token dies and it can never log in
/// again. The user ID stays taken. With `erase`, the profile goes too.
pub async fn deactivate_account(state: &AppState, user_id: &UserId, erase: bool) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    Storage::deactivate_user(&mut tx, user_id.as_str()).await?;
    Storage::delete_devices_except(&mut tx, user_id.as_str(), None).await?;
    if erase {
        Storage::clear_profile(&mut tx, user_id.as_str()).await?;
    }
    tx.commit().await.map_err(StorageError::from)?;
    tracing::info!(%user_id, erase, "account deactivated");
    Ok(())
}

/// Deletes devices (and their tokens).
pub async fn delete_devices(
    state: &AppState,
    user_id: &UserId,
    device_ids: &[&str],
) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    for device_id in device_ids {
        Storage::delete_device(&mut tx, user_id.as_str(), device_id).await?;
    }
    tx.commit().await.map_err(StorageError::from)?;
    Ok(())
}

/// Deletes every device of the user, and with them every token.
pub async fn log_out_everywhere(state: &AppState, user_id: &UserId) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    Storage::delete_devices_except(&mut tx, user_id.as_str(), None).await?;
    tx.commit().await.map_err(StorageError::from)?;
    Ok(())
}
