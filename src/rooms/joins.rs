//! What a user asks of their own membership, with the checks that come before the membership
//! event: joining (by ID or alias, guests only where the room lets them in, rate-limited),
//! knocking, inviting, leaving and forgetting. The client API calls these; federation's
//! make_join/send_join and invites will share them for remote users.

use ruma::{OwnedRoomId, OwnedRoomOrAliasId, RoomId, UserId};
use serde_json::{Map, Value};

use super::{
    error::{EventError, EventResult},
    membership::{Change, change_membership, change_membership_with, guests_may_join, remove_guests_if_closed},
};
use crate::{accounts::sessions::Sender, base::Base};

/// Joins the sender to a room of this server. `extra`: fields of the request body (a reason,
/// a per-room display name, ...) copied into the member event. Joining again is a no-op.
pub async fn join(
    state: &Base,
    sender: &Sender,
    room_id: &RoomId,
    extra: Map<String, Value>,
) -> EventResult<OwnedRoomId> {
    // Joining through other servers needs federation, which Hearth does not speak yet.
    require_local_room(state, room_id, "joining").await?;
    if state
        .storage
        .membership(room_id.as_str(), sender.user_id.as_str())
        .await?
        .as_deref()
        == Some("join")
    {
        return Ok(room_id.to_owned());
    }
    if sender.is_guest && !guests_may_join(state, room_id).await? {
        return Err(EventError::GuestForbidden("Guests cannot join this room".to_owned()));
    }
    state.rate_limits.check_user(&state.rate_limits.joins, sender)?;
    change_membership_with(state, room_id, &sender.user_id, &sender.user_id, Change::Join, extra).await?;
    // The room may have closed to guests between the check above and the join.
    if sender.is_guest {
        remove_guests_if_closed(state, room_id).await?;
    }
    Ok(room_id.to_owned())
}

/// A room ID, or a local alias resolved to one.
pub async fn resolve_room(state: &Base, room: &OwnedRoomOrAliasId) -> EventResult<OwnedRoomId> {
    match OwnedRoomId::try_from(room.clone()) {
        Ok(room_id) => Ok(room_id),
        Err(alias) => {
            if alias.server_name() != state.config.server_name {
                return Err(EventError::not_found(
                    "Rooms behind other servers' aliases need federation (not supported yet)",
                ));
            }
            super::directory::local_alias_target(state, &alias).await
        }
    }
}

/// 404 unless the room is one this server has (`doing`: what needs it, for the message).
async fn require_local_room(state: &Base, room_id: &RoomId, doing: &str) -> EventResult<()> {
    match state.caches.room_version(&state.storage, room_id.as_str()).await? {
        Some(_) => Ok(()),
        None => Err(EventError::not_found(format!(
            "Unknown room ({doing} rooms on other servers is not supported yet)"
        ))),
    }
}

/// Knocks on a room of this server (room versions 7 and later).
pub async fn knock(state: &Base, sender: &Sender, room_id: &RoomId, reason: Option<&str>) -> EventResult<()> {
    require_local_room(state, room_id, "knocking on").await?;
    if matches!(
        state
            .storage
            .membership(room_id.as_str(), sender.user_id.as_str())
            .await?
            .as_deref(),
        Some("join" | "invite")
    ) {
        return Err(EventError::forbidden("You are already in (or invited to) this room"));
    }
    change_membership(state, room_id, &sender.user_id, &sender.user_id, Change::Knock, reason).await?;
    Ok(())
}

/// Invites a local user (rate-limited for the sender and the invitee).
pub async fn invite(
    state: &Base,
    sender: &Sender,
    room_id: &RoomId,
    invitee: &UserId,
    reason: Option<&str>,
) -> EventResult<()> {
    invite_with(state, sender, room_id, invitee, reason, false).await
}

/// [`invite`], marked as a direct chat (`is_direct`) when asked.
pub async fn invite_with(
    state: &Base,
    sender: &Sender,
    room_id: &RoomId,
    invitee: &UserId,
    reason: Option<&str>,
    is_direct: bool,
) -> EventResult<()> {
    let remote = invitee.server_name() != state.config.server_name;
    if remote && state.countersigner().is_none() {
        return Err(EventError::forbidden(
            "Inviting users of other servers needs federation, which is off on this server",
        ));
    }
    if !remote && state.storage.user(invitee.as_str()).await?.is_none() {
        return Err(EventError::not_found("No such user"));
    }
    state.rate_limits.check_invite(sender, invitee.as_str())?;
    let change = Change::Invite { is_direct };
    change_membership(state, room_id, &sender.user_id, invitee, change, reason).await?;
    Ok(())
}

/// Leaves a room the user is in, invited to or knocking on (rejecting an invite, withdrawing
/// a knock).
pub async fn leave(state: &Base, user_id: &UserId, room_id: &RoomId, reason: Option<&str>) -> EventResult<()> {
    let current = state.storage.membership(room_id.as_str(), user_id.as_str()).await?;
    if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
        return Err(EventError::forbidden("You are not in this room"));
    }
    change_membership(state, room_id, user_id, user_id, Change::Leave, reason).await?;
    Ok(())
}

/// Forgets a room the user has left (or been banned from): sync stops sending it, even with
/// `include_leave`, until their membership changes again.
pub async fn forget(state: &Base, user_id: &UserId, room_id: &RoomId) -> EventResult<()> {
    let (room_id, user_id) = (room_id.as_str(), user_id.as_str());
    match state.storage.membership(room_id, user_id).await?.as_deref() {
        Some("join" | "invite" | "knock") => return Err(EventError::StillInRoom),
        None => return Err(EventError::not_found("You were never in this room")),
        Some(_) => {}
    }
    // Recorded only if the membership is still a leave or a ban (not rejoined meanwhile).
    if !state.storage.forget_room(room_id, user_id).await? {
        return Err(EventError::StillInRoom);
    }
    state.caches.room_forgotten(user_id);
    Ok(())
}
