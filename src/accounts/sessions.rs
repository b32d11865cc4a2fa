//! Sessions: what a login, a registration or a refresh hands out (a device, an access token
//! and perhaps a refresh token), and turning a presented access token back into a user.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use ruma::{OwnedDeviceId, OwnedUserId};

use super::tokens::{generate_token, hash_token, random_string};
use crate::{
    error::{ApiError, ApiResult},
    storage::{Storage, Tx, now_ms},
};

/// A device's last-seen time and IP are written at most this often, not on every request.
const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;

/// Longest device ID a client may choose.
const MAX_DEVICE_ID_BYTES: usize = 255;

/// The device of an application service's request that names none. No such device exists,
/// and none may be created under this ID: endpoints that need a real device (keys, to-device
/// inboxes) are for appservices that create devices (MSC4190) and name them with `device_id`.
pub const NO_DEVICE: &str = "_appservice";

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Sender {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
    pub is_admin: bool,
    /// The application service acting (with its `as_token`), as its own user or as one in
    /// its namespace.
    pub appservice: Option<std::sync::Arc<hearth_appservices::Appservice>>,
}

impl Sender {
    /// Refuses (403 `M_FORBIDDEN`) to act on another user's `what` (profile, account data…).
    pub fn ensure_is(&self, target: &ruma::UserId, what: &str) -> ApiResult<()> {
        if self.user_id != target {
            return Err(ApiError::forbidden(format!(
                "You cannot change or read another user's {what}"
            )));
        }
        Ok(())
    }
}

/// The credentials of a new session, shown to the client once.
#[derive(Debug)]
pub struct NewSession {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Lifetime of the access token; only tokens issued with a refresh token expire.
    pub expires_in: Option<Duration>,
    /// The `device_lists` position at which a new device was recorded (None: an existing
    /// device was reused). The caller announces it once the transaction commits.
    pub device_list_change: Option<i64>,
}

/// What a new session is for.
pub struct SessionRequest<'a> {
    pub user_id: &'a str,
    /// Reuse this device (its old tokens are revoked) or create one with this ID.
    pub device_id: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub with_refresh_token: bool,
    pub ip: Option<&'a str>,
    /// Lifetime of an access token issued with a refresh token.
    pub refreshable_lifetime: Duration,
}

/// Checks a client-chosen device ID before any work is done.
pub fn check_device_id(device_id: Option<&str>) -> ApiResult<()> {
    match device_id {
        Some(id) if id.is_empty() || id.len() > MAX_DEVICE_ID_BYTES => Err(ApiError::invalid_param(format!(
            "device_id must be 1 to {MAX_DEVICE_ID_BYTES} bytes"
        ))),
        Some(NO_DEVICE) => Err(ApiError::invalid_param(format!("device_id {NO_DEVICE} is reserved"))),
        _ => Ok(()),
    }
}

/// Creates the device (or takes over an existing one) and issues tokens for it, inside the
/// caller's transaction.
pub async fn create_session(tx: &mut Tx, request: SessionRequest<'_>) -> ApiResult<NewSession> {
    check_device_id(request.device_id)?;
    let device_id = match request.device_id {
        Some(id) => id.to_owned(),
        None => random_string(10).to_uppercase(),
    };
    let created = Storage::upsert_device(tx, request.user_id, &device_id, request.display_name, request.ip).await?;
    // A login reusing a device ID replaces that device's session.
    Storage::delete_device_tokens(tx, request.user_id, &device_id).await?;
    let lifetime = request.with_refresh_token.then_some(request.refreshable_lifetime);
    let mut session = issue_tokens(tx, request.user_id, &device_id, lifetime, None).await?;
    // A new device must reach everyone who encrypts for this user (as Synapse announces it).
    if created {
        session.device_list_change = Some(Storage::record_device_change(tx, request.user_id, Some(&device_id)).await?);
    }
    Ok(session)
}

/// Issues an access token, and a refresh token when `refreshable_lifetime` is set (the access
/// token then expires after it).
async fn issue_tokens(
    tx: &mut Tx,
    user_id: &str,
    device_id: &str,
    refreshable_lifetime: Option<Duration>,
    replaces_refresh_token: Option<&str>,
) -> ApiResult<NewSession> {
    let access_token = generate_token("hat_");
    let refresh_token = refreshable_lifetime.map(|_| generate_token("hrt_"));
    let refresh_hash = refresh_token.as_deref().map(hash_token);
    if let Some(hash) = &refresh_hash {
        Storage::insert_refresh_token(tx, hash, user_id, device_id, replaces_refresh_token).await?;
    }
    let expires_ts = refreshable_lifetime.map(|lifetime| now_ms() + lifetime.as_millis() as i64);
    Storage::insert_access_token(
        tx,
        &hash_token(&access_token),
        user_id,
        device_id,
        expires_ts,
        refresh_hash.as_deref(),
    )
    .await?;
    Ok(NewSession {
        device_id: device_id.into(),
        access_token,
        refresh_token,
        expires_in: refreshable_lifetime,
        device_list_change: None,
    })
}

/// Exchanges a refresh token for a new access token and refresh token (spec: "Refreshing
/// access tokens"). The old pair stays valid until the new one is first used, so a client whose
/// response got lost can retry with the old refresh token; a retry replaces the first answer.
pub async fn refresh_session(storage: &Storage, refresh_token: &str, lifetime: Duration) -> ApiResult<NewSession> {
    let hash = hash_token(refresh_token);
    let mut tx = storage.begin_write().await?;
    let Some(info) = Storage::refresh_token(&mut tx, &hash).await? else {
        return Err(ApiError::unknown_token(false));
    };
    if let Some(superseded) = &info.prev_token_hash {
        // This token is being used, so the one it replaced is done with.
        Storage::revoke_superseded_refresh_token(&mut tx, superseded).await?;
    }
    Storage::delete_successors(&mut tx, &hash).await?;
    let session = issue_tokens(&mut tx, &info.user_id, &info.device_id, Some(lifetime), Some(&hash)).await?;
    tx.commit().await?;
    Ok(session)
}

/// Devices whose "last seen" write is under way.
static TOUCHING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Resolves an access token to its user and device.
///
/// Expired tokens get `soft_logout: true` (the client may refresh or log in again keeping its
/// device); unknown tokens, and tokens of deactivated accounts, a hard logout.
pub async fn authenticate_access_token(storage: &Storage, token: &str, ip: IpAddr) -> ApiResult<Sender> {
    let info = storage
        .access_token(&hash_token(token))
        .await?
        .ok_or_else(|| ApiError::unknown_token(false))?;
    let now = now_ms();
    if info.expires_ts.is_some_and(|expires| expires <= now) {
        return Err(ApiError::unknown_token(true));
    }
    if let Some(superseded) = &info.superseded_refresh_token {
        // First use of a refreshed session: the pair it replaced stops working now.
        let mut tx = storage.begin_write().await?;
        Storage::revoke_superseded_refresh_token(&mut tx, superseded).await?;
        tx.commit().await?;
    }
    if info
        .last_seen_ts
        .is_none_or(|seen| now - seen > LAST_SEEN_RESOLUTION_MS)
    {
        // Off the request path: the device list's "last seen" may lag a moment. One write per
        // device at a time: requests arriving while it is under way do not pile up more.
        let key = format!("{}\n{}", info.user_id, info.device_id);
        let first = TOUCHING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone());
        if first {
            let (storage, user_id, device_id) = (storage.clone(), info.user_id.clone(), info.device_id.clone());
            tokio::spawn(async move {
                if let Err(error) = storage.touch_device(&user_id, &device_id, &ip.to_string()).await {
                    tracing::warn!(%error, "could not record device last-seen");
                }
                TOUCHING
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&key);
            });
        }
    }
    let user_id = OwnedUserId::try_from(info.user_id).map_err(|_| ApiError::internal())?;
    Ok(Sender {
        user_id,
        device_id: info.device_id.into(),
        is_guest: info.is_guest != 0,
        is_admin: info.is_admin != 0,
        appservice: None,
    })
}
