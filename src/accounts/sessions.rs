//! Sessions: what a login, a registration or a refresh hands out (a device, an access token
//! and perhaps a refresh token), and turning a presented access token back into a user.

use std::{net::IpAddr, time::Duration};

use ruma::{OwnedDeviceId, OwnedUserId};

use super::tokens::{generate_token, hash_token, random_string};
use crate::{
    error::{ApiError, ApiResult},
    storage::{Storage, now_ms},
};

/// A device's last-seen time and IP are written at most this often, not on every request.
const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Sender {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
    pub is_admin: bool,
}

/// The credentials of a new session, shown to the client once.
#[derive(Debug)]
pub struct NewSession {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Lifetime of the access token; only tokens issued with a refresh token expire.
    pub expires_in: Option<Duration>,
}

/// What a new session is for.
pub struct SessionRequest<'a> {
    pub user_id: &'a str,
    /// Reuse this device (its old tokens are revoked) or create one with this ID.
    pub device_id: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub with_refresh_token: bool,
    pub ip: Option<&'a str>,
}

/// Creates the device (or takes over an existing one) and issues tokens for it.
pub async fn create_session(
    storage: &Storage,
    request: SessionRequest<'_>,
    refreshable_lifetime: Duration,
) -> ApiResult<NewSession> {
    let device_id = match request.device_id {
        Some(id) => id.to_owned(),
        None => random_string(10).to_uppercase(),
    };
    let mut tx = storage.begin_write().await?;
    Storage::upsert_device(
        &mut tx,
        request.user_id,
        &device_id,
        request.display_name,
        request.ip,
    )
    .await?;
    // A login reusing a device ID replaces that device's session.
    Storage::delete_device_tokens(&mut tx, request.user_id, &device_id).await?;
    let session = issue_tokens(
        &mut tx,
        request.user_id,
        &device_id,
        request.with_refresh_token,
        refreshable_lifetime,
    )
    .await?;
    tx.commit()
        .await
        .map_err(crate::storage::StorageError::from)?;
    Ok(session)
}

async fn issue_tokens(
    tx: &mut crate::storage::Tx,
    user_id: &str,
    device_id: &str,
    with_refresh_token: bool,
    refreshable_lifetime: Duration,
) -> ApiResult<NewSession> {
    let access_token = generate_token("hat_");
    let (refresh_token, expires_in) = if with_refresh_token {
        let refresh_token = generate_token("hrt_");
        Storage::insert_refresh_token(tx, &hash_token(&refresh_token), user_id, device_id).await?;
        (Some(refresh_token), Some(refreshable_lifetime))
    } else {
        (None, None)
    };
    let expires_ts = expires_in.map(|lifetime| now_ms() + lifetime.as_millis() as i64);
    let refresh_hash = refresh_token.as_deref().map(hash_token);
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
        expires_in,
    })
}

/// Exchanges a refresh token for a new access token and refresh token. The old refresh token
/// and the access token issued with it stop working.
pub async fn refresh_session(
    storage: &Storage,
    refresh_token: &str,
    lifetime: Duration,
) -> ApiResult<NewSession> {
    let mut tx = storage.begin_write().await?;
    let Some(info) = Storage::take_refresh_token(&mut tx, &hash_token(refresh_token)).await? else {
        return Err(ApiError::unknown_token(false));
    };
    let session = issue_tokens(&mut tx, &info.user_id, &info.device_id, true, lifetime).await?;
    tx.commit()
        .await
        .map_err(crate::storage::StorageError::from)?;
    Ok(session)
}

/// Resolves an access token to its user and device.
///
/// Expired tokens get `soft_logout: true` (the client may refresh or log in again keeping its
/// device); unknown tokens, and tokens of deactivated accounts, a hard logout.
pub async fn authenticate_access_token(
    storage: &Storage,
    token: &str,
    ip: IpAddr,
) -> ApiResult<Sender> {
    let info = storage
        .access_token(&hash_token(token))
        .await?
        .ok_or_else(|| ApiError::unknown_token(false))?;
    let now = now_ms();
    if info.expires_ts.is_some_and(|expires| expires <= now) {
        return Err(ApiError::unknown_token(true));
    }
    if info
        .last_seen_ts
        .is_none_or(|seen| now - seen > LAST_SEEN_RESOLUTION_MS)
    {
        // Off the request path: the device list's "last seen" may lag a moment.
        let (storage, user_id, device_id) = (
            storage.clone(),
            info.user_id.clone(),
            info.device_id.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = storage
                .touch_device(&user_id, &device_id, &ip.to_string())
                .await
            {
                tracing::warn!(%error, "could not record device last-seen");
            }
        });
    }
    let user_id = OwnedUserId::try_from(info.user_id).map_err(|_| ApiError::internal())?;
    Ok(Sender {
        user_id,
        device_id: info.device_id.into(),
        is_guest: info.is_guest != 0,
        is_admin: info.is_admin != 0,
    })
}
