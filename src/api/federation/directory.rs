//! Our public room directory, for other servers' clients: `GET` and `POST /publicRooms`.

use ruma::{
    UInt,
    api::federation::directory::{get_public_rooms, get_public_rooms_filtered},
};

use crate::{
    api::{client::directory::public_rooms, ruma::Ruma, state::AppState},
    error::ApiResult,
};

/// Refuses other servers unless the operator shares the directory with them.
fn directory_shared(state: &AppState) -> ApiResult<()> {
    if state.config.federation.allow_public_rooms_over_federation {
        Ok(())
    } else {
        Err(crate::error::ApiError::forbidden(
            "This server does not share its room directory with other servers",
        ))
    }
}

/// One page of the rooms published here.
pub async fn public_rooms_get(
    state: AppState,
    request: Ruma<get_public_rooms::v1::Request>,
) -> ApiResult<get_public_rooms::v1::Response> {
    request.origin()?;
    directory_shared(&state)?;
    let body = &request.body;
    let matrix = ruma::directory::RoomNetwork::Matrix;
    let (chunk, next, prev, total) =
        public_rooms(&state, body.limit, body.since.as_deref(), None, &[], &matrix).await?;
    let mut response = get_public_rooms::v1::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total as u64).ok();
    Ok(response)
}

/// One page of the rooms published here that match a search.
pub async fn public_rooms_post(
    state: AppState,
    request: Ruma<get_public_rooms_filtered::v1::Request>,
) -> ApiResult<get_public_rooms_filtered::v1::Response> {
    request.origin()?;
    directory_shared(&state)?;
    let body = &request.body;
    let (chunk, next, prev, total) = public_rooms(
        &state,
        body.limit,
        body.since.as_deref(),
        body.filter.generic_search_term.as_deref(),
        &body.filter.room_types,
        &body.room_network,
    )
    .await?;
    let mut response = get_public_rooms_filtered::v1::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total as u64).ok();
    Ok(response)
}

/// `GET /hierarchy/{roomId}`: one of our spaces, for another server.
pub async fn hierarchy(
    state: AppState,
    request: Ruma<ruma::api::federation::space::get_hierarchy::v1::Request>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let origin = request.origin()?.to_owned();
    let federation = crate::api::federation::federation(&state)?;
    let body = &request.body;
    Ok(axum::Json(
        federation
            .local_hierarchy(&origin, &body.room_id, body.suggested_only)
            .await?,
    ))
}
