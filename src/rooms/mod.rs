//! Rooms: the event pipeline (build, sign, authorize, persist), room creation, membership,
//! and the shapes events are served in.

pub mod access;
pub mod client_event;
pub mod create;
pub mod directory;
pub mod error;
pub mod joins;
pub mod membership;
pub mod persister;
pub mod pipeline;
pub mod send;
pub mod summary;
pub mod upgrade;
pub mod version;

pub use self::error::EventError;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, RoomId};
use tokio::sync::OwnedMutexGuard;

/// One lock per room: a room's events are persisted one at a time, so every reader sees the
/// same order; different rooms proceed in parallel.
#[derive(Default)]
pub struct RoomLocks {
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    pub async fn lock(&self, room_id: &RoomId) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Forget locks nobody holds or waits for, so the map does not grow with every room.
            if locks.len() > 10_000 {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry(room_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
