//! Reading a room's events over federation: `GET /event/{eventId}`, `/state_ids/{roomId}`,
//! `/state/{roomId}`, `/event_auth/{roomId}/{eventId}`, `POST /get_missing_events/{roomId}`
//! and `GET /backfill/{roomId}`. What a server may read is decided in
//! [`crate::federation::history`].

use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_event_by_timestamp, get_missing_events, get_room_state, get_room_state_ids},
    },
};

use crate::{
    api::{federation::federation, ruma::Ruma, state::AppState},
    error::ApiResult,
};

pub async fn event(state: AppState, request: Ruma<get_event::v1::Request>) -> ApiResult<get_event::v1::Response> {
    let origin = request.origin()?;
    let pdu = federation(&state)?
        .event_for_server(origin, &request.body.event_id)
        .await?;
    Ok(get_event::v1::Response::new(
        state.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    ))
}

pub async fn state_ids(
    state: AppState,
    request: Ruma<get_room_state_ids::v1::Request>,
) -> ApiResult<get_room_state_ids::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let federation = federation(&state)?;
    federation.require_whole_state(&body.room_id)?;
    let (pdu_ids, auth_chain_ids) = federation.state_ids_at(origin, &body.room_id, &body.event_id).await?;
    Ok(get_room_state_ids::v1::Response::new(auth_chain_ids, pdu_ids))
}

pub async fn state(
    state: AppState,
    request: Ruma<get_room_state::v1::Request>,
) -> ApiResult<get_room_state::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let federation = federation(&state)?;
    federation.require_whole_state(&body.room_id)?;
    let (pdus, auth_chain) = federation.state_pdus_at(origin, &body.room_id, &body.event_id).await?;
    Ok(get_room_state::v1::Response::new(auth_chain, pdus))
}

pub async fn event_auth(
    state: AppState,
    request: Ruma<get_event_authorization::v1::Request>,
) -> ApiResult<get_event_authorization::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let chain = federation(&state)?
        .event_auth(origin, &body.room_id, &body.event_id)
        .await?;
    Ok(get_event_authorization::v1::Response::new(chain))
}

pub async fn missing_events(
    state: AppState,
    request: Ruma<get_missing_events::v1::Request>,
) -> ApiResult<get_missing_events::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let events = federation(&state)?
        .missing_events(
            origin,
            &body.room_id,
            &body.earliest_events,
            &body.latest_events,
            usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX),
            i64::try_from(u64::from(body.min_depth)).unwrap_or(i64::MAX),
        )
        .await?;
    Ok(get_missing_events::v1::Response::new(events))
}

pub async fn backfill(
    state: AppState,
    request: Ruma<get_backfill::v1::Request>,
) -> ApiResult<get_backfill::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let pdus = federation(&state)?
        .backfill(
            origin,
            &body.room_id,
            &body.v,
            usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX),
        )
        .await?;
    Ok(get_backfill::v1::Response::new(
        state.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    ))
}

/// `GET /timestamp_to_event/{roomId}`: the event closest to a time, for servers in the room.
pub async fn timestamp_to_event(
    state: AppState,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> ApiResult<get_event_by_timestamp::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let federation = federation(&state)?;
    federation.require_server_in_room(origin, &body.room_id).await?;
    let ts = i64::try_from(u64::from(body.ts.0)).unwrap_or(i64::MAX);
    let forwards = body.dir == ruma::api::Direction::Forward;
    let row = state
        .storage
        .event_near_timestamp(body.room_id.as_str(), ts, forwards)
        .await?
        .ok_or_else(|| crate::error::ApiError::not_found("No event found near that time"))?;
    let event_id = ruma::OwnedEventId::try_from(row.event_id).map_err(|_| crate::error::ApiError::internal())?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        MilliSecondsSinceUnixEpoch(ruma::UInt::try_from(row.origin_server_ts.max(0)).unwrap_or_default()),
    ))
}
