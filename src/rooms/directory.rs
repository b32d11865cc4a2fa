//! Room aliases and the public room directory: who may create, delete and publish, and what
//! follows (a deleted alias leaves the room's canonical alias event). The client API calls
//! these; federation's directory queries will read the same tables.

use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde_json::Value;

use super::{
    access::{power_levels, require_room, state_event_level},
    error::{EventError, EventResult},
};
use crate::{accounts::sessions::Sender, base::Base};

fn local_alias(state: &Base, alias: &RoomAliasId) -> EventResult<()> {
    if alias.server_name() != state.config.server_name {
        return Err(EventError::invalid_param(
            "Aliases of other servers cannot be managed here",
        ));
    }
    // `#:server` parses, but names nothing (Synapse refuses it too).
    if alias.alias().is_empty() {
        return Err(EventError::invalid_param("An alias needs a localpart"));
    }
    Ok(())
}

/// The room a local alias points to (404 when it points nowhere).
pub async fn local_alias_target(state: &Base, alias: &RoomAliasId) -> EventResult<OwnedRoomId> {
    let (room_id, _) = state
        .storage
        .alias(alias.as_str())
        .await?
        .ok_or_else(|| EventError::not_found("Room alias not found"))?;
    OwnedRoomId::try_from(room_id).map_err(|_| EventError::internal())
}

/// Refuses an alias an application service claims exclusively, unless that appservice asks
/// (`sender` acting with its token, as itself or one of its users; as Synapse).
pub fn check_alias_claim(state: &Base, sender: &Sender, alias: &RoomAliasId) -> EventResult<()> {
    let acting = sender.appservice.as_ref().map(|service| service.id());
    match state.appservice_registry().claiming_alias(alias.as_str()) {
        Some(service) if acting != Some(service.id()) => Err(EventError::Exclusive(format!(
            "This alias is reserved by an application service ({})",
            service.id()
        ))),
        _ => Ok(()),
    }
}

/// Creates `alias` for a room the sender is joined to.
pub async fn add_alias(state: &Base, sender: &Sender, alias: &RoomAliasId, room_id: &RoomId) -> EventResult<()> {
    local_alias(state, alias)?;
    check_alias_claim(state, sender, alias)?;
    let user_id = &sender.user_id;
    if state
        .storage
        .membership(room_id.as_str(), user_id.as_str())
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(EventError::forbidden("You must be in the room to give it an alias"));
    }
    if !state
        .storage
        .insert_alias(alias.as_str(), room_id.as_str(), user_id.as_str())
        .await?
    {
        return Err(EventError::AliasExists);
    }
    Ok(())
}

/// Deletes a local alias: by its creator, a room moderator (power to change the canonical
/// alias) or a server admin. The room's canonical alias event follows.
pub async fn delete_alias(state: &Base, sender: &Sender, alias: &RoomAliasId) -> EventResult<()> {
    local_alias(state, alias)?;
    let (room_id, creator) = state
        .storage
        .alias(alias.as_str())
        .await?
        .ok_or_else(|| EventError::not_found("Room alias not found"))?;
    if creator != sender.user_id.as_str() && !sender.is_admin {
        let room_id = OwnedRoomId::try_from(room_id.as_str()).map_err(|_| EventError::internal())?;
        let (own, _) = power_levels(state, &room_id, &sender.user_id, "state_default").await?;
        let needed = state_event_level(state, &room_id, "m.room.canonical_alias").await?;
        if own < needed {
            return Err(EventError::forbidden("You cannot delete this alias"));
        }
    }
    state.storage.delete_alias(alias.as_str()).await?;
    drop_from_canonical_alias(state, sender, &room_id, alias.as_str()).await?;
    Ok(())
}

/// A deleted alias leaves the room's `m.room.canonical_alias` too (as Synapse), sent by the
/// user who deleted it; if that fails (they may not change that event), it stays as it is.
async fn drop_from_canonical_alias(state: &Base, sender: &Sender, room_id: &str, alias: &str) -> EventResult<()> {
    let key = ("m.room.canonical_alias".to_owned(), String::new());
    let Some(event_id) = state
        .storage
        .current_state_entries(room_id, std::slice::from_ref(&key))
        .await?
        .into_values()
        .next()
    else {
        return Ok(());
    };
    let Some(row) = state.storage.event(&event_id).await? else {
        return Ok(());
    };
    let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
    let Some(mut content) = pdu["content"].as_object().cloned() else {
        return Ok(());
    };
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias) {
        content.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alt)) = content.get_mut("alt_aliases") {
        let before = alt.len();
        alt.retain(|other| other.as_str() != Some(alias));
        changed |= alt.len() != before;
    }
    if !changed {
        return Ok(());
    }
    let room_id = OwnedRoomId::try_from(room_id).map_err(|_| EventError::internal())?;
    // The alias is gone already: failing to update the event (no power to, say) must not
    // turn the deletion into an error.
    if let Err(error) = super::send::send_state(state, sender, &room_id, &key.0, "", content, None).await {
        tracing::info!(%room_id, alias, error = ?error, "alias deleted; the canonical alias event could not follow");
    }
    Ok(())
}

/// Publishes or unpublishes a room.
pub async fn publish(state: &Base, user_id: &UserId, room_id: &RoomId, published: bool) -> EventResult<()> {
    require_room(state, room_id.as_str()).await?;
    let (own, _) = power_levels(state, room_id, user_id, "state_default").await?;
    let needed = state_event_level(state, room_id, "m.room.canonical_alias").await?;
    if own < needed
        || state
            .storage
            .membership(room_id.as_str(), user_id.as_str())
            .await?
            .as_deref()
            != Some("join")
    {
        return Err(EventError::forbidden(
            "Only room moderators may change the room's directory listing",
        ));
    }
    state.storage.set_published(room_id.as_str(), published).await?;
    Ok(())
}
