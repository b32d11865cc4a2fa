//! Server-side key backup: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`. The server stores the encrypted session keys
//! and the backup's public `auth_data`; it cannot read either.

use std::collections::BTreeMap;

use axum::Json;
use http::StatusCode;
use ruma::{
    UInt,
    api::{
        client::backup::{
            KeyBackupData, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
            create_backup_version, delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
            delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room,
            get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
        },
        error::{ErrorKind, WrongRoomKeysVersionErrorData},
    },
    serde::Raw,
};
use serde_json::{Map, Value, json};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    error::{ApiError, ApiResult},
    storage::{BackupKeyRow, BackupVersion},
};

fn no_backup() -> ApiError {
    ApiError::not_found("Unknown backup version")
}

/// A version number from the path; anything else names no backup.
fn parse_version(version: &str) -> ApiResult<i64> {
    version.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(no_backup)
}

/// The algorithm name and `auth_data` of an uploaded backup algorithm.
fn algorithm_parts(algorithm: &Raw<ruma::api::client::backup::BackupAlgorithm>) -> ApiResult<(String, String)> {
    algorithm
        .deserialize()
        .map_err(|e| ApiError::bad_json(format!("Invalid backup algorithm: {e}")))?;
    let value: Value = serde_json::from_str(algorithm.json().get()).map_err(|_| ApiError::bad_json("Invalid JSON"))?;
    let name = value
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_json("algorithm is required"))?;
    let auth_data = value
        .get("auth_data")
        .filter(|a| a.is_object())
        .ok_or_else(|| ApiError::bad_json("auth_data must be an object"))?;
    Ok((name.to_owned(), auth_data.to_string()))
}

async fn version_info(state: &AppState, user_id: &str, version: Option<i64>) -> ApiResult<Json<Value>> {
    let info = state
        .storage
        .backup_version(user_id, version)
        .await?
        .ok_or_else(no_backup)?;
    let count = state.storage.backup_key_count(user_id, info.version).await?;
    let auth_data: Value = serde_json::from_str(&info.auth_data).unwrap_or_else(|_| json!({}));
    Ok(Json(json!({
        "algorithm": info.algorithm,
        "auth_data": auth_data,
        "count": count,
        "etag": info.etag.to_string(),
        "version": info.version.to_string(),
    })))
}

/// `POST /_matrix/client/v3/room_keys/version`
pub async fn create_version(
    state: AppState,
    request: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<create_backup_version::v3::Response> {
    let sender = request.sender()?;
    let (algorithm, auth_data) = algorithm_parts(&request.body.algorithm)?;
    let version = state
        .storage
        .create_backup_version(sender.user_id.as_str(), &algorithm, &auth_data)
        .await?;
    Ok(create_backup_version::v3::Response::new(version.to_string()))
}

/// `GET /_matrix/client/v3/room_keys/version`
pub async fn latest_version(
    state: AppState,
    request: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    version_info(&state, sender.user_id.as_str(), None).await
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
pub async fn get_version(state: AppState, request: Ruma<get_backup_info::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let version = parse_version(&request.body.version)?;
    version_info(&state, sender.user_id.as_str(), Some(version)).await
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`: new `auth_data`; the algorithm
/// cannot change.
pub async fn update_version(
    state: AppState,
    request: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<update_backup_version::v3::Response> {
    let sender = request.sender()?;
    let version = parse_version(&request.body.version)?;
    let (algorithm, auth_data) = algorithm_parts(&request.body.algorithm)?;
    let user_id = sender.user_id.as_str();
    let existing = state
        .storage
        .backup_version(user_id, Some(version))
        .await?
        .ok_or_else(no_backup)?;
    if existing.algorithm != algorithm {
        return Err(ApiError::invalid_param(
            "The algorithm of a backup version cannot change",
        ));
    }
    if !state
        .storage
        .update_backup_version(user_id, version, &auth_data)
        .await?
    {
        return Err(no_backup());
    }
    Ok(update_backup_version::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub async fn delete_version(
    state: AppState,
    request: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    let sender = request.sender()?;
    let version = parse_version(&request.body.version)?;
    if !state
        .storage
        .delete_backup_version(sender.user_id.as_str(), version)
        .await?
    {
        return Err(no_backup());
    }
    Ok(delete_backup_version::v3::Response::new())
}

/// A key as uploaded, checked and ready to store.
fn key_row(room_id: &str, session_id: &str, raw: &Raw<KeyBackupData>) -> ApiResult<BackupKeyRow> {
    let data = raw
        .deserialize()
        .map_err(|e| ApiError::bad_json(format!("Invalid key for session {session_id}: {e}")))?;
    let value: Value = serde_json::from_str(raw.json().get()).map_err(|_| ApiError::bad_json("Invalid JSON"))?;
    let session_data = value
        .get("session_data")
        .ok_or_else(|| ApiError::bad_json("session_data is required"))?;
    Ok(BackupKeyRow {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: i64::from(u32::try_from(data.first_message_index).unwrap_or(u32::MAX)),
        forwarded_count: i64::from(u32::try_from(data.forwarded_count).unwrap_or(u32::MAX)),
        is_verified: i64::from(data.is_verified),
        session_data: session_data.to_string(),
    })
}

/// Stores keys into the version the client named, which must be the current one.
async fn put_keys(
    state: &AppState,
    user_id: &str,
    version: &str,
    keys: Vec<BackupKeyRow>,
) -> ApiResult<(String, UInt)> {
    let version = parse_version(version)?;
    match state.storage.put_backup_keys(user_id, version, &keys).await? {
        Ok((count, etag)) => Ok((etag.to_string(), UInt::try_from(count).unwrap_or_default())),
        Err(None) => Err(no_backup()),
        Err(Some(current)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(current.to_string())),
            "Keys can only be added to the current backup version",
        )),
    }
}

/// `PUT /_matrix/client/v3/room_keys/keys?version=`
pub async fn put_all(
    state: AppState,
    request: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<add_backup_keys::v3::Response> {
    let sender = request.sender()?;
    let mut keys = Vec::new();
    for (room_id, room) in &request.body.rooms {
        for (session_id, raw) in &room.sessions {
            keys.push(key_row(room_id.as_str(), session_id, raw)?);
        }
    }
    let (etag, count) = put_keys(&state, sender.user_id.as_str(), &request.body.version, keys).await?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}?version=`
pub async fn put_room(
    state: AppState,
    request: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let keys = body
        .sessions
        .iter()
        .map(|(session_id, raw)| key_row(body.room_id.as_str(), session_id, raw))
        .collect::<ApiResult<Vec<_>>>()?;
    let (etag, count) = put_keys(&state, sender.user_id.as_str(), &body.version, keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
pub async fn put_session(
    state: AppState,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let key = key_row(body.room_id.as_str(), &body.session_id, &body.session_data)?;
    let (etag, count) = put_keys(&state, sender.user_id.as_str(), &body.version, vec![key]).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

/// The version keys are read from or deleted in: it must exist.
async fn existing_version(state: &AppState, user_id: &str, version: &str) -> ApiResult<BackupVersion> {
    let version = parse_version(version)?;
    state
        .storage
        .backup_version(user_id, Some(version))
        .await?
        .ok_or_else(no_backup)
}

fn key_json(row: &BackupKeyRow) -> Value {
    let session_data: Value = serde_json::from_str(&row.session_data).unwrap_or_else(|_| json!({}));
    json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified != 0,
        "session_data": session_data,
    })
}

fn sessions_json<'a>(rows: impl Iterator<Item = &'a BackupKeyRow>) -> Value {
    let sessions: Map<String, Value> = rows.map(|row| (row.session_id.clone(), key_json(row))).collect();
    json!({ "sessions": sessions })
}

/// `GET /_matrix/client/v3/room_keys/keys?version=`
pub async fn get_all(state: AppState, request: Ruma<get_backup_keys::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let user_id = sender.user_id.as_str();
    let version = existing_version(&state, user_id, &request.body.version).await?;
    let rows = state.storage.backup_keys(user_id, version.version, None, None).await?;
    let mut by_room: BTreeMap<&str, Vec<&BackupKeyRow>> = BTreeMap::new();
    for row in &rows {
        by_room.entry(row.room_id.as_str()).or_default().push(row);
    }
    let rooms: Map<String, Value> = by_room
        .into_iter()
        .map(|(room, rows)| (room.to_owned(), sessions_json(rows.into_iter())))
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}?version=`: an empty map for a room
/// without keys.
pub async fn get_room(state: AppState, request: Ruma<get_backup_keys_for_room::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let user_id = sender.user_id.as_str();
    let version = existing_version(&state, user_id, &request.body.version).await?;
    let rows = state
        .storage
        .backup_keys(user_id, version.version, Some(request.body.room_id.as_str()), None)
        .await?;
    Ok(Json(sessions_json(rows.iter())))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
pub async fn get_session(
    state: AppState,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let user_id = sender.user_id.as_str();
    let body = &request.body;
    let version = existing_version(&state, user_id, &body.version).await?;
    let rows = state
        .storage
        .backup_keys(
            user_id,
            version.version,
            Some(body.room_id.as_str()),
            Some(&body.session_id),
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| ApiError::not_found("No key backed up for this session"))?;
    Ok(Json(key_json(row)))
}

async fn delete_keys(
    state: &AppState,
    user_id: &str,
    version: &str,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> ApiResult<(String, UInt)> {
    let version = existing_version(state, user_id, version).await?;
    let (count, etag) = state
        .storage
        .delete_backup_keys(user_id, version.version, room_id, session_id)
        .await?;
    Ok((etag.to_string(), UInt::try_from(count).unwrap_or_default()))
}

/// `DELETE /_matrix/client/v3/room_keys/keys?version=`
pub async fn delete_all(
    state: AppState,
    request: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<delete_backup_keys::v3::Response> {
    let sender = request.sender()?;
    let (etag, count) = delete_keys(&state, sender.user_id.as_str(), &request.body.version, None, None).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}?version=`
pub async fn delete_room(
    state: AppState,
    request: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (etag, count) = delete_keys(
        &state,
        sender.user_id.as_str(),
        &body.version,
        Some(body.room_id.as_str()),
        None,
    )
    .await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
pub async fn delete_session(
    state: AppState,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let (etag, count) = delete_keys(
        &state,
        sender.user_id.as_str(),
        &body.version,
        Some(body.room_id.as_str()),
        Some(&body.session_id),
    )
    .await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, count))
}
