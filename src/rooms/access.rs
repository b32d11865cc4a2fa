//! Who may read what in a room, and how powerful a member is.
//!
//! History visibility is decided per event, with the `m.room.history_visibility` in force when
//! the event was sent (stored with it) and the reader's membership at that moment (spec:
//! "History visibility"): `world_readable` events are open to all; a member reads what was
//! sent while they were joined; `invited` also what was sent while they were invited;
//! `shared` also everything before a later join of theirs. One's own membership events are
//! always visible.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde_json::Value;

pub use crate::json::content_field;

use super::{
    error::{EventError, EventResult},
    version::room_version_rules,
};
use crate::{base::Base, cache::MembershipEvent, storage::EventRow};

/// What a user may read of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAccess {
    /// The user's membership events in the room, in order.
    history: Arc<Vec<MembershipEvent>>,
    /// The room's history visibility now is `world_readable`.
    world_readable_now: bool,
}

impl ReadAccess {
    /// May the user read the event at `stream_ordering`, sent under `history_visibility`?
    pub fn allows(&self, stream_ordering: i64, history_visibility: &str) -> bool {
        if history_visibility == "world_readable" || self.history.iter().any(|m| m.stream_ordering == stream_ordering) {
            return true;
        }
        let at_event = self
            .history
            .iter()
            .rev()
            .find(|m| m.stream_ordering <= stream_ordering)
            .map(|m| m.membership.as_str());
        match (history_visibility, at_event) {
            (_, Some("join")) | ("invited", Some("invite")) => true,
            ("shared", _) => self
                .history
                .iter()
                .any(|m| m.stream_ordering > stream_ordering && m.membership == "join"),
            _ => false,
        }
    }

    /// Whether the user was ever joined to the room (a ban or a withdrawn invite of someone
    /// never in it shows them nothing of its state).
    pub fn ever_joined(&self) -> bool {
        self.history.iter().any(|m| m.membership == "join")
    }

    /// The user's membership now.
    pub fn membership(&self) -> Option<&str> {
        self.history.last().map(|m| m.membership.as_str())
    }

    /// Whether the user sees the room's current state: members do, whatever the history
    /// visibility hides of the timeline; so does everyone in a world-readable room.
    pub fn sees_current_state(&self) -> bool {
        self.world_readable_now || self.membership() == Some("join")
    }

    /// The last stream position that can be visible: none after a former member's departure
    /// (unless the room is world-readable now).
    pub fn last(&self) -> i64 {
        match self.membership() {
            Some("join" | "invite") => i64::MAX,
            _ if self.world_readable_now => i64::MAX,
            _ => self.history.last().map_or(-1, |m| m.stream_ordering),
        }
    }
}

/// 404 for rooms we do not know, 403 for rooms the user has never been in or has forgotten
/// (unless world-readable).
pub async fn read_access(state: &Base, room_id: &RoomId, user_id: &UserId) -> EventResult<ReadAccess> {
    let access = membership_access(state, room_id, user_id).await?;
    // A former member who forgot the room no longer reads its history (spec, `/forget`).
    if let Some(last) = access
        .history
        .last()
        .filter(|m| matches!(m.membership.as_str(), "leave" | "ban"))
        && !access.world_readable_now
        && state
            .storage
            .forgotten_at(room_id.as_str(), user_id.as_str())
            .await?
            .is_some_and(|event_id| event_id == last.event_id)
    {
        return Err(EventError::forbidden("You have forgotten this room"));
    }
    Ok(access)
}

/// [`read_access`] without the forgotten check, for sync: it works from the room list it read
/// at the start (which leaves forgotten rooms out), and a room forgotten while a response is
/// being made goes out once more rather than failing the whole response.
pub async fn membership_access(state: &Base, room_id: &RoomId, user_id: &UserId) -> EventResult<ReadAccess> {
    require_room(state, room_id.as_str()).await?;
    let (storage, caches) = (&state.storage, &state.caches);
    let world_readable_now = world_readable(state, room_id).await?;
    let history = caches
        .membership_history(storage, room_id.as_str(), user_id.as_str())
        .await?;
    if history.is_empty() && !world_readable_now {
        return Err(EventError::forbidden("You are not a member of this room"));
    }
    Ok(ReadAccess {
        history,
        world_readable_now,
    })
}

/// An event of the room the user may read, with their access to the room: 404 if the event
/// is unknown, in another room, or hidden from them by history visibility.
pub async fn visible_event(
    state: &Base,
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &str,
) -> EventResult<(ReadAccess, EventRow)> {
    let access = read_access(state, room_id, user_id).await?;
    let row = state
        .storage
        .event(event_id)
        .await?
        .filter(|row| row.room_id == room_id.as_str() && access.allows(row.stream_ordering, &row.history_visibility))
        .ok_or_else(|| EventError::not_found("Event not found"))?;
    // Outside the timeline (negative position) with a place in the room's state: soft-failed,
    // never served. (Outliers, the state a join brought, have no state group and are served.)
    if row.stream_ordering < 0 && state.storage.state_group_after(&row.event_id).await?.is_some() {
        return Err(EventError::not_found("Event not found"));
    }
    Ok((access, row))
}

/// 404 `M_NOT_FOUND` unless the room is known here.
pub async fn require_room(state: &Base, room_id: &str) -> EventResult<()> {
    match state.caches.room_version(&state.storage, room_id).await? {
        Some(_) => Ok(()),
        None => Err(EventError::not_found("Unknown room")),
    }
}

/// 403 unless the user is joined to the room now (or the room is world-readable).
pub async fn require_joined(state: &Base, room_id: &RoomId, user_id: &UserId) -> EventResult<()> {
    require_room(state, room_id.as_str()).await?;
    let joined = state
        .storage
        .membership(room_id.as_str(), user_id.as_str())
        .await?
        .as_deref()
        == Some("join");
    if joined || world_readable(state, room_id).await? {
        return Ok(());
    }
    Err(EventError::forbidden("You are not a member of this room"))
}

/// 403 unless the user is joined to the room now, world-readable or not (for acting in it:
/// typing, receipts).
pub async fn require_member(state: &Base, room_id: &RoomId, user_id: &UserId) -> EventResult<()> {
    match state
        .storage
        .membership(room_id.as_str(), user_id.as_str())
        .await?
        .as_deref()
    {
        Some("join") => Ok(()),
        _ => {
            require_room(state, room_id.as_str()).await?;
            Err(EventError::forbidden("You are not a member of this room"))
        }
    }
}

/// The room's history visibility now (`shared` when unset, as the spec says).
pub async fn history_visibility_now(state: &Base, room_id: &RoomId) -> EventResult<String> {
    Ok(state
        .storage
        .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
        .await?
        .and_then(|row| crate::json::content_field(&row.json, "history_visibility"))
        .unwrap_or_else(|| "shared".to_owned()))
}

async fn world_readable(state: &Base, room_id: &RoomId) -> EventResult<bool> {
    Ok(state.caches.world_readable(&state.storage, room_id.as_str()).await?)
}

/// The user's power level in the room, and the level an action needs (`redact`, `kick`…).
/// Creators in v12 rooms have infinite power (`i64::MAX`).
pub async fn power_levels(state: &Base, room_id: &RoomId, user_id: &UserId, action: &str) -> EventResult<(i64, i64)> {
    let storage = &state.storage;
    let create = storage
        .current_state_event(room_id.as_str(), "m.room.create", "")
        .await?
        .ok_or(EventError::Internal("a room without a create event"))?;
    let version = storage
        .room_version(room_id.as_str())
        .await?
        .ok_or(EventError::Internal("a room without a version"))?;
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
pub async fn state_event_level(state: &Base, room_id: &RoomId, event_type: &str) -> EventResult<i64> {
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
