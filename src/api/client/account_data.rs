//! Account data, global and per room (`/user/{userId}/[rooms/{roomId}/]account_data/{type}`),
//! and room tags (`/user/{userId}/rooms/{roomId}/tags`), which are the `m.tag` room account
//! data. Stored with a stream position; `/sync` delivers changes.

use http::StatusCode;
use ruma::{
    RoomId,
    api::{
        client::{
            config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
            tag::{create_tag, delete_tag, get_tags},
        },
        error::ErrorKind,
    },
    serde::Raw,
};
use serde_json::{Map, Value, json, value::RawValue};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    account_data::set_account_data,
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
};

/// Types the server manages itself and clients may not write through these endpoints (spec).
const SERVER_MANAGED_GLOBAL: &[&str] = &["m.push_rules"];
const SERVER_MANAGED_ROOM: &[&str] = &["m.fully_read"];

/// Checks the target user and returns the stored key for the room (`""` for global data).
fn scope<'a>(sender: &Sender, user_id: &ruma::UserId, room_id: Option<&'a RoomId>) -> ApiResult<&'a str> {
    sender.ensure_is(user_id, "account data")?;
    Ok(room_id.map_or("", RoomId::as_str))
}

async fn store(state: &AppState, sender: &Sender, room: &str, data_type: &str, content: &RawValue) -> ApiResult<()> {
    let managed = if room.is_empty() {
        SERVER_MANAGED_GLOBAL
    } else {
        SERVER_MANAGED_ROOM
    };
    if managed.contains(&data_type) {
        // The spec's status for server-controlled types is 405, with M_BAD_JSON.
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadJson,
            format!("{data_type} is controlled by the server and cannot be set by clients"),
        ));
    }
    if !content.get().trim_start().starts_with('{') {
        return Err(ApiError::bad_json("Account data content must be a JSON object"));
    }
    Ok(set_account_data(state, &sender.user_id, room, data_type, content.get()).await?)
}

async fn load(state: &AppState, sender: &Sender, room: &str, data_type: &str) -> ApiResult<Box<RawValue>> {
    let content = state
        .storage
        .account_data(sender.user_id.as_str(), room, data_type)
        .await?
        .ok_or_else(|| ApiError::not_found("No account data of that type"))?;
    RawValue::from_string(content).map_err(|_| ApiError::internal())
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set(
    state: AppState,
    request: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room = scope(sender, &body.user_id, None)?;
    store(&state, sender, room, &body.event_type.to_string(), body.data.json()).await?;
    Ok(set_global_account_data::v3::Response::new())
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get(
    state: AppState,
    request: Ruma<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room = scope(sender, &body.user_id, None)?;
    let content = load(&state, sender, room, &body.event_type.to_string()).await?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(content)))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room(
    state: AppState,
    request: Ruma<set_room_account_data::v3::Request>,
) -> ApiResult<set_room_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room = scope(sender, &body.user_id, Some(&body.room_id))?;
    store(&state, sender, room, &body.event_type.to_string(), body.data.json()).await?;
    Ok(set_room_account_data::v3::Response::new())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room(
    state: AppState,
    request: Ruma<get_room_account_data::v3::Request>,
) -> ApiResult<get_room_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room = scope(sender, &body.user_id, Some(&body.room_id))?;
    let content = load(&state, sender, room, &body.event_type.to_string()).await?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(content)))
}

/// The room's `m.tag` content's `tags` map (empty if none).
async fn tags_of(state: &AppState, sender: &Sender, room: &str) -> ApiResult<Map<String, Value>> {
    let stored = state
        .storage
        .account_data(sender.user_id.as_str(), room, "m.tag")
        .await?;
    let content: Value = stored
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    Ok(content
        .get("tags")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default())
}

async fn store_tags(state: &AppState, sender: &Sender, room: &str, tags: Map<String, Value>) -> ApiResult<()> {
    let content = json!({ "tags": tags }).to_string();
    Ok(set_account_data(state, &sender.user_id, room, "m.tag", &content).await?)
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
pub async fn tags(state: AppState, request: Ruma<get_tags::v3::Request>) -> ApiResult<get_tags::v3::Response> {
    let sender = request.sender()?;
    let room = scope(sender, &request.body.user_id, Some(&request.body.room_id))?;
    let tags = tags_of(&state, sender, room).await?;
    let tags = serde_json::from_value(Value::Object(tags)).map_err(|_| ApiError::internal())?;
    Ok(get_tags::v3::Response::new(tags))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn add_tag(state: AppState, request: Ruma<create_tag::v3::Request>) -> ApiResult<create_tag::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room = scope(sender, &body.user_id, Some(&body.room_id))?;
    if body.tag.len() > 255 {
        return Err(ApiError::invalid_param("Tag names are at most 255 bytes"));
    }
    let mut tags = tags_of(&state, sender, room).await?;
    tags.insert(
        body.tag.clone(),
        serde_json::to_value(&body.tag_info).map_err(|_| ApiError::internal())?,
    );
    store_tags(&state, sender, room, tags).await?;
    Ok(create_tag::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn remove_tag(
    state: AppState,
    request: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room = scope(sender, &body.user_id, Some(&body.room_id))?;
    let mut tags = tags_of(&state, sender, room).await?;
    if tags.remove(&body.tag).is_some() {
        store_tags(&state, sender, room, tags).await?;
    }
    Ok(delete_tag::v3::Response::new())
}
