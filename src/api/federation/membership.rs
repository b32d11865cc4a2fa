//! Memberships from other servers: joins (`make_join`, `v2/send_join`), leaves
//! (`make_leave`, `v2/send_leave`) and invites for our users (`v2/invite`).

use http::StatusCode;
use ruma::api::{
    error::{ErrorKind, IncompatibleRoomVersionErrorData},
    federation::membership::{
        RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
        prepare_knock_event, prepare_leave_event,
    },
};
use serde_json::value::to_raw_value;

use crate::{
    api::{federation::federation, ruma::Ruma, state::AppState},
    error::{ApiError, ApiResult},
};

pub async fn make_join(
    state: AppState,
    request: Ruma<prepare_join_event::v1::Request>,
) -> ApiResult<prepare_join_event::v1::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    federation.require_whole_state(&body.room_id)?;
    let (version, rules) = federation.room_rules(&body.room_id).await?;
    require_supported(&version, &body.ver)?;
    let template = federation
        .make_join(origin, &body.room_id, &body.user_id, &rules)
        .await?;
    let mut response =
        prepare_join_event::v1::Response::new(to_raw_value(&template).map_err(|_| ApiError::internal())?);
    response.room_version = Some(version);
    Ok(response)
}

pub async fn send_join(
    state: AppState,
    request: Ruma<create_join_event::v2::Request>,
) -> ApiResult<create_join_event::v2::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    federation.require_whole_state(&body.room_id)?;
    let joined = federation
        .send_join(origin, &body.room_id, &body.event_id, &body.pdu, body.omit_members)
        .await?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.members_omitted = joined.members_omitted;
    room_state.state = joined.state;
    room_state.auth_chain = joined.auth_chain;
    room_state.servers_in_room = Some(joined.servers_in_room);
    room_state.event = joined.event;
    Ok(create_join_event::v2::Response::new(room_state))
}

/// 400 `M_INCOMPATIBLE_ROOM_VERSION` unless the requesting server supports the room's version
/// (no `ver` at all means version 1 only, as the spec says).
fn require_supported(version: &ruma::RoomVersionId, supported: &[ruma::RoomVersionId]) -> ApiResult<()> {
    let supported = if supported.is_empty() {
        &[ruma::RoomVersionId::V1][..]
    } else {
        supported
    };
    if supported.contains(version) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(version.clone())),
        format!("The room is version {version}, which your server does not support"),
    ))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
pub async fn make_knock(
    state: AppState,
    request: Ruma<prepare_knock_event::v1::Request>,
) -> ApiResult<prepare_knock_event::v1::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    let (version, rules) = federation.room_rules(&body.room_id).await?;
    require_supported(&version, &body.ver)?;
    if !rules.authorization.knocking {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(version.clone())),
            format!("Room version {version} does not allow knocking"),
        ));
    }
    let template = federation
        .make_membership(origin, &body.room_id, &body.user_id, "knock", &rules)
        .await?;
    Ok(prepare_knock_event::v1::Response::new(
        version,
        to_raw_value(&template).map_err(|_| ApiError::internal())?,
    ))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
pub async fn send_knock(
    state: AppState,
    request: Ruma<create_knock_event::v1::Request>,
) -> ApiResult<create_knock_event::v1::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    let described = federation
        .send_knock(origin, &body.room_id, &body.event_id, &body.pdu)
        .await?;
    Ok(create_knock_event::v1::Response::new(
        described.into_iter().map(RawStrippedState::Pdu).collect(),
    ))
}

pub async fn make_leave(
    state: AppState,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> ApiResult<prepare_leave_event::v1::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    let (version, rules) = federation.room_rules(&body.room_id).await?;
    let template = federation
        .make_leave(origin, &body.room_id, &body.user_id, &rules)
        .await?;
    Ok(prepare_leave_event::v1::Response::new(
        Some(version),
        to_raw_value(&template).map_err(|_| ApiError::internal())?,
    ))
}

pub async fn send_leave(
    state: AppState,
    request: Ruma<create_leave_event::v2::Request>,
) -> ApiResult<create_leave_event::v2::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    federation
        .send_leave(origin, &body.room_id, &body.event_id, &body.pdu)
        .await?;
    Ok(create_leave_event::v2::Response::new())
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: an invite for one of our users.
pub async fn invite(
    state: AppState,
    request: Ruma<create_invite::v2::Request>,
) -> ApiResult<create_invite::v2::Response> {
    let origin = request.origin()?;
    let federation = federation(&state)?;
    let body = &request.body;
    if body.room_version.rules().is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(body.room_version.clone())),
            format!("Room version {} is not supported here", body.room_version),
        ));
    }
    let signed = federation
        .receive_invite(
            origin,
            &body.room_id,
            &body.event_id,
            &body.room_version,
            &body.event,
            &body.invite_room_state,
        )
        .await?;
    Ok(create_invite::v2::Response::new(
        to_raw_value(&signed).map_err(|_| ApiError::internal())?,
    ))
}
