//! Streams: every change a client is told about is numbered on one of a few server-wide
//! streams (room events, account data, receipts, typing, presence, to-device, device lists).
//! This area holds the positions, the tokens that combine them, and the notifier that wakes
//! whoever waits on a stream. Everything that writes sits above it; the sync transports,
//! and later federation, appservices and the workers' Redis feed, read from it.
//!
//! Positions are handed out by storage (`storage/positions.rs`, the writer interface); the
//! notifier learns of them after commit.

pub mod notifier;
pub mod token;

pub use self::{
    notifier::Notifier,
    token::{Stream, StreamToken},
};
use crate::storage::{Storage, StorageError};

/// The positions to start the notifier from: the database's counters, and for typing (kept
/// in memory) the clock, so typing positions keep rising across restarts.
pub async fn starting_positions(storage: &Storage) -> Result<StreamToken, StorageError> {
    let stored = storage.stream_positions().await?;
    let mut token = StreamToken::default();
    for stream in Stream::ALL {
        let position = match stream.table_name() {
            Some(name) => stored.iter().find(|(n, _)| n == name).map_or(0, |(_, p)| *p),
            None => crate::storage::now_ms(),
        };
        token.set(stream, position);
    }
    Ok(token)
}
