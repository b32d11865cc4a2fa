//! Check: what the auth rules do not cover. For local drafts: identifier sizes, and a
//! redaction must name an event of this room that the sender may redact. Remote PDUs will be
//! checked here for hashes, signatures and format before they reach the auth rules.

use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::Value;

use super::build::EventDraft;
use crate::{
    base::Base,
    rooms::{
        access::power_levels,
        error::{EventError, EventResult},
    },
};

/// Longest event type and state key (spec, "Size limits": 255 bytes each).
const MAX_IDENTIFIER_BYTES: usize = 255;

/// The spec's size limits on an event's identifiers.
pub fn check_identifier_sizes(draft: &EventDraft) -> EventResult<()> {
    if draft.event_type.len() > MAX_IDENTIFIER_BYTES {
        return Err(EventError::InvalidParam(format!(
            "Event types are at most {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    if draft
        .state_key
        .as_ref()
        .is_some_and(|key| key.len() > MAX_IDENTIFIER_BYTES)
    {
        return Err(EventError::InvalidParam(format!(
            "State keys are at most {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A redaction, however it is sent (`/redact` or `/send/m.room.redaction`), must name an
/// event of this room, and a sender may redact others' events only with the `redact` power
/// level. (The v3+ auth rules accept any redaction and leave this check to the server that
/// applies it.) Sets the draft's `redacts`.
pub async fn check_redaction(
    state: &Base,
    room_id: &RoomId,
    sender: &UserId,
    draft: &mut EventDraft,
) -> EventResult<()> {
    let target = match &draft.redacts {
        Some(target) => target.clone(),
        None => draft
            .content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|id| OwnedEventId::try_from(id).ok())
            .ok_or_else(|| {
                EventError::BadContent("A redaction must name the event it redacts (`redacts`)".to_owned())
            })?,
    };
    let row = state
        .storage
        .event(target.as_str())
        .await?
        .filter(|row| row.room_id == room_id.as_str())
        .ok_or_else(|| EventError::NotFound("The event to redact is not in this room".to_owned()))?;
    if row.sender != sender.as_str() {
        let (own, needed) = power_levels(state, room_id, sender, "redact").await?;
        if own < needed {
            return Err(EventError::Forbidden(format!(
                "Redacting other users' events needs power level {needed}; you have {own}"
            )));
        }
    }
    draft.redacts = Some(target);
    Ok(())
}
