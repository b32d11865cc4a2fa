//! Relations (`/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`) and the
//! thread list (`/v1/rooms/{roomId}/threads`).

use ruma::{
    OwnedRoomId, RoomId,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    serde::Raw,
};
use serde_json::{Value, value::RawValue};

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
    rooms::{access::read_access, client_event::render_events},
};

/// How deep `recurse=true` follows relations of relations (the spec lets servers choose).
const MAX_RECURSION: usize = 3;

/// One page of relations.
struct Page {
    chunk: Vec<Value>,
    next_batch: Option<String>,
    depth: Option<usize>,
}

#[allow(clippy::too_many_arguments)]
async fn relating_events(
    state: &AppState,
    sender: &Sender,
    room_id: &OwnedRoomId,
    event_id: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    (from, to): (Option<&str>, Option<&str>),
    dir: Direction,
    limit: Option<u64>,
    recurse: bool,
) -> ApiResult<Page> {
    let access = read_access(state, room_id, &sender.user_id).await?;
    state
        .storage
        .event(event_id)
        .await?
        .filter(|row| row.room_id == room_id.as_str() && access.allows(row.stream_ordering, &row.history_visibility))
        .ok_or_else(|| ApiError::not_found("Event not found"))?;
    let mut found = Vec::new();
    let mut frontier = vec![event_id.to_owned()];
    let mut depth = 0;
    while !frontier.is_empty() && depth < if recurse { MAX_RECURSION } else { 1 } {
        let relations = state.storage.relations_to(room_id.as_str(), &frontier).await?;
        frontier = relations.iter().map(|r| r.event_id.clone()).collect();
        // Only the direct relation's type is filtered; recursion follows any type.
        found.extend(
            relations
                .into_iter()
                .filter(|r| depth > 0 || rel_type.is_none_or(|t| t == r.rel_type)),
        );
        depth += 1;
    }
    found.retain(|r| {
        event_type.is_none_or(|t| t == r.event_type) && access.allows(r.stream_ordering, &r.history_visibility)
    });
    found.sort_by_key(|r| r.stream_ordering);
    found.dedup_by(|a, b| a.event_id == b.event_id);
    if dir == Direction::Backward {
        found.reverse();
    }
    // Tokens are gaps, as in `/messages` (`s<N>` lies just before N): our own, and (as the spec
    // allows) a `/sync` `next_batch` or a sliding sync `pos`. The index of the first event past
    // the gap, in the direction of travel.
    let past = |token: &str| -> ApiResult<usize> {
        let position = super::rooms::parse_token(token)?;
        Ok(found
            .iter()
            .position(|r| {
                if dir == Direction::Backward {
                    r.stream_ordering < position
                } else {
                    r.stream_ordering >= position
                }
            })
            .unwrap_or(found.len()))
    };
    let start = from.map(past).transpose()?.unwrap_or(0);
    // `to` is where the client already has events: stop there.
    let end = to.map(past).transpose()?.unwrap_or(found.len());
    found.truncate(end.max(start));
    let limit = limit.unwrap_or(50).clamp(1, 1000) as usize;
    let page: Vec<String> = found
        .iter()
        .skip(start)
        .take(limit)
        .map(|r| r.event_id.clone())
        .collect();
    // The gap after the page's last event, in the direction of travel.
    let next_batch = (start.saturating_add(limit) < found.len()).then(|| {
        let last = found[start + limit - 1].stream_ordering;
        format!("s{}", if dir == Direction::Backward { last } else { last + 1 })
    });
    let mut rows = state.storage.events(&page).await?;
    rows.sort_by_key(|row| page.iter().position(|id| id == &row.event_id));
    let version = state
        .storage
        .room_version(room_id.as_str())
        .await?
        .ok_or_else(ApiError::internal)?;
    let chunk = render_events(state, &rows, &version, &sender.user_id, sender.device_id.as_str()).await?;
    Ok(Page {
        chunk,
        next_batch,
        depth: recurse.then_some(depth),
    })
}

fn raws<T>(events: &[Value]) -> ApiResult<Vec<Raw<T>>> {
    events
        .iter()
        .map(|event| {
            RawValue::from_string(event.to_string())
                .map(Raw::from_json)
                .map_err(|_| ApiError::internal())
        })
        .collect()
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn all(
    state: AppState,
    request: Ruma<get_relating_events::v1::Request>,
) -> ApiResult<get_relating_events::v1::Response> {
    let sender = request.sender()?;
    let b = &request.body;
    let limit = b.limit.map(u64::from);
    let page = relating_events(
        &state,
        sender,
        &b.room_id,
        b.event_id.as_str(),
        None,
        None,
        (b.from.as_deref(), b.to.as_deref()),
        b.dir,
        limit,
        b.recurse,
    )
    .await?;
    let mut response = get_relating_events::v1::Response::new(raws(&page.chunk)?);
    response.next_batch = page.next_batch;
    response.recursion_depth = page.depth.and_then(|d| ruma::UInt::try_from(d as u64).ok());
    Ok(response)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn by_type(
    state: AppState,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type::v1::Response> {
    let sender = request.sender()?;
    let b = &request.body;
    let rel_type = b.rel_type.to_string();
    let limit = b.limit.map(u64::from);
    let page = relating_events(
        &state,
        sender,
        &b.room_id,
        b.event_id.as_str(),
        Some(&rel_type),
        None,
        (b.from.as_deref(), b.to.as_deref()),
        b.dir,
        limit,
        b.recurse,
    )
    .await?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(raws(&page.chunk)?);
    response.next_batch = page.next_batch;
    response.recursion_depth = page.depth.and_then(|d| ruma::UInt::try_from(d as u64).ok());
    Ok(response)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn by_type_and_event_type(
    state: AppState,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let sender = request.sender()?;
    let b = &request.body;
    let (rel_type, event_type) = (b.rel_type.to_string(), b.event_type.to_string());
    let limit = b.limit.map(u64::from);
    let page = relating_events(
        &state,
        sender,
        &b.room_id,
        b.event_id.as_str(),
        Some(&rel_type),
        Some(&event_type),
        (b.from.as_deref(), b.to.as_deref()),
        b.dir,
        limit,
        b.recurse,
    )
    .await?;
    let mut response = get_relating_events_with_rel_type_and_event_type::v1::Response::new(raws(&page.chunk)?);
    response.next_batch = page.next_batch;
    response.recursion_depth = page.depth.and_then(|d| ruma::UInt::try_from(d as u64).ok());
    Ok(response)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`: thread roots, latest activity first.
pub async fn threads(state: AppState, request: Ruma<get_threads::v1::Request>) -> ApiResult<get_threads::v1::Response> {
    let sender = request.sender()?;
    let b = &request.body;
    let access = read_access(&state, &b.room_id, &sender.user_id).await?;
    let offset = match b.from.as_deref() {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::invalid_param("Invalid from token"))?,
        None => 0,
    };
    let limit = b.limit.map_or(50, |l| u64::from(l).clamp(1, 500)) as usize;
    let roots: Vec<String> = state
        .storage
        .thread_roots(b.room_id.as_str())
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut rows = state.storage.events(&roots).await?;
    rows.retain(|row| access.allows(row.stream_ordering, &row.history_visibility));
    rows.sort_by_key(|row| roots.iter().position(|id| id == &row.event_id));
    if b.include == IncludeThreads::Participated {
        let relations = state.storage.relations_to(b.room_id.as_str(), &roots).await?;
        rows.retain(|row| {
            row.sender == sender.user_id.as_str()
                || relations.iter().any(|r| {
                    r.relates_to_id == row.event_id && r.rel_type == "m.thread" && r.sender == sender.user_id.as_str()
                })
        });
    }
    let total = rows.len();
    let page: Vec<_> = rows.into_iter().skip(offset).take(limit).collect();
    let version = room_version(&state, &b.room_id).await?;
    let chunk = render_events(&state, &page, &version, &sender.user_id, sender.device_id.as_str()).await?;
    let mut response = get_threads::v1::Response::new(raws(&chunk)?);
    response.next_batch = (offset.saturating_add(limit) < total).then(|| format!("o{}", offset.saturating_add(limit)));
    Ok(response)
}

async fn room_version(state: &AppState, room_id: &RoomId) -> ApiResult<String> {
    state
        .storage
        .room_version(room_id.as_str())
        .await?
        .ok_or_else(ApiError::internal)
}
