//! Sync filters (`POST /user/{userId}/filter`, or inline JSON in `/sync?filter=`): which
//! rooms, which events, how many.

use ruma::api::client::filter::{Filter, FilterDefinition, RoomEventFilter, RoomFilter};

use crate::{
    error::{ApiError, ApiResult},
    services::Services,
};

/// Timeline events per room when the filter does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The most timeline events per room one sync returns, whatever the filter asks.
pub const MAX_TIMELINE_LIMIT: usize = 100;

/// Reads the `filter` parameter of `/sync`: a filter ID, or a filter as JSON.
pub async fn resolve(state: &Services, user_id: &str, filter: Option<&str>) -> ApiResult<FilterDefinition> {
    let Some(filter) = filter else {
        return Ok(FilterDefinition::default());
    };
    if filter.trim_start().starts_with('{') {
        return parse(filter);
    }
    let id: i64 = filter
        .parse()
        .map_err(|_| ApiError::invalid_param("`filter` must be a filter ID or a JSON object"))?;
    let json = state
        .storage
        .filter(user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No filter {id}")))?;
    parse(&json)
}

pub fn parse(json: &str) -> ApiResult<FilterDefinition> {
    serde_json::from_str(json).map_err(|error| ApiError::bad_json(format!("Invalid filter: {error}")))
}

/// `types` entries may contain `*`, which matches any run of characters. Linear-time
/// wildcard matching (backtracking only to the last `*`): a pattern of many stars must not
/// cost exponential time.
fn glob_matches(pattern: &str, value: &str) -> bool {
    let (pattern, value) = (pattern.as_bytes(), value.as_bytes());
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, v));
            p += 1;
        } else if p < pattern.len() && pattern[p] == value[v] {
            p += 1;
            v += 1;
        } else if let Some((star_p, star_v)) = star {
            // Let the last star swallow one more character and retry.
            p = star_p + 1;
            v = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn type_allowed(types: Option<&[String]>, not_types: &[String], event_type: &str) -> bool {
    types.is_none_or(|types| types.iter().any(|t| glob_matches(t, event_type)))
        && !not_types.iter().any(|t| glob_matches(t, event_type))
}

/// Whether a room event passes a room event filter (types and senders).
pub fn room_event_allowed(filter: &RoomEventFilter, event_type: &str, sender: &str) -> bool {
    type_allowed(filter.types.as_deref(), &filter.not_types, event_type)
        && filter
            .senders
            .as_ref()
            .is_none_or(|s| s.iter().any(|u| u.as_str() == sender))
        && !filter.not_senders.iter().any(|u| u.as_str() == sender)
}

/// Whether an event passes a non-room filter (presence, global account data).
pub fn event_allowed(filter: &Filter, event_type: &str, sender: Option<&str>) -> bool {
    type_allowed(filter.types.as_deref(), &filter.not_types, event_type)
        && sender.is_none_or(|sender| {
            filter
                .senders
                .as_ref()
                .is_none_or(|s| s.iter().any(|u| u.as_str() == sender))
                && !filter.not_senders.iter().any(|u| u.as_str() == sender)
        })
}

/// Whether a room passes the room filter and a section's own `rooms`/`not_rooms`.
pub fn room_allowed(filter: &RoomFilter, section: &RoomEventFilter, room_id: &str) -> bool {
    let allowed = |rooms: &Option<Vec<ruma::OwnedRoomId>>, not_rooms: &[ruma::OwnedRoomId]| {
        rooms.as_ref().is_none_or(|r| r.iter().any(|id| id.as_str() == room_id))
            && !not_rooms.iter().any(|id| id.as_str() == room_id)
    };
    allowed(&filter.rooms, &filter.not_rooms) && allowed(&section.rooms, &section.not_rooms)
}

/// The timeline limit a filter asks for, within bounds (0 is allowed: state without events).
pub fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter
        .limit
        .map_or(DEFAULT_TIMELINE_LIMIT, |limit| {
            usize::try_from(u64::from(limit)).unwrap_or(MAX_TIMELINE_LIMIT)
        })
        .min(MAX_TIMELINE_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("m.*", "m.room.message"));
        assert!(glob_matches("m.room.*", "m.room.member"));
        assert!(!glob_matches("m.room.*", "m.presence"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("m.*.member", "m.room.member"));
        assert!(glob_matches("m.room.member", "m.room.member"));
        assert!(!glob_matches("m.room.member", "m.room.members"));
        assert!(glob_matches("*.member", "m.room.member"));
        assert!(!glob_matches("*.members", "m.room.member"));
        // Many stars cost linear time, not exponential.
        let stars = format!("{}x", "*".repeat(10_000));
        assert!(!glob_matches(&stars, &"m".repeat(10_000)));
    }
}
