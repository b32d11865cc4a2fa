//! Sync and real time: the streams every change is numbered on, the notifier that wakes
//! waiting clients, and the three transports that carry changes to them (`/sync`, simplified
//! sliding sync and the WebSocket), plus the ephemeral streams (typing, receipts, presence).

pub mod delivery;
pub mod filter;
pub mod notifier;
pub mod presence;
pub mod receipts;
pub mod sliding;
pub mod token;
pub mod typing;
pub mod v3;
pub mod websocket;
pub mod window;

use ruma::UserId;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    storage::Storage,
};

pub use self::{
    notifier::Notifier,
    token::{Stream, StreamToken},
};

/// The receipt type of delivery receipts (beyond the spec; see docs/delivered.md).
pub const DELIVERED: &str = "io.hearth.delivered";

/// The positions to start the notifier from: the database's counters, and for typing (kept
/// in memory) the clock, so typing positions keep rising across restarts.
pub async fn starting_positions(storage: &Storage) -> ApiResult<StreamToken> {
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

/// Stores account data (`room_id` `""` for global) and wakes the user's clients.
pub async fn set_account_data(
    state: &AppState,
    user_id: &UserId,
    room_id: &str,
    data_type: &str,
    content: &str,
) -> ApiResult<()> {
    // Its own task: a client hanging up mid-write must not leave the data written but the
    // caches (the ignore list) stale and the user's other clients not woken.
    let (state, user_id) = (state.clone(), user_id.to_owned());
    let (room_id, data_type, content) = (room_id.to_owned(), data_type.to_owned(), content.to_owned());
    tokio::spawn(async move {
        let position = state
            .storage
            .set_account_data(user_id.as_str(), &room_id, &data_type, &content)
            .await?;
        state
            .caches
            .account_data_changed(user_id.as_str(), &room_id, &data_type);
        state.push.account_data_changed(user_id.as_str(), &room_id, &data_type);
        state
            .notifier
            .advance(Stream::AccountData, position, [user_id.as_str()]);
        Ok(())
    })
    .await
    .map_err(|_| ApiError::internal())?
}
