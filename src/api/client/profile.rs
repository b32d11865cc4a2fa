//! Profiles: `GET /profile/{userId}` and `GET/PUT/DELETE /profile/{userId}/{field}`
//! (`displayname`, `avatar_url`, and the extended profile fields of Matrix 1.16).

use http::StatusCode;
use ruma::{
    OwnedUserId,
    api::{
        client::profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
        error::ErrorKind,
    },
    profile::{ProfileFieldValue, UserProfile},
};
use serde_json::Value;

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::error::{ApiError, ApiResult};
use crate::rooms::membership::propagate_profile;

/// Longest display name accepted (as Synapse).
const MAX_DISPLAYNAME_CHARS: usize = 256;
/// Longest profile field name (spec, extended profiles).
const MAX_FIELD_NAME_BYTES: usize = 255;
/// Largest whole profile, as JSON (spec, extended profiles).
const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// A user's profile (or, for another server's user, `field` of it when given): a local
/// user's from storage, 404 if there is no such user; a remote user's from their server.
async fn profile_of(
    state: &AppState,
    user_id: &OwnedUserId,
    field: Option<&str>,
) -> ApiResult<serde_json::Map<String, Value>> {
    if user_id.server_name() != state.config.server_name {
        return match &state.federation {
            Some(federation) => federation.remote_profile(user_id, field).await,
            None => Err(ApiError::not_found(
                "Federation is disabled: no profiles of other servers",
            )),
        };
    }
    match state.storage.user(user_id.as_str()).await? {
        Some(_) => Ok(state.storage.profile(user_id.as_str()).await?),
        // An application service may make it exist (spec: "User query").
        None if state.appservices.query_user(user_id).await => Ok(state.storage.profile(user_id.as_str()).await?),
        None => Err(ApiError::not_found("No such user")),
    }
}

/// `GET /_matrix/client/v3/profile/{userId}`
pub async fn get(state: AppState, request: Ruma<get_profile::v3::Request>) -> ApiResult<get_profile::v3::Response> {
    let profile = profile_of(&state, &request.body.user_id, None).await?;
    let mut response = get_profile::v3::Response::new();
    response.data = profile.into_iter().collect::<UserProfile>();
    Ok(response)
}

/// `GET /_matrix/client/v3/profile/{userId}/{field}`
pub async fn get_field(
    state: AppState,
    request: Ruma<get_profile_field::v3::Request>,
) -> ApiResult<get_profile_field::v3::Response> {
    let field = request.body.field.as_str();
    let mut profile = profile_of(&state, &request.body.user_id, Some(field)).await?;
    let value = profile
        .remove(field)
        .ok_or_else(|| ApiError::not_found("Profile field not set"))?;
    let value = ProfileFieldValue::new(field, value).map_err(|_| ApiError::internal())?;
    Ok(get_profile_field::v3::Response::new(value))
}

/// `PUT /_matrix/client/v3/profile/{userId}/{field}`
pub async fn set_field(
    state: AppState,
    request: Ruma<set_profile_field::v3::Request>,
) -> ApiResult<set_profile_field::v3::Response> {
    let sender = request.sender()?;
    let target = &request.body.user_id;
    sender.ensure_is(target, "profile")?;
    let field = request.body.value.field_name();
    guests_keep_to_display_names(sender, field.as_str())?;
    let value = request.body.value.value().into_owned();
    if field.as_str().len() > MAX_FIELD_NAME_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::KeyTooLarge,
            "Profile field name is too long",
        ));
    }
    if let Value::String(name) = &value
        && field.as_str() == "displayname"
        && name.chars().count() > MAX_DISPLAYNAME_CHARS
    {
        return Err(ApiError::bad_json(format!(
            "Display name is too long (max {MAX_DISPLAYNAME_CHARS})"
        )));
    }
    let mut profile = profile_of(&state, target, None).await?;
    profile.insert(field.as_str().to_owned(), value.clone());
    if Value::Object(profile).to_string().len() > MAX_PROFILE_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::ProfileTooLarge,
            "Profile would be too large",
        ));
    }
    state
        .storage
        .set_profile_field(target.as_str(), field.as_str(), &value)
        .await?;
    if matches!(field.as_str(), "displayname" | "avatar_url") {
        propagate_profile(&state, target).await?;
    }
    Ok(set_profile_field::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{field}`
pub async fn delete_field(
    state: AppState,
    request: Ruma<delete_profile_field::v3::Request>,
) -> ApiResult<delete_profile_field::v3::Response> {
    let sender = request.sender()?;
    sender.ensure_is(&request.body.user_id, "profile")?;
    guests_keep_to_display_names(sender, request.body.field.as_str())?;
    state
        .storage
        .delete_profile_field(sender.user_id.as_str(), request.body.field.as_str())
        .await?;
    if matches!(request.body.field.as_str(), "displayname" | "avatar_url") {
        propagate_profile(&state, &sender.user_id).await?;
    }
    Ok(delete_profile_field::v3::Response::new())
}

/// Of their profile, guests may change only the display name (spec, guest access).
fn guests_keep_to_display_names(sender: &crate::accounts::sessions::Sender, field: &str) -> ApiResult<()> {
    if sender.is_guest && field != "displayname" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::GuestAccessForbidden,
            "Guest accounts may change only their display name",
        ));
    }
    Ok(())
}
