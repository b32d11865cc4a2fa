//! Queries other servers make about our users and aliases: `GET /query/profile` and
//! `GET /query/directory`.

use ruma::{
    OwnedServerName,
    api::federation::query::{get_profile_information, get_room_information},
    profile::UserProfile,
};

use crate::{
    api::{ruma::Ruma, state::AppState},
    error::{ApiError, ApiResult},
    rooms::directory::local_alias_target,
};

/// A local user's profile, or one field of it.
pub async fn profile(
    state: AppState,
    request: Ruma<get_profile_information::v1::Request>,
) -> ApiResult<get_profile_information::v1::Response> {
    request.origin()?;
    let user_id = &request.body.user_id;
    if user_id.server_name() != state.config.server_name {
        return Err(ApiError::invalid_param("The user is not on this server"));
    }
    if state.storage.user(user_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("No such user"));
    }
    let mut profile = state.storage.profile(user_id.as_str()).await?;
    if let Some(field) = &request.body.field {
        profile.retain(|name, _| name == field.as_str());
    }
    let mut response = get_profile_information::v1::Response::new();
    response.data = profile.into_iter().collect::<UserProfile>();
    Ok(response)
}

/// The room a local alias names, and servers that can help join it (those with joined
/// members, ours first).
pub async fn directory(
    state: AppState,
    request: Ruma<get_room_information::v1::Request>,
) -> ApiResult<get_room_information::v1::Response> {
    request.origin()?;
    let alias = &request.body.room_alias;
    if alias.server_name() != state.config.server_name {
        return Err(ApiError::invalid_param("The alias is not on this server"));
    }
    let room_id = local_alias_target(&state, alias).await?;
    let mut servers: Vec<OwnedServerName> = vec![state.config.server_name.clone()];
    for member in state.storage.joined_members(room_id.as_str()).await? {
        if let Ok(user) = ruma::UserId::parse(&member)
            && !servers.iter().any(|s| s == user.server_name())
        {
            servers.push(user.server_name().to_owned());
        }
    }
    Ok(get_room_information::v1::Response::new(room_id, servers))
}
