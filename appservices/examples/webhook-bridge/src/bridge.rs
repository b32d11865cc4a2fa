//! The bridge's state and its Matrix-side steps: which rooms are bridged, which ghosts exist
//! and where they are, and getting a ghost into a room to speak.
//!
//! All of it is a cache of what the homeserver knows, kept in memory: after a restart the
//! bridged rooms are read back (`joined_rooms`), and the rest is found again by trying
//! (registering an existing ghost answers `M_USER_IN_USE`, joining twice is harmless).

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard, PoisonError},
};

use http::StatusCode;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};
use tokio::sync::mpsc;

use crate::{
    common::homeserver::{Homeserver, HomeserverError},
    ghosts,
    outbound::OutboundMessage,
};

pub struct Bridge {
    pub homeserver: Homeserver,
    pub server_name: OwnedServerName,
    /// The rooms the bot is in: messages there go out to `outbound_url`.
    bridged_rooms: Mutex<HashSet<OwnedRoomId>>,
    /// Ghosts known to exist on the homeserver.
    registered_ghosts: Mutex<HashSet<OwnedUserId>>,
    /// Ghosts known to be joined, by room.
    ghost_memberships: Mutex<HashSet<(OwnedRoomId, OwnedUserId)>>,
    /// The queue of the forwarder to `outbound_url`, if one is configured.
    outbound: Option<mpsc::Sender<OutboundMessage>>,
}

/// The sets stay consistent even if a holder panicked (each change is one insert or
/// remove), so a poisoned lock is used as it is.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bridge {
    pub fn new(
        homeserver: Homeserver,
        server_name: OwnedServerName,
        outbound: Option<mpsc::Sender<OutboundMessage>>,
    ) -> Self {
        Self {
            homeserver,
            server_name,
            bridged_rooms: Mutex::default(),
            registered_ghosts: Mutex::default(),
            ghost_memberships: Mutex::default(),
            outbound,
        }
    }

    pub fn is_bridged(&self, room_id: &RoomId) -> bool {
        locked(&self.bridged_rooms).contains(room_id)
    }

    pub fn set_bridged(&self, room_id: &RoomId, bridged: bool) {
        let mut rooms = locked(&self.bridged_rooms);
        if bridged {
            rooms.insert(room_id.to_owned());
        } else {
            rooms.remove(room_id);
        }
    }

    pub fn is_ghost(&self, user: &UserId) -> bool {
        ghosts::is_ghost(user, &self.server_name)
    }

    /// Records a ghost's membership as the homeserver reported it.
    pub fn set_ghost_joined(&self, room_id: &RoomId, ghost: &UserId, joined: bool) {
        let key = (room_id.to_owned(), ghost.to_owned());
        let mut memberships = locked(&self.ghost_memberships);
        if joined {
            memberships.insert(key);
        } else {
            memberships.remove(&key);
        }
    }

    /// Queues a message for `outbound_url`; never waits (a full queue drops the message, with
    /// a warning: the homeserver's transactions must not wait on a slow receiver).
    pub fn forward(&self, message: OutboundMessage) {
        let Some(queue) = &self.outbound else { return };
        if let Err(error) = queue.try_send(message) {
            tracing::warn!(%error, "outbound queue full or closed; message not forwarded");
        }
    }

    /// Makes sure the bot is in the room (it is the ghosts' way in, inviting them). Joining
    /// works when the bot was invited or the room is public.
    pub async fn ensure_bot_joined(&self, room_id: &RoomId) -> Result<(), HomeserverError> {
        if self.is_bridged(room_id) {
            return Ok(());
        }
        self.homeserver.join(room_id.as_str(), None).await?;
        self.set_bridged(room_id, true);
        Ok(())
    }

    /// Makes sure the ghost for a webhook `username` exists: registers it the first time,
    /// with `display_name` (the username as the caller wrote it).
    pub async fn ensure_ghost(&self, ghost: &UserId, display_name: &str) -> Result<(), HomeserverError> {
        if locked(&self.registered_ghosts).contains(ghost) {
            return Ok(());
        }
        match self.homeserver.register_user(ghost.localpart()).await {
            Ok(()) => {
                tracing::info!(%ghost, "registered a ghost");
                if let Err(error) = self.homeserver.set_display_name(ghost, display_name).await {
                    tracing::warn!(%ghost, %error, "cannot set the ghost's display name");
                }
            }
            // Registered before (by an earlier run, or a concurrent webhook call).
            Err(HomeserverError::Refused { errcode, .. }) if errcode == "M_USER_IN_USE" => {}
            Err(error) => return Err(error),
        }
        locked(&self.registered_ghosts).insert(ghost.to_owned());
        Ok(())
    }

    /// Makes sure the ghost is in the room: it joins, and if the room does not let it (403:
    /// invite-only), the bot invites it and it joins again.
    pub async fn ensure_ghost_joined(&self, room_id: &RoomId, ghost: &UserId) -> Result<(), HomeserverError> {
        let key = (room_id.to_owned(), ghost.to_owned());
        if locked(&self.ghost_memberships).contains(&key) {
            return Ok(());
        }
        match self.homeserver.join(room_id.as_str(), Some(ghost)).await {
            Ok(_) => {}
            Err(HomeserverError::Refused { status, .. }) if status == StatusCode::FORBIDDEN => {
                tracing::debug!(%room_id, %ghost, "inviting the ghost");
                self.homeserver.invite(room_id, ghost).await?;
                self.homeserver.join(room_id.as_str(), Some(ghost)).await?;
            }
            Err(error) => return Err(error),
        }
        locked(&self.ghost_memberships).insert(key);
        Ok(())
    }
}
