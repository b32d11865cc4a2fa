//! What an appservice is sent (spec: "Application services … are interested in"): events
//! from or about users of its namespace, events in rooms of its room namespace or with an
//! alias of its alias namespace, and everything in rooms where one of its users is a member.
//!
//! Membership is judged as of each event, not as of the delivery: a queue that fell behind
//! still gets a room's events up to its user's leave, and nothing from before its user's
//! join. A round starts from the members as they stood at its saved position (the present
//! ones, with the namespace users' membership changes since undone) and follows the member
//! events it reads, in stream order.

use std::collections::{HashMap, HashSet};

use hearth_appservices::Appservice;

use crate::{
    base::Base,
    storage::{EventRow, StorageError},
};

/// What one appservice knows of a room during a round.
struct Room {
    /// In its room namespace, or with an alias in its alias namespace.
    always: bool,
    /// Its users joined to the room, as of the last event read.
    members: HashSet<String>,
}

/// Which rooms interest one appservice, as of a stream position, for one delivery round.
pub struct RoomInterest {
    /// The round's saved position; `None`: the present (ephemeral data).
    from: Option<i64>,
    rooms: HashMap<String, Room>,
}

impl RoomInterest {
    /// Interest as of stream position `from`, followed forward by [`Self::event`].
    pub fn at(from: i64) -> Self {
        Self {
            from: Some(from),
            rooms: HashMap::new(),
        }
    }

    /// Interest as things stand now.
    pub fn now() -> Self {
        Self {
            from: None,
            rooms: HashMap::new(),
        }
    }

    /// Whether the appservice is interested in everything in the room now.
    pub async fn room(&mut self, base: &Base, service: &Appservice, room_id: &str) -> Result<bool, StorageError> {
        let room = self.room_state(base, service, room_id).await?;
        Ok(room.always || !room.members.is_empty())
    }

    /// Whether the appservice is sent this event (the next in stream order); its membership
    /// change, if it is one of the appservice's users', counts for the events after it.
    pub async fn event(&mut self, base: &Base, service: &Appservice, row: &EventRow) -> Result<bool, StorageError> {
        let about_ours = row.event_type == "m.room.member"
            && row
                .state_key
                .as_deref()
                .is_some_and(|target| service.is_user_in_namespace(target));
        let interested = service.is_user_in_namespace(&row.sender) || about_ours || {
            let room = self.room_state(base, service, &row.room_id).await?;
            room.always || !room.members.is_empty()
        };
        if about_ours && let Some(target) = &row.state_key {
            let joined = membership_in(&row.json).as_deref() == Some("join");
            let ours = is_local(base, target);
            let room = self.room_state(base, service, &row.room_id).await?;
            if joined && ours {
                room.members.insert(target.clone());
            } else {
                room.members.remove(target);
            }
        }
        Ok(interested)
    }

    async fn room_state(
        &mut self,
        base: &Base,
        service: &Appservice,
        room_id: &str,
    ) -> Result<&mut Room, StorageError> {
        if !self.rooms.contains_key(room_id) {
            let room = Room {
                always: always_interesting(base, service, room_id).await?,
                members: members_at(base, service, room_id, self.from).await?,
            };
            self.rooms.insert(room_id.to_owned(), room);
        }
        Ok(self.rooms.get_mut(room_id).expect("inserted just above"))
    }
}

fn is_local(base: &Base, user_id: &str) -> bool {
    user_id
        .rsplit_once(':')
        .is_some_and(|(_, server)| server == base.config.server_name.as_str())
}

/// `content.membership` of a member event's JSON.
fn membership_in(json: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(json).ok()?;
    event["content"]["membership"].as_str().map(str::to_owned)
}

async fn always_interesting(base: &Base, service: &Appservice, room_id: &str) -> Result<bool, StorageError> {
    if service.is_room_in_namespace(room_id) {
        return Ok(true);
    }
    Ok(service.has_alias_namespace()
        && base
            .storage
            .aliases_of_room(room_id)
            .await?
            .iter()
            .any(|alias| service.is_alias_in_namespace(alias)))
}

/// The appservice's local users joined to the room at stream position `at` (now if `None`):
/// the joined ones now, each namespace user's membership changes after `at` undone (its first
/// change after `at` says what it was before).
async fn members_at(
    base: &Base,
    service: &Appservice,
    room_id: &str,
    at: Option<i64>,
) -> Result<HashSet<String>, StorageError> {
    let storage = &base.storage;
    let mut members: HashSet<String> = storage
        .joined_members(room_id)
        .await?
        .into_iter()
        .filter(|member| is_local(base, member) && service.is_user_in_namespace(member))
        .collect();
    let Some(at) = at else {
        return Ok(members);
    };
    let mut undone = HashSet::new();
    for (target, replaced) in storage.member_changes_after(room_id, at).await? {
        if !service.is_user_in_namespace(&target) || !is_local(base, &target) || !undone.insert(target.clone()) {
            continue;
        }
        let before = match replaced {
            Some(event_id) => storage.event(&event_id).await?.and_then(|row| membership_in(&row.json)),
            None => None,
        };
        if before.as_deref() == Some("join") {
            members.insert(target);
        } else {
            members.remove(&target);
        }
    }
    Ok(members)
}
