//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a new room of the new version carrying the
//! old room's state, a tombstone in the old room pointing at it, the old room muted for
//! ordinary members, and local aliases moved over.

use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::error::{EventError, EventResult};
use super::{
    access::{power_levels, state_event_level},
    create::{Preset, RoomSpec, create_room},
    pipeline::{EventDraft, append_event, room_version_rules},
};
use crate::base::Base;

/// State carried from the old room to the new one (as Synapse does).
const CARRIED_STATE: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.pinned_events",
];

fn content_of(json: &str) -> Value {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|pdu| pdu.get("content").cloned())
        .unwrap_or_else(|| json!({}))
}

pub async fn upgrade_room(
    state: &Base,
    old_room: &RoomId,
    sender: &UserId,
    new_version: RoomVersionId,
) -> EventResult<OwnedRoomId> {
    let storage = &state.storage;
    let new_rules = room_version_rules(new_version.as_str())?.1;
    if storage.room_version(old_room.as_str()).await?.is_none() {
        return Err(EventError::not_found("Unknown room"));
    }
    if storage.membership(old_room.as_str(), sender.as_str()).await?.as_deref() != Some("join") {
        return Err(EventError::forbidden("You are not in this room"));
    }
    let levels_row = storage
        .current_state_event(old_room.as_str(), "m.room.power_levels", "")
        .await?;
    let mut levels = levels_row
        .as_ref()
        .map(|row| content_of(&row.json))
        .unwrap_or_else(|| json!({}));
    let (own, _) = power_levels(state, old_room, sender, "state_default").await?;
    // Both the tombstone and the power levels change in the old room are needed: check both
    // before anything is created, so a refused upgrade leaves nothing behind.
    for event_type in ["m.room.tombstone", "m.room.power_levels"] {
        let needed = state_event_level(state, old_room, event_type).await?;
        if own < needed {
            return Err(EventError::forbidden(format!(
                "Upgrading needs power level {needed} for {event_type}; you have {own}"
            )));
        }
    }

    let old_create = storage
        .current_state_event(old_room.as_str(), "m.room.create", "")
        .await?
        .ok_or_else(EventError::internal)?;
    let old_create_content = content_of(&old_create.json);
    let mut creation_content = Map::new();
    for key in ["type", "m.federate"] {
        if let Some(value) = old_create_content.get(key) {
            creation_content.insert(key.to_owned(), value.clone());
        }
    }
    let last_event = storage.room_events(old_room.as_str(), i64::MAX, true, 1).await?;
    let mut predecessor = json!({ "room_id": old_room });
    if let Some(last) = last_event.first() {
        predecessor["event_id"] = Value::from(last.event_id.as_str());
    }
    creation_content.insert("predecessor".into(), predecessor);

    let mut initial_state = Vec::new();
    for event_type in CARRIED_STATE {
        if let Some(row) = storage.current_state_event(old_room.as_str(), event_type, "").await? {
            initial_state.push(((*event_type).to_owned(), String::new(), content_of(&row.json)));
        }
    }
    // The power levels move over; in v12 rooms creators are implicit and must not be listed.
    let mut new_levels = levels.as_object().cloned().unwrap_or_default();
    if let Some(users) = new_levels.get_mut("users").and_then(Value::as_object_mut) {
        if new_rules.authorization.explicitly_privilege_room_creators {
            users.remove(sender.as_str());
        } else {
            // The upgrader must be able to set up the new room.
            users.insert(sender.to_string(), json!(100));
        }
    }
    let spec = RoomSpec {
        version: new_version,
        // As Synapse: the private_chat preset, whose join rule the carried one replaces, and
        // whose `m.room.guest_access` (can_join) stands when the old room had none; clients
        // wait for that event after an upgrade.
        preset: Preset::PrivateChat,
        creation_content,
        power_level_override: new_levels,
        initial_state,
        name: None,
        topic: None,
        invite: Vec::new(),
        is_direct: false,
        alias: None,
        publish: false,
    };
    let new_room = create_room(state, sender, spec).await?;

    let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
    append_event(
        state,
        old_room,
        sender,
        EventDraft::state("m.room.tombstone", "", tombstone),
        None,
    )
    .await?;

    // Ordinary members can no longer talk or invite in the old room.
    let users_default = levels["users_default"].as_i64().unwrap_or(0);
    let restricted = (users_default + 1).max(50);
    for key in ["events_default", "invite"] {
        let current = levels[key].as_i64().unwrap_or(0);
        levels[key] = json!(current.max(restricted));
    }
    append_event(
        state,
        old_room,
        sender,
        EventDraft::state("m.room.power_levels", "", levels),
        None,
    )
    .await?;

    for alias in storage.aliases_of_room(old_room.as_str()).await? {
        if let Some((_, creator)) = storage.alias(&alias).await? {
            storage.delete_alias(&alias).await?;
            storage.insert_alias(&alias, new_room.as_str(), &creator).await?;
        }
    }
    if let Some(row) = storage
        .current_state_event(old_room.as_str(), "m.room.canonical_alias", "")
        .await?
    {
        let content = content_of(&row.json);
        append_event(
            state,
            &new_room,
            sender,
            EventDraft::state("m.room.canonical_alias", "", content),
            None,
        )
        .await?;
    }
    tracing::info!(%old_room, %new_room, "upgraded room");
    Ok(new_room)
}
