//! Remote events: a PDU another server built and signed (its signatures and hash already
//! checked by the federation area) enters the same steps as a local event: context from its
//! own `prev_events`, the auth rules against its `auth_events` and the state before it, then
//! persist and publish. An event the rules refuse is stored as rejected (so it is not fetched
//! or checked again) and never shown.
//!
//! State before a remote event is the state after its prev events. Where they disagree (the
//! DAG forked on a state change), the states must be resolved; until state resolution is wired
//! in, such an event is refused with [`RemoteOutcome::NeedsResolution`] rather than stored on
//! a guess.

use std::collections::HashMap;

use hearth_federation::pdu::PduEvent;
use ruma::{CanonicalJsonObject, OwnedEventId, RoomId, room_version_rules::RoomVersionRules};
use serde_json::Value;

use super::{EventContext, EventDraft, EventKind, authorise, context::auth_types, persist};
use crate::{
    base::Base,
    rooms::error::{EventError, EventResult},
    storage::{EventRow, StateMap},
};

/// What became of a remote event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// In the room, at this stream position.
    Accepted(i64),
    /// Already stored (a retried transaction, or a second copy).
    Duplicate,
    /// Refused by the auth rules: stored as rejected, never shown.
    Rejected(String),
    /// Events it names are unknown here.
    MissingEvents(Vec<String>),
    /// Its prev events' states differ: state resolution is needed first.
    NeedsResolution,
}

/// Adds a checked remote PDU to a room we know.
pub async fn append_remote_event(
    state: &Base,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> EventResult<RemoteOutcome> {
    let pdu = super::to_pdu(event_id, &object)?;
    let storage = &state.storage;
    let room_lock = state.room_locks.lock(room_id).await;
    if storage.event(event_id.as_str()).await?.is_some() {
        return Ok(RemoteOutcome::Duplicate);
    }
    let prev_ids: Vec<String> = pdu.prev_events.iter().map(ToString::to_string).collect();
    let auth_ids: Vec<String> = pdu.auth_events.iter().map(ToString::to_string).collect();
    let mut wanted = prev_ids.clone();
    wanted.extend(auth_ids.iter().cloned());
    let mut loaded: HashMap<String, EventRow> = storage
        .events(&wanted)
        .await?
        .into_iter()
        .map(|row| (row.event_id.clone(), row))
        .collect();
    let missing: Vec<String> = wanted.iter().filter(|id| !loaded.contains_key(*id)).cloned().collect();
    if !missing.is_empty() {
        return Ok(RemoteOutcome::MissingEvents(missing));
    }
    // The state after each prev event; with one state among them, that is the state before.
    let mut groups = Vec::new();
    for id in &prev_ids {
        match storage.state_group_after(id).await? {
            Some(group) if !groups.contains(&group) => groups.push(group),
            Some(_) => {}
            None => return Ok(RemoteOutcome::MissingEvents(vec![id.clone()])),
        }
    }
    let state_before = match groups.as_slice() {
        [group] => *group,
        _ => return Ok(RemoteOutcome::NeedsResolution),
    };
    // Persisting writes current state on top of the room's head: the event must start from
    // the state the room is in now.
    let head = storage.forward_extremities(room_id.as_str()).await?;
    if head.last().map(|(_, _, group)| *group) != Some(state_before) {
        return Ok(RemoteOutcome::NeedsResolution);
    }
    let draft = draft_of(&pdu)?;
    let types = auth_types(&draft, &pdu.sender, rules)?;
    let full_state = storage.state_group(state_before).await?;
    let mut auth_state = StateMap::new();
    for key in types
        .iter()
        .cloned()
        // The create event is an auth event in every version, listed or (v12) not.
        .chain([
            ("m.room.create".to_owned(), String::new()),
            ("m.room.history_visibility".to_owned(), String::new()),
        ])
    {
        if let Some(id) = full_state.get(&key) {
            auth_state.insert(key, id.clone());
        }
    }
    let state_ids: Vec<String> = auth_state
        .values()
        .filter(|id| !loaded.contains_key(*id))
        .cloned()
        .collect();
    for row in storage.events(&state_ids).await? {
        loaded.insert(row.event_id.clone(), row);
    }
    let mut context = EventContext {
        kind: EventKind::New,
        depth: pdu.depth,
        prev_events: prev_ids,
        state_before: Some(state_before),
        auth_state,
        loaded,
        rejection: None,
    };
    let outcome = match authorise::authorise(rules, &pdu, &context) {
        Ok(()) => None,
        Err(EventError::Forbidden(reason)) => {
            context.kind = EventKind::Rejected;
            context.rejection = Some(reason.clone());
            Some(reason)
        }
        Err(other) => return Err(other),
    };
    let stream_ordering = persist::persist(state, context, room_id, &pdu, object, &draft, None, room_lock).await?;
    Ok(match outcome {
        None => RemoteOutcome::Accepted(stream_ordering),
        Some(reason) => RemoteOutcome::Rejected(reason),
    })
}

/// The parts of a PDU persisting reads, in the shape local events have.
fn draft_of(pdu: &PduEvent) -> EventResult<EventDraft> {
    let content: Value =
        serde_json::from_str(pdu.content.get()).map_err(|_| EventError::BadContent("content is not JSON".into()))?;
    Ok(EventDraft {
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        content,
        redacts: pdu.redacts.clone(),
    })
}
