//! Membership changes: join, invite, leave, kick, ban, unban. Each is one `m.room.member`
//! event through the pipeline; the authorization rules decide whether it is allowed.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::error::{EventError, EventResult};
use super::pipeline::{Appended, EventDraft, append_event};
use crate::base::Base;

/// What a membership change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Join,
    Invite { is_direct: bool },
    Leave,
    Kick,
    Ban,
    Unban,
    Knock,
}

impl Change {
    fn membership(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Invite { .. } => "invite",
            Self::Leave | Self::Kick | Self::Unban => "leave",
            Self::Ban => "ban",
            Self::Knock => "knock",
        }
    }
}

/// Applies a membership change by `sender` to `target` (the same user for join, leave, knock).
pub async fn change_membership(
    state: &Base,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    change: Change,
    reason: Option<&str>,
) -> EventResult<Appended> {
    let mut extra = Map::new();
    if let Some(reason) = reason {
        extra.insert("reason".into(), Value::from(reason));
    }
    change_membership_with(state, room_id, sender, target, change, extra).await
}

/// Whether the room lets guests in (`m.room.guest_access` is `can_join`).
pub async fn guests_may_join(state: &Base, room_id: &RoomId) -> EventResult<bool> {
    let event = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.guest_access", "")
        .await?;
    Ok(event
        .and_then(|row| super::access::content_field(&row.json, "guest_access"))
        .as_deref()
        == Some("can_join"))
}

/// After `m.room.guest_access` changed: when guests may no longer join, the guests in the
/// room leave it (the spec's server behaviour; each leaves on their own account, as Synapse
/// does, so no power is needed).
pub async fn remove_guests_if_closed(state: &Base, room_id: &RoomId) -> EventResult<()> {
    if guests_may_join(state, room_id).await? {
        return Ok(());
    }
    for guest in state.storage.joined_guests(room_id.as_str()).await? {
        let Ok(guest) = ruma::OwnedUserId::try_from(guest) else {
            continue;
        };
        if let Err(error) = change_membership(state, room_id, &guest, &guest, Change::Leave, None).await {
            tracing::warn!(%room_id, user_id = %guest, ?error, "could not remove a guest from a room closed to guests");
        }
    }
    Ok(())
}

/// The content of `target`'s member event for `change`: the membership, and for a join,
/// invite or knock of a local user their display name and avatar, which travel with it.
pub async fn member_content(state: &Base, change: Change, target: &UserId) -> EventResult<Value> {
    let mut content = json!({ "membership": change.membership() });
    if let Change::Invite { is_direct: true } = change {
        content["is_direct"] = Value::from(true);
    }
    if matches!(change, Change::Join | Change::Invite { .. } | Change::Knock)
        && target.server_name() == state.config.server_name
    {
        let profile = state.storage.profile(target.as_str()).await?;
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = profile.get(field).filter(|v| v.is_string()) {
                content[field] = value.clone();
            }
        }
    }
    Ok(content)
}

/// Member event fields only the server sets.
pub const SERVER_SET_MEMBER_FIELDS: &[&str] = &[
    "membership",
    "join_authorised_via_users_server",
    "third_party_signed",
    "third_party_invite",
];

/// [`change_membership`] with fields of the client's own for the member event (the body of a
/// `/join`: a reason, a per-room display name, anything else, as Synapse copies it); they win
/// over the profile's display name and avatar.
pub async fn change_membership_with(
    state: &Base,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    change: Change,
    extra: Map<String, Value>,
) -> EventResult<Appended> {
    for field in ["displayname", "avatar_url", "reason"] {
        if extra.get(field).is_some_and(|value| !value.is_string()) {
            return Err(EventError::bad_json(format!("{field} must be a string")));
        }
    }
    let current = state.storage.membership(room_id.as_str(), target.as_str()).await?;
    match (change, current.as_deref()) {
        (Change::Kick, Some("join" | "invite" | "knock")) | (Change::Unban, Some("ban")) => {}
        (Change::Kick, _) => return Err(EventError::forbidden("The user is not in the room")),
        (Change::Unban, _) => return Err(EventError::forbidden("The user is not banned")),
        (Change::Invite { .. }, Some("join")) => {
            return Err(EventError::forbidden("The user is already in the room"));
        }
        (Change::Invite { .. }, Some("ban")) => {
            return Err(EventError::forbidden("The user is banned from the room"));
        }
        _ => {}
    }
    let mut content = member_content(state, change, target).await?;
    for (key, value) in extra {
        if !SERVER_SET_MEMBER_FIELDS.contains(&key.as_str()) {
            content[key] = value;
        }
    }
    if change == Change::Join
        && current.as_deref() != Some("invite")
        && let Some(authoriser) = restricted_join_authoriser(state, room_id, target).await?
    {
        content["join_authorised_via_users_server"] = Value::from(authoriser);
    }
    let draft = EventDraft::state("m.room.member", target.as_str(), content);
    append_event(state, room_id, sender, draft, None).await
}

/// For a join to a `restricted` (or `knock_restricted`) room by an uninvited user: checks that
/// the user is in one of the rooms the join rules allow, and names a local member with the
/// power to invite who vouches for the join (`join_authorised_via_users_server`). `None` when
/// the room's join rule is not restricted. Federation's `make_join` asks the same for a
/// remote user (whose memberships we know in the allowed rooms this server is in).
pub async fn restricted_join_authoriser(state: &Base, room_id: &RoomId, user: &UserId) -> EventResult<Option<String>> {
    let Some(rules) = state
        .storage
        .current_state_event(room_id.as_str(), "m.room.join_rules", "")
        .await?
    else {
        return Ok(None);
    };
    let pdu: Value = serde_json::from_str(&rules.json).unwrap_or_default();
    let content = &pdu["content"];
    if !matches!(content["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
        return Ok(None);
    }
    let allowed_rooms: Vec<&str> = content["allow"]
        .as_array()
        .map(|allow| {
            allow
                .iter()
                .filter(|rule| rule["type"] == "m.room_membership")
                .filter_map(|rule| rule["room_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut qualifies = false;
    for allowed in allowed_rooms {
        if state.storage.membership(allowed, user.as_str()).await?.as_deref() == Some("join") {
            qualifies = true;
            break;
        }
    }
    if !qualifies {
        return Err(EventError::forbidden(
            "You are not a member of any room this room's join rules allow",
        ));
    }
    for member in state.storage.member_events(room_id.as_str()).await? {
        let Some(candidate) = member
            .state_key
            .as_deref()
            .and_then(|key| ruma::OwnedUserId::try_from(key).ok())
        else {
            continue;
        };
        if candidate.server_name() != state.config.server_name
            || super::access::content_field(&member.json, "membership").as_deref() != Some("join")
        {
            continue;
        }
        let (own, needed) = super::access::power_levels(state, room_id, &candidate, "invite").await?;
        if own >= needed {
            return Ok(Some(candidate.to_string()));
        }
    }
    Err(EventError::UnableToGrantJoin(
        "No member of this room on this server can authorise your join".to_owned(),
    ))
}

/// After a profile change, re-sends the user's join event in every room they are in, carrying
/// the new display name and avatar (as the spec asks and clients expect). A room that refuses
/// the update (the user lost the right to change their membership) is skipped, not fatal.
pub async fn propagate_profile(state: &Base, user_id: &UserId) -> EventResult<()> {
    let profile = state.storage.profile(user_id.as_str()).await?;
    for room in state.storage.rooms_with_membership(user_id.as_str(), "join").await? {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(room) else {
            continue;
        };
        let Some(row) = state
            .storage
            .current_state_event(room_id.as_str(), "m.room.member", user_id.as_str())
            .await?
        else {
            continue;
        };
        let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
        let mut content = pdu.get("content").cloned().unwrap_or_else(|| json!({}));
        let Some(fields) = content.as_object_mut() else {
            continue;
        };
        for field in ["displayname", "avatar_url"] {
            match profile.get(field).filter(|v| v.is_string()) {
                Some(value) => fields.insert(field.to_owned(), value.clone()),
                None => fields.remove(field),
            };
        }
        let draft = EventDraft::state("m.room.member", user_id.as_str(), content);
        if let Err(error) = append_event(state, &room_id, user_id, draft, None).await {
            tracing::warn!(%room_id, %user_id, ?error, "could not update the member event after a profile change");
        }
    }
    Ok(())
}

/// The state events that describe a room to someone not in it (an invitee, a knocker).
const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// A stripped event: type, state key, sender and content only.
fn stripped(row: &crate::storage::EventRow) -> Option<Value> {
    let pdu: Value = serde_json::from_str(&row.json).ok()?;
    Some(json!({
        "type": row.event_type,
        "state_key": row.state_key.clone().unwrap_or_default(),
        "sender": row.sender,
        "content": pdu["content"],
    }))
}

/// The stripped state of a room for an invite or knock: a few descriptive events and the
/// membership event itself. For a room we are not in, what the inviting server sent.
pub async fn stripped_state(
    state: &Base,
    room_id: &str,
    membership_event: &crate::storage::EventRow,
) -> EventResult<Vec<Value>> {
    if let Some(user_id) = membership_event.state_key.as_deref()
        && let Some(events) = state.storage.remote_invite_state(room_id, user_id).await?
    {
        let mut events: Vec<Value> = serde_json::from_str(&events).unwrap_or_default();
        events.retain(|event| event["type"] != "m.room.member" || event["state_key"] != user_id);
        events.extend(stripped(membership_event));
        return Ok(events);
    }
    let mut events = room_description(state, room_id).await?;
    events.extend(stripped(membership_event));
    Ok(events)
}

/// The room's descriptive state events, stripped.
pub async fn room_description(state: &Base, room_id: &str) -> EventResult<Vec<Value>> {
    Ok(room_description_events(state, room_id)
        .await?
        .iter()
        .filter_map(stripped)
        .collect())
}

/// The room's descriptive state events, whole (an invite to another server carries them as
/// PDUs).
pub async fn room_description_events(state: &Base, room_id: &str) -> EventResult<Vec<crate::storage::EventRow>> {
    let keys: Vec<(String, String)> = STRIPPED_STATE
        .iter()
        .map(|kind| ((*kind).to_owned(), String::new()))
        .collect();
    let ids: Vec<String> = state
        .storage
        .current_state_entries(room_id, &keys)
        .await?
        .into_values()
        .collect();
    Ok(state.storage.events(&ids).await?)
}
