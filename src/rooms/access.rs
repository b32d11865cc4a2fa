//! Who may read what in a room, and how powerful a member is.
//!
//! History visibility follows the room's current `m.room.history_visibility` and the reader's
//! membership over time: `world_readable` rooms are open to all; `shared` rooms show
//! everything to current members and everything up to their departure to former members;
//! `invited` shows events sent while the reader was invited or joined; `joined` only those
//! sent while joined. (The spec evaluates the setting in force at each event; using the
//! current setting is the approximation made here until the sync issue refines it.)

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::pipeline::room_version_rules;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// The parts of a room's timeline a user may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAccess {
    Everything,
    /// Inclusive stream-position ranges, in order; the last may be open (`i64::MAX`).
    Ranges(Vec<(i64, i64)>),
}

impl ReadAccess {
    pub fn allows(&self, stream_ordering: i64) -> bool {
        match self {
            Self::Everything => true,
            Self::Ranges(ranges) => ranges
                .iter()
                .any(|(start, end)| (*start..=*end).contains(&stream_ordering)),
        }
    }

    /// The first position readable (everything before it is hidden).
    pub fn first(&self) -> i64 {
        match self {
            Self::Everything => 0,
            Self::Ranges(ranges) => ranges.first().map_or(i64::MAX, |(start, _)| *start),
        }
    }

    /// The last position readable (everything after it is hidden).
    pub fn last(&self) -> i64 {
        match self {
            Self::Everything => i64::MAX,
            Self::Ranges(ranges) => ranges.last().map_or(-1, |(_, end)| *end),
        }
    }
}

/// 404 for rooms we do not know, 403 for rooms the user may read nothing of.
pub async fn read_access(state: &AppState, room_id: &RoomId, user_id: &UserId) -> ApiResult<ReadAccess> {
    let storage = &state.storage;
    if storage.room_version(room_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("Unknown room"));
    }
    let visibility = storage
        .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
        .await?
        .and_then(|row| content_field(&row.json, "history_visibility"))
        .unwrap_or_else(|| "shared".to_owned());
    if visibility == "world_readable" {
        return Ok(ReadAccess::Everything);
    }
    let history: Vec<(i64, String)> = storage
        .membership_history(room_id.as_str(), user_id.as_str())
        .await?
        .into_iter()
        .map(|(position, json)| (position, content_field(&json, "membership").unwrap_or_default()))
        .collect();
    let readable = |membership: &str| match visibility.as_str() {
        "invited" => matches!(membership, "join" | "invite"),
        "joined" => membership == "join",
        _ => membership == "join",
    };
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    let mut open: Option<i64> = None;
    for (position, membership) in &history {
        match (open, readable(membership)) {
            (None, true) => open = Some(*position),
            // The event that ends membership is still seen (one's own leave, kick or ban).
            (Some(start), false) => {
                ranges.push((start, *position));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        ranges.push((start, i64::MAX));
    }
    if ranges.is_empty() {
        return Err(ApiError::forbidden("You are not a member of this room"));
    }
    // `shared`: joining opens the history before it, too.
    if !matches!(visibility.as_str(), "invited" | "joined") {
        let last = ranges.last().map_or(0, |(_, end)| *end);
        return Ok(if last == i64::MAX {
            ReadAccess::Everything
        } else {
            ReadAccess::Ranges(vec![(0, last)])
        });
    }
    Ok(ReadAccess::Ranges(ranges))
}

/// Whether the user sees the room's current state: members do, whatever the history
/// visibility hid of the timeline; so does everyone in a world-readable room.
pub async fn sees_current_state(
    state: &AppState,
    room_id: &RoomId,
    user_id: &UserId,
    access: &ReadAccess,
) -> ApiResult<bool> {
    Ok(*access == ReadAccess::Everything
        || state
            .storage
            .membership(room_id.as_str(), user_id.as_str())
            .await?
            .as_deref()
            == Some("join"))
}

/// 403 unless the user is joined to the room now (or the room is world-readable).
pub async fn require_joined(state: &AppState, room_id: &RoomId, user_id: &UserId) -> ApiResult<()> {
    if state.storage.room_version(room_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("Unknown room"));
    }
    let joined = state
        .storage
        .membership(room_id.as_str(), user_id.as_str())
        .await?
        .as_deref()
        == Some("join");
    if joined || world_readable(state, room_id).await? {
        return Ok(());
    }
    Err(ApiError::forbidden("You are not a member of this room"))
}

async fn world_readable(state: &AppState, room_id: &RoomId) -> ApiResult<bool> {
    let row = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
        .await?;
    Ok(row
        .and_then(|row| content_field(&row.json, "history_visibility"))
        .as_deref()
        == Some("world_readable"))
}

/// A string field of a stored PDU's content.
pub fn content_field(pdu_json: &str, field: &str) -> Option<String> {
    let pdu: Value = serde_json::from_str(pdu_json).ok()?;
    pdu.get("content")?.get(field)?.as_str().map(str::to_owned)
}

/// The user's power level in the room, and the level an action needs (`redact`, `kick`…).
/// Creators in v12 rooms have infinite power (`i64::MAX`).
pub async fn power_levels(state: &AppState, room_id: &RoomId, user_id: &UserId, action: &str) -> ApiResult<(i64, i64)> {
    let storage = &state.storage;
    let create = storage
        .current_state_event(room_id.as_str(), "m.room.create", "")
        .await?
        .ok_or_else(ApiError::internal)?;
    let version = storage
        .room_version(room_id.as_str())
        .await?
        .ok_or_else(ApiError::internal)?;
    let (_, rules) = room_version_rules(&version)?;
    let create_pdu: Value = serde_json::from_str(&create.json).unwrap_or_default();
    let is_creator = create.sender == user_id.as_str()
        || create_pdu["content"]["additional_creators"]
            .as_array()
            .is_some_and(|creators| creators.iter().any(|c| c.as_str() == Some(user_id.as_str())));
    let levels = storage
        .current_state_event(room_id.as_str(), "m.room.power_levels", "")
        .await?;
    let action_default = if action == "invite" { 0 } else { 50 };
    let Some(levels) = levels else {
        // Without power levels the creator has 100 and everyone else 0.
        let own = if is_creator { 100 } else { 0 };
        return Ok((own, action_default));
    };
    let pdu: Value = serde_json::from_str(&levels.json).unwrap_or_default();
    let content = &pdu["content"];
    let number = |value: &Value| value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()));
    let needed = number(&content[action]).unwrap_or(action_default);
    let own = if is_creator && rules.authorization.explicitly_privilege_room_creators {
        i64::MAX
    } else {
        number(&content["users"][user_id.as_str()])
            .or_else(|| number(&content["users_default"]))
            .unwrap_or(0)
    };
    Ok((own, needed))
}

/// The power level needed to send a state event of `event_type` (its entry in the power levels'
/// `events`, else `state_default`, else 50; 0 in a room without power levels).
pub async fn state_event_level(state: &AppState, room_id: &RoomId, event_type: &str) -> ApiResult<i64> {
    let Some(levels) = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.power_levels", "")
        .await?
    else {
        return Ok(0);
    };
    let pdu: Value = serde_json::from_str(&levels.json).unwrap_or_default();
    let content = &pdu["content"];
    let number = |value: &Value| value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()));
    Ok(number(&content["events"][event_type])
        .or_else(|| number(&content["state_default"]))
        .unwrap_or(50))
}
