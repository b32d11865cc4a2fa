//! Remote events: a PDU another server built and signed (its signatures and hash already
//! checked by the federation area) enters the same steps as a local event: context from its
//! own `prev_events`, the auth rules against its `auth_events` and the state before it, then
//! persist and publish. An event the rules refuse is stored as rejected (so it is not fetched
//! or checked again) and never shown.
//!
//! State before a remote event is the state after its prev events, resolved (see
//! [`super::resolve`]) where they disagree. An event that does not build on the room's current
//! state (a fork) makes current state the resolution of the state after it and the current
//! one. (Soft failure, refusing an event that passes against its own state but not against
//! current state, is not done yet.)

use std::collections::HashMap;

use hearth_federation::pdu::PduEvent;
use ruma::{CanonicalJsonObject, OwnedEventId, RoomId, room_version_rules::RoomVersionRules};
use serde_json::Value;

use super::{EventContext, EventDraft, EventKind, authorise, context::auth_types, persist, resolve::resolve_states};
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
        _ => {
            // Its prev events disagree: the state before it is their states resolved.
            let mut maps = Vec::with_capacity(groups.len());
            for group in &groups {
                maps.push(storage.state_group(*group).await?);
            }
            let resolved = resolve_states(state, rules, &maps, &[]).await?;
            storage.create_state_snapshot(room_id.as_str(), &resolved).await?
        }
    };
    let head = storage.forward_extremities(room_id.as_str()).await?;
    let current_group = match storage.current_state_group(room_id.as_str()).await? {
        Some(group) => Some(group),
        None => head.last().map(|(_, _, group)| *group),
    };
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
        resolved_state: None,
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
    // Not built on current state (a fork): current state becomes the resolution of the
    // state after this event and the current one.
    if outcome.is_none()
        && let Some(current_group) = current_group
        && current_group != state_before
    {
        let mut after = full_state;
        if let Some(key) = &pdu.state_key {
            after.insert((pdu.kind.to_string(), key.clone()), event_id.to_string());
        }
        let current = storage.state_group(current_group).await?;
        context.resolved_state =
            Some(resolve_states(state, rules, &[after, current], std::slice::from_ref(&pdu)).await?);
    }
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
