//! Typing notices: in memory only (they last seconds), one list per room, each change a new
//! position on the typing stream. A notice expires after the client's timeout (at most
//! [`MAX_TYPING`]) unless renewed.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::time::Instant;

use crate::streams::{Notifier, Stream};

/// The longest a typing notice lasts without being renewed.
pub const MAX_TYPING: Duration = Duration::from_secs(120);

/// Rooms with nobody typing are kept (their position tells syncing clients that typing
/// stopped) until there are this many rooms; then they are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct Typing {
    rooms: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    by_id: HashMap<OwnedRoomId, RoomTyping>,
    /// The newest position of a room swept away: a client that synced before it may have
    /// missed that typing stopped in any room not listed, so it is told "nobody" for those.
    swept: i64,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// Users whose expiry timer is running (at most one each).
    timers: HashSet<OwnedUserId>,
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
            if rooms.by_id.len() >= SWEEP_ABOVE {
                let Rooms { by_id, swept } = &mut *rooms;
                by_id.retain(|_, room| {
                    let idle = room.users.is_empty() && room.timers.is_empty();
                    if idle {
                        *swept = (*swept).max(room.position);
                    }
                    !idle
                });
                by_id.shrink_to_fit();
            }
            let room = rooms.by_id.entry(room_id.to_owned()).or_default();
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
            let start_timer = timeout.is_some() && room.timers.insert(user_id.to_owned());
            if room.users.is_empty() && room.timers.is_empty() && !changed {
                // Clients that synced before its last change still learn typing stopped.
                let position = room.position;
                rooms.by_id.remove(room_id);
                rooms.swept = rooms.swept.max(position);
            }
            (changed, start_timer)
        };
        let (changed, start_timer) = changed;
        if changed {
            notifier.wake([room_id.as_str()]);
        }
        // One timer per typing user, started when they start typing: renewals move the expiry
        // and the timer follows it, so repeated notices cost no new tasks.
        if start_timer {
            let typing = Arc::clone(self);
            let notifier = Arc::clone(notifier);
            let room_id = room_id.to_owned();
            let user_id = user_id.to_owned();
            tokio::spawn(async move {
                while let Some(expiry) = typing.expire(&notifier, &room_id, &user_id) {
                    tokio::time::sleep_until(expiry).await;
                }
            });
        }
    }

    /// Drops a notice whose time is up; returns the expiry to wait for if it is still running.
    fn expire(&self, notifier: &Notifier, room_id: &RoomId, user_id: &UserId) -> Option<Instant> {
        let expired = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let room = rooms.by_id.get_mut(room_id)?;
            let Some(expiry) = room.users.get(user_id).copied() else {
                room.timers.remove(user_id);
                return None;
            };
            if expiry > Instant::now() {
                return Some(expiry);
            }
            room.users.remove(user_id);
            room.timers.remove(user_id);
            room.position = notifier.next_position(Stream::Typing);
            true
        };
        if expired {
            notifier.wake([room_id.as_str()]);
        }
        None
    }

    /// Who is typing in the room, if that last changed in (`since`, `until`]. A change after
    /// `until` belongs to the next response (whose token covers it), not this one.
    pub fn changed_between(&self, room_id: &str, since: i64, until: i64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(room) = rooms.by_id.get(room_id) else {
            return (rooms.swept > since && rooms.swept <= until).then(Vec::new);
        };
        (room.position > since && room.position <= until).then(|| {
            let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
            users.sort();
            users
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::token::StreamToken;

    #[tokio::test]
    async fn a_client_behind_a_removed_room_still_learns_typing_stopped() {
        let typing = Arc::new(Typing::default());
        let notifier = Arc::new(Notifier::new(StreamToken::default()));
        let room: OwnedRoomId = "!r:x".try_into().unwrap();
        let alice: OwnedUserId = "@alice:x".try_into().unwrap();
        typing.set(&notifier, &room, &alice, Some(Duration::from_secs(30)));
        let started = notifier.position(Stream::Typing);
        typing.set(&notifier, &room, &alice, None);
        let stopped = notifier.position(Stream::Typing);
        // The expiry timer has nothing left to do; a redundant "stopped" then drops the room.
        typing.expire(&notifier, &room, &alice);
        typing.set(&notifier, &room, &alice, None);
        // A client that saw alice typing is told nobody types now.
        assert_eq!(
            typing.changed_between(room.as_str(), started, stopped),
            Some(Vec::new())
        );
        // One that already saw the stop is told nothing.
        assert_eq!(typing.changed_between(room.as_str(), stopped, stopped), None);
    }
}
