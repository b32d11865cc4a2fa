//! Room aliases (`/directory/room/{alias}`, `/rooms/{roomId}/aliases`), the public room
//! directory (`/directory/list/room/{roomId}`, `/publicRooms`), and reports.

use ruma::{
    UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        reporting::report_user,
        room::{Visibility, aliases, report_content, report_room},
    },
    directory::{PublicRoomsChunk, RoomNetwork, RoomTypeFilter},
};
use serde_json::Value;

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    error::{ApiError, ApiResult},
    rooms::{
        access::{require_joined, require_room, visible_event},
        directory,
    },
};

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn create(
    state: AppState,
    request: Ruma<create_alias::v3::Request>,
) -> ApiResult<create_alias::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    require_room(&state, body.room_id.as_str()).await?;
    directory::add_alias(&state, sender, &body.room_alias, &body.room_id).await?;
    Ok(create_alias::v3::Response::new())
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn resolve(state: AppState, request: Ruma<get_alias::v3::Request>) -> ApiResult<get_alias::v3::Response> {
    let alias = &request.body.room_alias;
    if alias.server_name() != state.config.server_name {
        let Some(federation) = &state.federation else {
            return Err(ApiError::not_found(
                "Federation is disabled: no aliases of other servers",
            ));
        };
        let (room_id, servers) = federation.resolve_remote_alias(alias).await?;
        return Ok(get_alias::v3::Response::new(room_id, servers));
    }
    if state.storage.alias(alias.as_str()).await?.is_none() {
        // An application service may make it exist (spec: "Room alias query").
        state.appservices.query_alias(alias).await;
    }
    let room_id = directory::local_alias_target(&state, alias).await?;
    Ok(get_alias::v3::Response::new(
        room_id,
        vec![state.config.server_name.clone()],
    ))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`: by its creator, a room moderator
/// (power to change the canonical alias) or a server admin.
pub async fn delete(
    state: AppState,
    request: Ruma<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    let sender = request.sender()?;
    directory::delete_alias(&state, sender, &request.body.room_alias).await?;
    Ok(delete_alias::v3::Response::new())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub async fn room_aliases(state: AppState, request: Ruma<aliases::v3::Request>) -> ApiResult<aliases::v3::Response> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    require_joined(&state, room_id, &sender.user_id).await?;
    let aliases = state.storage.aliases_of_room(room_id.as_str()).await?;
    Ok(aliases::v3::Response::new(
        aliases.into_iter().filter_map(|a| a.try_into().ok()).collect(),
    ))
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn visibility(
    state: AppState,
    request: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    let room_id = &request.body.room_id;
    require_room(&state, room_id.as_str()).await?;
    let visibility = if state.storage.is_published(room_id.as_str()).await? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`: room moderators only.
pub async fn set_visibility(
    state: AppState,
    request: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    directory::publish(
        &state,
        &sender.user_id,
        &body.room_id,
        body.visibility == Visibility::Public,
    )
    .await?;
    Ok(set_room_visibility::v3::Response::new())
}

/// The directory entry of a room, from its current state.
async fn chunk_for(state: &AppState, room_id: &str) -> ApiResult<Option<PublicRoomsChunk>> {
    let summary = crate::rooms::summary::room_summary(state, room_id).await?;
    Ok(summary.and_then(|summary| serde_json::from_value(Value::Object(summary)).ok()))
}

/// Pages the directory: `since` tokens are `o<offset>`.
pub(crate) async fn public_rooms(
    state: &AppState,
    limit: Option<UInt>,
    since: Option<&str>,
    search: Option<&str>,
    room_types: &[RoomTypeFilter],
    network: &RoomNetwork,
) -> ApiResult<(Vec<PublicRoomsChunk>, Option<String>, Option<String>, usize)> {
    let offset = match since {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit.map_or(100, |l| u64::from(l).clamp(1, 500) as usize);
    let search = search.map(str::to_lowercase).filter(|s| !s.is_empty());
    let mut all = Vec::new();
    for (room_id, _) in listed_rooms(state, network).await? {
        let Some(chunk) = chunk_for(state, &room_id).await? else {
            continue;
        };
        let matches = search.as_ref().is_none_or(|term| {
            [
                chunk.name.as_deref(),
                chunk.topic.as_deref(),
                chunk.canonical_alias.as_ref().map(|a| a.as_str()),
            ]
            .iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(term.as_str()))
        });
        // `room_types` (v1.4): any of the listed types, `null` for rooms without one.
        let type_matches = room_types.is_empty()
            || room_types
                .iter()
                .any(|wanted| wanted.as_str() == chunk.room_type.as_ref().map(|t| t.as_str()));
        if matches && type_matches {
            all.push(chunk);
        }
    }
    let total = all.len();
    let next = (offset.saturating_add(limit) < total).then(|| format!("o{}", offset.saturating_add(limit)));
    let prev = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    let page = all.into_iter().skip(offset).take(limit).collect();
    Ok((page, next, prev, total))
}

/// The rooms of the directory a `publicRooms` request asks for, most members first: the
/// Matrix one; an appservice network's (`third_party_instance_id`, `{appservice}|{network}`);
/// or all of them (`include_all_networks`).
async fn listed_rooms(state: &AppState, network: &RoomNetwork) -> ApiResult<Vec<(String, i64)>> {
    let storage = &state.storage;
    Ok(match network {
        RoomNetwork::ThirdParty(instance) => match crate::appservices::queries::parse_instance_id(instance) {
            Some(network) => storage.appservice_listed_rooms(Some(network)).await?,
            None => Vec::new(),
        },
        RoomNetwork::All => {
            let mut rooms = storage.published_rooms().await?;
            for room in storage.appservice_listed_rooms(None).await? {
                if !rooms.iter().any(|(room_id, _)| *room_id == room.0) {
                    rooms.push(room);
                }
            }
            rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            rooms
        }
        _ => storage.published_rooms().await?,
    })
}

/// Federation, to read another server's directory.
fn remote_directory<'a>(
    state: &'a AppState,
    server: &ruma::ServerName,
) -> ApiResult<&'a std::sync::Arc<crate::federation::Federation>> {
    state
        .federation
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("Federation is disabled: cannot read {server}'s directory")))
}

/// `GET /_matrix/client/v3/publicRooms`
pub async fn list_public(
    state: AppState,
    request: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let body = &request.body;
    if let Some(server) = body
        .server
        .as_ref()
        .filter(|server| *server != &state.config.server_name)
    {
        let page = remote_directory(&state, server)?
            .remote_public_rooms(server, body.limit, body.since.clone(), None, Default::default())
            .await?;
        let mut response = get_public_rooms::v3::Response::new(page.chunk);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.total_room_count_estimate = page.total;
        return Ok(response);
    }
    let (chunk, next, prev, total) = public_rooms(
        &state,
        body.limit,
        body.since.as_deref(),
        None,
        &[],
        &RoomNetwork::Matrix,
    )
    .await?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total as u64).ok();
    Ok(response)
}

/// `POST /_matrix/client/v3/publicRooms` (with a search filter)
pub async fn search_public(
    state: AppState,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    let body = &request.body;
    if let Some(server) = body
        .server
        .as_ref()
        .filter(|server| *server != &state.config.server_name)
    {
        let page = remote_directory(&state, server)?
            .remote_public_rooms(
                server,
                body.limit,
                body.since.clone(),
                Some(body.filter.clone()),
                body.room_network.clone(),
            )
            .await?;
        let mut response = get_public_rooms_filtered::v3::Response::new();
        response.chunk = page.chunk;
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.total_room_count_estimate = page.total;
        return Ok(response);
    }
    let search = body.filter.generic_search_term.as_deref();
    let (chunk, next, prev, total) = public_rooms(
        &state,
        body.limit,
        body.since.as_deref(),
        search,
        &body.filter.room_types,
        &body.room_network,
    )
    .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total as u64).ok();
    Ok(response)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`: stored for administrators.
pub async fn report_event(
    state: AppState,
    request: Ruma<report_content::v3::Request>,
) -> ApiResult<report_content::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    visible_event(&state, &body.room_id, &sender.user_id, body.event_id.as_str()).await?;
    state
        .storage
        .insert_report(
            body.room_id.as_str(),
            Some(body.event_id.as_str()),
            sender.user_id.as_str(),
            body.reason.as_deref(),
            None,
        )
        .await?;
    Ok(report_content::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`
pub async fn report_whole_room(
    state: AppState,
    request: Ruma<report_room::v3::Request>,
) -> ApiResult<report_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    require_room(&state, body.room_id.as_str()).await?;
    state
        .storage
        .insert_report(
            body.room_id.as_str(),
            None,
            sender.user_id.as_str(),
            Some(&body.reason),
            None,
        )
        .await?;
    Ok(report_room::v3::Response::new())
}

/// `POST /_matrix/client/v3/users/{userId}/report` (v1.14): stored for administrators, whoever
/// the user is. Every well-formed user ID, local or remote, known or not, gets the same 200 after
/// the same write, so reports do not tell who exists (the spec allows concealing it).
pub async fn report_user(
    state: AppState,
    request: Ruma<report_user::v3::Request>,
) -> ApiResult<report_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    state
        .storage
        .insert_user_report(body.user_id.as_str(), sender.user_id.as_str(), &body.reason)
        .await?;
    Ok(report_user::v3::Response::new())
}
