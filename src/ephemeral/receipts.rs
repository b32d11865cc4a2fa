//! Receipts and read markers: `m.read` (shown to the room), `m.read.private` (only ever shown
//! to its owner), threaded receipts, and `m.fully_read` (room account data). Each stored
//! receipt takes a position on the `receipts` stream and wakes the room.

use ruma::{RoomId, UserId};
use serde_json::json;

use crate::streams::Stream;
use crate::{
    base::{Base, Change},
    rooms::access::{require_member, visible_event},
    rooms::error::{EventError, EventResult},
    storage::{NewReceipt, now_ms},
};

/// Stores the user's receipt of `receipt_type` on `event_id` (thread `""` for unthreaded,
/// `main`, or a thread root). A receipt older than the user's current one changes nothing.
pub async fn set_receipt(
    state: &Base,
    room_id: &RoomId,
    user_id: &UserId,
    receipt_type: &str,
    event_id: &str,
    thread_id: &str,
) -> EventResult<()> {
    require_member(state, room_id, user_id).await?;
    let (_, event) = visible_event(state, room_id, user_id, event_id).await?;
    if !thread_id.is_empty() && thread_id != "main" {
        // A thread is named by its root: an event of this room.
        visible_event(state, room_id, user_id, thread_id)
            .await
            .map_err(|_| EventError::invalid_param(format!("{thread_id} is not an event of this room")))?;
    }
    let receipt = NewReceipt {
        room_id: room_id.as_str(),
        receipt_type,
        user_id: user_id.as_str(),
        thread_id,
        event_sender: "",
        event_id,
        event_stream_ordering: event.stream_ordering,
        ts: now_ms(),
    };
    if let Some(position) = state.storage.upsert_receipt(&receipt).await? {
        if receipt_type != "m.read.private" {
            // Other servers in the room are told; a private receipt never leaves this server.
            state.publish(Change::Receipt {
                room_id: room_id.as_str(),
                user_id: user_id.as_str(),
                receipt_type,
                event_id,
                thread_id,
                event_sender: "",
                ts: receipt.ts,
            });
        }
        // A private receipt concerns only its owner's clients.
        let key = if receipt_type == "m.read.private" {
            user_id.as_str()
        } else {
            room_id.as_str()
        };
        state.notifier.advance(Stream::Receipts, position, [key]);
        if receipt_type == "m.read" || receipt_type == "m.read.private" {
            // Counts dropped: the user's phones update their badges.
            state.publish(Change::ReadReceipt {
                user_id: user_id.as_str(),
            });
        }
    }
    Ok(())
}

/// Moves the user's `m.fully_read` marker (room account data) to `event_id`.
pub async fn set_fully_read(state: &Base, room_id: &RoomId, user_id: &UserId, event_id: &str) -> EventResult<()> {
    require_member(state, room_id, user_id).await?;
    visible_event(state, room_id, user_id, event_id).await?;
    let content = json!({ "event_id": event_id }).to_string();
    Ok(crate::account_data::set_account_data(state, user_id, room_id.as_str(), "m.fully_read", &content).await?)
}
