//! Membership: join, invite, leave, forget, kick, ban, unban, and the member lists.

use axum::Json;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_members, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
};
use serde_json::{Map, Value, json};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
    rooms::{
        access::{read_access, require_joined},
        client_event::{Unsigned, client_event},
        joins,
        membership::{Change, change_membership},
    },
    storage::{EventRow, StateMap},
};

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_by_id(
    state: AppState,
    request: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<join_room_by_id::v3::Response> {
    let sender = request.sender()?;
    let extra = extra_fields(&request.raw_body);
    let room_id = join_room(&state, sender, &request.body.room_id, &[], extra).await?;
    Ok(join_room_by_id::v3::Response::new(room_id))
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_by_id_or_alias(
    state: AppState,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let sender = request.sender()?;
    let extra = extra_fields(&request.raw_body);
    let (room_id, via) = room_and_servers(&state, &request.body.room_id_or_alias, &request.body.via).await?;
    let room_id = join_room(&state, sender, &room_id, &via, extra).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// The room a room ID or alias names, and the servers to reach it through: the client's
/// `via`, and for another server's alias, the servers its directory names.
async fn room_and_servers(
    state: &AppState,
    room: &ruma::OwnedRoomOrAliasId,
    via: &[ruma::OwnedServerName],
) -> ApiResult<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    let mut via = via.to_vec();
    let room_id = match (&state.federation, OwnedRoomId::try_from(room.clone())) {
        (_, Ok(room_id)) => room_id,
        (Some(federation), Err(alias)) if alias.server_name() != state.config.server_name => {
            let (room_id, servers) = federation.resolve_remote_alias(&alias).await?;
            via.extend(servers);
            room_id
        }
        (_, Err(alias)) => {
            if state.storage.alias(alias.as_str()).await?.is_none() {
                // An application service may make it exist (spec: "Room alias query").
                state.appservices.query_alias(&alias).await;
            }
            joins::resolve_room(state, room).await?
        }
    };
    Ok((room_id, via))
}

/// Joins a room here, or through another server when this one is not in it.
async fn join_room(
    state: &AppState,
    sender: &Sender,
    room_id: &RoomId,
    via: &[ruma::OwnedServerName],
    extra: Map<String, Value>,
) -> ApiResult<OwnedRoomId> {
    if let Some(federation) = &state.federation
        && federation.must_join_remotely(room_id).await?
    {
        if sender.is_guest {
            return Err(ApiError::forbidden("Guests cannot join rooms on other servers"));
        }
        state.rate_limits.check_user(&state.rate_limits.joins, sender)?;
        let servers = federation.join_candidates(&sender.user_id, room_id, via).await?;
        if let Some(joined) = federation
            .join_remote(&sender.user_id, room_id, &servers, extra.clone())
            .await?
        {
            return Ok(joined);
        }
    }
    Ok(joins::join(state, sender, room_id, extra).await?)
}

/// The body's fields (a reason, a per-room display name, ...): they go into the member event.
fn extra_fields(body: &[u8]) -> Map<String, Value> {
    serde_json::from_slice(body).unwrap_or_default()
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}` (room versions 7 and later)
pub async fn knock(state: AppState, request: Ruma<knock_room::v3::Request>) -> ApiResult<knock_room::v3::Response> {
    let sender = request.sender()?;
    let (room_id, via) = room_and_servers(&state, &request.body.room_id_or_alias, &request.body.via).await?;
    let reason = request.body.reason.as_deref();
    if let Some(federation) = &state.federation
        && federation.must_join_remotely(&room_id).await?
    {
        if matches!(
            state
                .storage
                .membership(room_id.as_str(), sender.user_id.as_str())
                .await?
                .as_deref(),
            Some("invite" | "knock")
        ) {
            return Err(ApiError::forbidden(
                "You are already invited to (or knocking on) this room",
            ));
        }
        state.rate_limits.check_user(&state.rate_limits.joins, sender)?;
        let servers = federation.join_candidates(&sender.user_id, &room_id, &via).await?;
        federation
            .knock_remote(&sender.user_id, &room_id, &servers, reason)
            .await?;
        return Ok(knock_room::v3::Response::new(room_id));
    }
    joins::knock(&state, sender, &room_id, reason).await?;
    Ok(knock_room::v3::Response::new(room_id))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite(state: AppState, request: Ruma<invite_user::v3::Request>) -> ApiResult<invite_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let invite_user::v3::InvitationRecipient::UserId(invitee) = &body.recipient else {
        return Err(ApiError::invalid_param(
            "Third-party invites are not supported: this server uses no identity server",
        ));
    };
    if invitee.user_id.server_name() == state.config.server_name
        && state.storage.user(invitee.user_id.as_str()).await?.is_none()
    {
        // A user an appservice has yet to create (a bridge's ghost) is asked of it first.
        state.appservices.query_user(&invitee.user_id).await;
    }
    joins::invite(
        &state,
        sender,
        &body.room_id,
        &invitee.user_id,
        invitee.reason.as_deref(),
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave(state: AppState, request: Ruma<leave_room::v3::Request>) -> ApiResult<leave_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let membership = state
        .storage
        .membership(body.room_id.as_str(), sender.user_id.as_str())
        .await?;
    // Invited to (or knocking on) a room this server is not in: the leave goes through the
    // inviting server.
    if let Some(federation) = &state.federation
        && matches!(membership.as_deref(), Some("invite" | "knock"))
        && federation.must_leave_remotely(&body.room_id).await?
    {
        federation
            .leave_remote(&sender.user_id, &body.room_id, body.reason.as_deref())
            .await?;
        return Ok(leave_room::v3::Response::new());
    }
    joins::leave(&state, &sender.user_id, &body.room_id, body.reason.as_deref()).await?;
    Ok(leave_room::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`: once the user has left (or been banned),
/// sync stops sending the room, even with `include_leave`, until their membership changes again.
pub async fn forget(state: AppState, request: Ruma<forget_room::v3::Request>) -> ApiResult<forget_room::v3::Response> {
    let sender = request.sender()?;
    joins::forget(&state, &sender.user_id, &request.body.room_id).await?;
    Ok(forget_room::v3::Response::new())
}

async fn act_on(
    state: &AppState,
    sender: &Sender,
    room_id: &RoomId,
    target: &OwnedUserId,
    change: Change,
    reason: Option<&str>,
) -> ApiResult<()> {
    change_membership(state, room_id, &sender.user_id, target, change, reason).await?;
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick(state: AppState, request: Ruma<kick_user::v3::Request>) -> ApiResult<kick_user::v3::Response> {
    let body = &request.body;
    act_on(
        &state,
        request.sender()?,
        &body.room_id,
        &body.user_id,
        Change::Kick,
        body.reason.as_deref(),
    )
    .await?;
    Ok(kick_user::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban(state: AppState, request: Ruma<ban_user::v3::Request>) -> ApiResult<ban_user::v3::Response> {
    let body = &request.body;
    act_on(
        &state,
        request.sender()?,
        &body.room_id,
        &body.user_id,
        Change::Ban,
        body.reason.as_deref(),
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban(state: AppState, request: Ruma<unban_user::v3::Request>) -> ApiResult<unban_user::v3::Response> {
    let body = &request.body;
    act_on(
        &state,
        request.sender()?,
        &body.room_id,
        &body.user_id,
        Change::Unban,
        body.reason.as_deref(),
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}

/// A room joined with partial state lists its members once they are all here (as Synapse,
/// waiting up to a minute; after that, the members known).
async fn whole_members(state: &AppState, room_id: &ruma::RoomId) {
    if let Some(federation) = &state.federation
        && federation.partial.is_partial(room_id)
    {
        federation
            .partial
            .wait_until_whole(room_id, std::time::Duration::from_secs(60))
            .await;
    }
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members` (`membership`, `not_membership`)
pub async fn members(
    state: AppState,
    request: Ruma<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let access = read_access(&state, &body.room_id, &sender.user_id).await?;
    whole_members(&state, &body.room_id).await;
    let current = access.sees_current_state();
    let version = state
        .storage
        .room_version(body.room_id.as_str())
        .await?
        .ok_or_else(ApiError::internal)?;
    let rows = match &body.at {
        // The members as they were at a point of the timeline (a pagination token).
        Some(token) => {
            let position = super::rooms::parse_token(token)?;
            if !current && position > access.last().saturating_add(1) {
                return Err(ApiError::forbidden("You cannot see the room at that point"));
            }
            // The token is the gap before `position`: the state after the event just before it.
            let event = state
                .storage
                .event_at_or_before(body.room_id.as_str(), position - 1)
                .await?;
            let group = match event {
                Some(event) => state.storage.state_group_after(&event).await?,
                None => None,
            };
            let snapshot = match group {
                Some(group) => state.storage.state_group(group).await?,
                None => Default::default(),
            };
            member_rows(&state, snapshot).await?
        }
        None if current => state.storage.member_events(body.room_id.as_str()).await?,
        // A former member sees the members as they were when they left.
        None => {
            let snapshot = super::rooms::visible_state(&state, &body.room_id, &sender.user_id, &access).await?;
            member_rows(&state, snapshot).await?
        }
    };
    let mut chunk = Vec::new();
    for row in &rows {
        let event = client_event(row, &version, Unsigned::default());
        let membership = event["content"]["membership"].as_str().unwrap_or_default().to_owned();
        if body.membership.as_ref().is_some_and(|m| m.as_str() != membership)
            || body.not_membership.as_ref().is_some_and(|m| m.as_str() == membership)
        {
            continue;
        }
        let json = serde_json::value::RawValue::from_string(event.to_string()).map_err(|_| ApiError::internal())?;
        chunk.push(ruma::serde::Raw::from_json(json));
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

/// The member events of a state snapshot, by user ID.
async fn member_rows(state: &AppState, snapshot: StateMap) -> ApiResult<Vec<EventRow>> {
    let ids: Vec<String> = snapshot
        .into_iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .map(|(_, id)| id)
        .collect();
    let mut rows = state.storage.events(&ids).await?;
    rows.sort_by(|a, b| a.state_key.cmp(&b.state_key));
    Ok(rows)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`: members only. Each entry has both
/// `display_name` and `avatar_url`, `null` when unset, as Synapse answers and as conformance
/// suites and clients expect (the one place Hearth sends a `null` the spec types as a string:
/// the test suite's schema check names it).
pub async fn joined(state: AppState, request: Ruma<joined_members::v3::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let room_id = &request.body.room_id;
    require_joined(&state, room_id, &sender.user_id).await?;
    whole_members(&state, room_id).await;
    let mut joined = Map::new();
    for row in state.storage.member_events(room_id.as_str()).await? {
        let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
        let content = &pdu["content"];
        if content["membership"] != "join" {
            continue;
        }
        let Some(user_id) = row.state_key else { continue };
        let field = |name: &str| content[name].as_str().map_or(Value::Null, Value::from);
        joined.insert(
            user_id,
            json!({ "display_name": field("displayname"), "avatar_url": field("avatar_url") }),
        );
    }
    Ok(Json(json!({ "joined": joined })))
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn rooms_joined(
    state: AppState,
    request: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    let sender = request.sender()?;
    let rooms = state
        .storage
        .rooms_with_membership(sender.user_id.as_str(), "join")
        .await?;
    let rooms = rooms
        .into_iter()
        .filter_map(|id| OwnedRoomId::try_from(id).ok())
        .collect();
    Ok(joined_rooms::v3::Response::new(rooms))
}
