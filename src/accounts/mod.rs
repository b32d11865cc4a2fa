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
    uia::{consume_uia, consume_uia_with_result},
};
use crate::{
    base::{Base, Change},
    e2ee,
    error::{ApiError, ApiResult},
    storage::{NewUser, Storage, User},
};

/// A new account.
pub struct Registration<'a> {
    pub user_id: &'a UserId,
    pub password: Option<&'a str>,
    /// A hash made earlier of a password already checked against the policy (a registration
    /// whose UIA session remembered it); used when `password` is None.
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub user_type: Option<&'a str>,
    pub display_name: Option<&'a str>,
    /// The completed UIA session that authorised it, consumed with it.
    pub uia_session: Option<&'a str>,
    /// Log the new account in (None: `inhibit_login`).
    pub session: Option<SessionRequest<'a>>,
}

/// Creates the account, its profile and (unless inhibited) its first session; `M_USER_IN_USE`
/// if the ID is taken. The account, the end of its UIA session, the registration token use
/// and the session commit together or not at all.
pub async fn register_account(state: &Base, registration: Registration<'_>) -> ApiResult<Option<NewSession>> {
    let hash = match registration.password {
        Some(password) => {
            check_password_policy(state, password)?;
            Some(hash_password(password).await?)
        }
        None => registration.password_hash.map(str::to_owned),
    };
    let user_id = registration.user_id.as_str();
    let mut tx = state.storage.begin_write().await?;
    if let Some(session_id) = registration.uia_session {
        let token = consume_uia_with_result(&mut tx, session_id, Some(user_id)).await?;
        if let Some(token) = token {
            Storage::complete_registration_token(&mut tx, &token).await?;
        }
    }
    let user = NewUser {
        user_id,
        password_hash: hash.as_deref(),
        is_admin: registration.is_admin,
        is_guest: registration.is_guest,
        user_type: registration.user_type,
    };
    if !Storage::insert_user(&mut tx, &user).await? {
        return Err(user_in_use());
    }
    // New accounts start with their localpart as display name, as on Synapse.
    let display_name = registration.display_name.unwrap_or(registration.user_id.localpart());
    Storage::set_profile_field_in(&mut tx, user_id, "displayname", &Value::from(display_name)).await?;
    let session = match registration.session {
        Some(request) => Some(create_session(&mut tx, request).await?),
        None => None,
    };
    tx.commit().await?;
    tracing::info!(%user_id, admin = registration.is_admin, guest = registration.is_guest, "registered account");
    if let Some(position) = session.as_ref().and_then(|session| session.device_list_change) {
        e2ee::device_lists_changed(state, registration.user_id, position).await?;
    }
    Ok(session)
}

/// The user ID a requested username would get, if it is valid and free.
pub async fn available_user_id(state: &Base, username: &str) -> ApiResult<OwnedUserId> {
    let user_id = username::user_id_for_new_account(username, &state.config.server_name)?;
    if let Some(service) = state.appservice_registry().claiming_user(user_id.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Exclusive,
            format!("This user ID is reserved by an application service ({})", service.id()),
        ));
    }
    if state.storage.user(user_id.as_str()).await?.is_some() {
        return Err(user_in_use());
    }
    Ok(user_id)
}

pub fn user_in_use() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken")
}

pub fn check_password_policy(state: &Base, password: &str) -> ApiResult<()> {
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
/// Another registration may take it first; the caller retries on `M_USER_IN_USE`.
pub async fn generate_user_id(state: &Base) -> ApiResult<OwnedUserId> {
    let mut candidate = state.storage.count_users().await? + 1;
    loop {
        let user_id =
            UserId::parse(format!("@{candidate}:{}", state.config.server_name)).map_err(|_| ApiError::internal())?;
        if state.storage.user(user_id.as_str()).await?.is_none() {
            return Ok(user_id);
        }
        candidate += 1;
    }
}

/// Checks a password login. Unknown users and wrong passwords get the same answer; only
/// someone who knows the password learns that an account is deactivated.
pub async fn check_login_password(state: &Base, user_id: &UserId, password: &str) -> ApiResult<User> {
    let invalid = || ApiError::forbidden("Invalid username or password");
    let user = if user_id.server_name() == state.config.server_name {
        state.storage.user(user_id.as_str()).await?
    } else {
        None
    };
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    if !verify_password(hash, password).await {
        return Err(invalid());
    }
    let user = user.ok_or_else(invalid)?;
    if user.is_deactivated() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    Ok(user)
}

/// Starts a session for a user who just proved who they are.
pub async fn start_session(state: &Base, request: SessionRequest<'_>) -> ApiResult<NewSession> {
    let mut tx = state.storage.begin_write().await?;
    let user_id = request.user_id.to_string();
    let session = create_session(&mut tx, request).await?;
    tx.commit().await?;
    // Reusing a device ID revokes its old tokens: their open WebSockets re-check and close.
    state.notifier.wake([user_id.as_str()]);
    if let Some(position) = session.device_list_change {
        let user_id = UserId::parse(user_id).map_err(|_| ApiError::internal())?;
        e2ee::device_lists_changed(state, &user_id, position).await?;
    }
    Ok(session)
}

/// Sets a new password; with `log_out_other_devices`, every other device is deleted too.
pub async fn change_password(
    state: &Base,
    user_id: &UserId,
    new_password: &str,
    keep_device: Option<&str>,
    log_out_other_devices: bool,
    uia_session: &str,
) -> ApiResult<()> {
    check_password_policy(state, new_password)?;
    let hash = hash_password(new_password).await?;
    let mut tx = state.storage.begin_write().await?;
    consume_uia(&mut tx, uia_session).await?;
    Storage::set_password_hash(&mut tx, user_id.as_str(), &hash).await?;
    let mut change = None;
    if log_out_other_devices {
        Storage::delete_devices_except(&mut tx, user_id.as_str(), keep_device).await?;
        change = Some(Storage::record_device_list_change(&mut tx, user_id.as_str()).await?);
    }
    tx.commit().await?;
    tracing::info!(%user_id, log_out_other_devices, "password changed");
    state.notifier.wake([user_id.as_str()]);
    state.publish(Change::Pushers {
        user_id: user_id.as_str(),
    });
    if let Some(position) = change {
        e2ee::device_lists_changed(state, user_id, position).await?;
    }
    Ok(())
}

/// Deactivates the account for good: every device and token dies and it can never log in
/// again. The user ID stays taken. With `erase`, the profile goes too, and their messages are
/// served redacted to everyone who was not in the room when they were sent.
pub async fn deactivate_account(state: &Base, user_id: &UserId, erase: bool, uia_session: &str) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    consume_uia(&mut tx, uia_session).await?;
    Storage::deactivate_user(&mut tx, user_id.as_str()).await?;
    Storage::delete_devices_except(&mut tx, user_id.as_str(), None).await?;
    let change = Storage::record_device_list_change(&mut tx, user_id.as_str()).await?;
    if erase {
        Storage::clear_profile(&mut tx, user_id.as_str()).await?;
        Storage::mark_erased(&mut tx, user_id.as_str()).await?;
    }
    tx.commit().await?;
    if erase {
        state.caches.user_erased();
    }
    tracing::info!(%user_id, erase, "account deactivated");
    // Open WebSockets check their session when woken, and close.
    state.notifier.wake([user_id.as_str()]);
    state.publish(Change::Pushers {
        user_id: user_id.as_str(),
    });
    e2ee::device_lists_changed(state, user_id, change).await?;
    Ok(())
}

/// Deletes devices (and their tokens), consuming the UIA session that authorised it, if any.
pub async fn delete_devices(
    state: &Base,
    user_id: &UserId,
    device_ids: &[&str],
    uia_session: Option<&str>,
) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    if let Some(session) = uia_session {
        consume_uia(&mut tx, session).await?;
    }
    // One change per device, so other servers are told which devices went.
    let mut changes = None;
    for device_id in device_ids {
        Storage::delete_device(&mut tx, user_id.as_str(), device_id).await?;
        let change = Storage::record_device_change(&mut tx, user_id.as_str(), Some(device_id)).await?;
        changes = Some(changes.map_or((change, change), |(first, _)| (first, change)));
    }
    tx.commit().await?;
    state.notifier.wake([user_id.as_str()]);
    state.publish(Change::Pushers {
        user_id: user_id.as_str(),
    });
    if let Some((first, last)) = changes {
        e2ee::device_lists_changed_since(state, user_id, first - 1, last).await?;
    }
    Ok(())
}

/// Deletes every device of the user, and with them every token.
pub async fn log_out_everywhere(state: &Base, user_id: &UserId) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    Storage::delete_devices_except(&mut tx, user_id.as_str(), None).await?;
    let change = Storage::record_device_list_change(&mut tx, user_id.as_str()).await?;
    tx.commit().await?;
    state.notifier.wake([user_id.as_str()]);
    state.publish(Change::Pushers {
        user_id: user_id.as_str(),
    });
    e2ee::device_lists_changed(state, user_id, change).await?;
    Ok(())
}
