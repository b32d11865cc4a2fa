//! What an appservice is sent (spec: "Application services … are interested in"): events
//! from or about users of its namespace, events in rooms of its room namespace or with an
//! alias of its alias namespace, and everything in rooms where one of its users is a member.

use std::collections::HashMap;

use hearth_appservices::Appservice;

use crate::{
    base::Base,
    storage::{EventRow, StorageError},
};

/// Which rooms interest one appservice, remembered for one delivery round (membership may
/// change between rounds).
#[derive(Default)]
pub struct RoomInterest {
    rooms: HashMap<String, bool>,
}

impl RoomInterest {
    /// Whether the appservice is interested in everything in the room.
    pub async fn room(&mut self, base: &Base, service: &Appservice, room_id: &str) -> Result<bool, StorageError> {
        if let Some(&known) = self.rooms.get(room_id) {
            return Ok(known);
        }
        let interested = room_interests(base, service, room_id).await?;
        self.rooms.insert(room_id.to_owned(), interested);
        Ok(interested)
    }

    /// Whether the appservice is sent this event.
    pub async fn event(&mut self, base: &Base, service: &Appservice, row: &EventRow) -> Result<bool, StorageError> {
        if service.is_user_in_namespace(&row.sender) {
            return Ok(true);
        }
        if row.event_type == "m.room.member"
            && let Some(target) = &row.state_key
            && service.is_user_in_namespace(target)
        {
            return Ok(true);
        }
        self.room(base, service, &row.room_id).await
    }
}

async fn room_interests(base: &Base, service: &Appservice, room_id: &str) -> Result<bool, StorageError> {
    if service.is_room_in_namespace(room_id) {
        return Ok(true);
    }
    if service.has_alias_namespace()
        && base
            .storage
            .aliases_of_room(room_id)
            .await?
            .iter()
            .any(|alias| service.is_alias_in_namespace(alias))
    {
        return Ok(true);
    }
    let ours = format!(":{}", base.config.server_name);
    Ok(base
        .storage
        .joined_members(room_id)
        .await?
        .iter()
        .any(|member| member.ends_with(&ours) && service.is_user_in_namespace(member)))
}
