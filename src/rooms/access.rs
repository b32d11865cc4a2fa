//! Who may read a room, and how powerful a member is.
//!
//! Reading is decided on the reader's current membership: members read everything; former
//! members read up to the moment they left; anyone reads a `world_readable` room. (Per-event
//! history visibility is finer than this and comes with `/sync`.)

use ruma::{RoomId, UserId};
use serde_json::Value;

use super::pipeline::room_version_rules;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// How much of a room's timeline a user may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAccess {
    Everything,
    /// Events up to and including this stream position (when the user left or was banned).
    UpTo(i64),
}

impl ReadAccess {
    pub fn allows(self, stream_ordering: i64) -> bool {
        match self {
            Self::Everything => true,
            Self::UpTo(limit) => stream_ordering <= limit,
        }
    }
}

/// 404 for rooms we do not know, 403 for rooms the user may not read.
pub async fn read_access(state: &AppState, room_id: &RoomId, user_id: &UserId) -> ApiResult<ReadAccess> {
    let storage = &state.storage;
    if storage.room_version(room_id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("Unknown room"));
    }
    let member = storage
        .current_state_event(room_id.as_str(), "m.room.member", user_id.as_str())
        .await?;
    let membership = member.as_ref().and_then(|row| content_field(&row.json, "membership"));
    match (membership.as_deref(), member) {
        (Some("join"), _) => return Ok(ReadAccess::Everything),
        (Some("leave" | "ban"), Some(row)) => {
            if world_readable(state, room_id).await? {
                return Ok(ReadAccess::Everything);
            }
            return Ok(ReadAccess::UpTo(row.stream_ordering));
        }
        _ => {}
    }
    if world_readable(state, room_id).await? {
        return Ok(ReadAccess::Everything);
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
