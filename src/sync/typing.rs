//! Typing notices: in memory only (they last seconds), one list per room, each change a new
//! position on the typing stream. A notice expires after the client's timeout (at most
//! [`MAX_TYPING`]) unless renewed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use super::{notifier::Notifier, token::Stream};

/// The longest a typing notice lasts without being renewed.
pub const MAX_TYPING: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// The typing-stream position of the last change.
    position: i64,
}

impl Typing {
    /// Starts (with a timeout) or stops a user's typing notice in a room.
    pub fn set(
        self: &Arc<Self>,
        notifier: &Arc<Notifier>,
        room_id: &RoomId,
        user_id: &UserId,
        timeout: Option<Duration>,
    ) {
        let changed = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let room = rooms.entry(room_id.to_owned()).or_default();
            let changed = match timeout {
                Some(timeout) => {
                    let expiry = Instant::now() + timeout.min(MAX_TYPING);
                    room.users.insert(user_id.to_owned(), expiry).is_none()
                }
                None => room.users.remove(user_id).is_some(),
            };
            if changed {
                room.position = notifier.next_position(Stream::Typing);
            }
            if room.users.is_empty() && !changed {
                rooms.remove(room_id);
            }
            changed
        };
        if changed {
            notifier.wake([room_id.as_str()]);
        }
        if let Some(timeout) = timeout {
            let typing = Arc::clone(self);
            let notifier = Arc::clone(notifier);
            let room_id = room_id.to_owned();
            let user_id = user_id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(timeout.min(MAX_TYPING)).await;
                typing.expire(&notifier, &room_id, &user_id);
            });
        }
    }

    /// Drops a notice whose time is up (unless it was renewed since).
    fn expire(&self, notifier: &Notifier, room_id: &RoomId, user_id: &UserId) {
        let expired = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(room) = rooms.get_mut(room_id) else {
                return;
            };
            let due = room.users.get(user_id).is_some_and(|expiry| *expiry <= Instant::now());
            if due {
                room.users.remove(user_id);
                room.position = notifier.next_position(Stream::Typing);
            }
            due
        };
        if expired {
            notifier.wake([room_id.as_str()]);
        }
    }

    /// Who is typing in the room, if that last changed in (`since`, `until`]. A change after
    /// `until` belongs to the next response (whose token covers it), not this one.
    pub fn changed_between(&self, room_id: &str, since: i64, until: i64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let room = rooms.get(room_id)?;
        (room.position > since && room.position <= until).then(|| {
            let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
            users.sort();
            users
        })
    }
}
