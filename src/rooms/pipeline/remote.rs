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
    /// Passes against its own state but not against current state: kept, never shown.
    SoftFailed,
}

/// Adds a checked remote PDU to a room we know.
pub async fn append_remote_event(
    state: &Base,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> EventResult<RemoteOutcome> {
    append_remote_event_after_gap(state, room_id, event_id, object, rules, &HashMap::new()).await
}

/// [`append_remote_event`] for an event after a gap: `gap_states` gives, for prev events not
/// held here, the state group of the state after each (which the sending server told us, its
/// events checked). The gap stays: those prev events are not stored.
pub async fn append_remote_event_after_gap(
    state: &Base,
    room_id: &RoomId,
    event_id: &OwnedEventId,
    object: CanonicalJsonObject,
    rules: &RoomVersionRules,
    gap_states: &HashMap<String, i64>,
) -> EventResult<RemoteOutcome> {
    let pdu = super::to_pdu(event_id, &object)?;
    if pdu.room_id.as_deref() != Some(room_id) {
        return Ok(RemoteOutcome::Rejected("the event is of another room".to_owned()));
    }
    let storage = &state.storage;
    let room_lock = state.room_locks.lock(room_id).await;
    match storage.stored_event_rejection(event_id.as_str()).await? {
        Some(None) => return Ok(RemoteOutcome::Duplicate),
        // Refused before: refused again, without a second try at storing it.
        Some(Some(reason)) => return Ok(RemoteOutcome::Rejected(reason)),
        None => {}
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
    let missing: Vec<String> = wanted
        .iter()
        .filter(|id| !loaded.contains_key(*id) && !gap_states.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Ok(RemoteOutcome::MissingEvents(missing));
    }
    // Events of another room cannot stand behind this one (nor lend it their state).
    if loaded.values().any(|row| row.room_id != room_id.as_str()) {
        return Ok(RemoteOutcome::Rejected(
            "its prev or auth events are of another room".to_owned(),
        ));
    }
    // The state after each prev event; with one state among them, that is the state before.
    let mut groups = Vec::new();
    for id in &prev_ids {
        let after = match gap_states.get(id) {
            Some(group) => Some(*group),
            None => storage.state_group_after(id).await?,
        };
        match after {
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
    let mut draft = draft_of(&pdu)?;
    let types = auth_types(&draft, &pdu.sender, rules)?;
    let wanted_state: Vec<(String, String)> = types
        .iter()
        .cloned()
        // The create event is an auth event in every version, listed or (v12) not.
        .chain([
            ("m.room.create".to_owned(), String::new()),
            ("m.room.history_visibility".to_owned(), String::new()),
        ])
        .collect();
    // Built on current state (the common case): the few entries the rules need come from it,
    // indexed. Off it (a fork), the whole state before it is needed for the resolution.
    let on_current_state = current_group == Some(state_before);
    let full_state = if on_current_state {
        None
    } else {
        Some(storage.state_group(state_before).await?)
    };
    let auth_state: StateMap = match &full_state {
        None => storage.current_state_entries(room_id.as_str(), &wanted_state).await?,
        Some(full) => wanted_state
            .into_iter()
            .filter_map(|key| full.get(&key).map(|id| (key, id.clone())))
            .collect(),
    };
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
    // The rules against the state before it, then against the state its auth events make.
    let auth_events_state: StateMap = auth_ids
        .iter()
        .filter_map(|id| context.loaded.get(id))
        .filter_map(|row| Some(((row.event_type.clone(), row.state_key.clone()?), row.event_id.clone())))
        .chain(
            context
                .state_id("m.room.create", "")
                .map(|id| (("m.room.create".to_owned(), String::new()), id.clone())),
        )
        .collect();
    let verdict = authorise::authorise(rules, &pdu, &context).and_then(|()| {
        let before = std::mem::replace(&mut context.auth_state, auth_events_state);
        let result = authorise::authorise(rules, &pdu, &context);
        context.auth_state = before;
        result
    });
    let outcome = match verdict {
        Ok(()) => None,
        Err(EventError::Forbidden(reason)) => {
            context.kind = EventKind::Rejected;
            context.rejection = Some(reason.clone());
            Some(reason)
        }
        Err(other) => return Err(other),
    };
    // Not built on current state (a fork): it must also pass against current state, or it is
    // soft-failed (kept in the DAG, never shown, never current state); if it passes, current
    // state becomes the resolution of the state after it and the current one.
    if outcome.is_none()
        && let Some(current_group) = current_group
        && let Some(full_state) = full_state
    {
        let current = storage.state_group(current_group).await?;
        if !passes_against(state, rules, &pdu, &mut context, &current).await? {
            tracing::info!(%room_id, %event_id, "soft-failed a remote event: it does not pass against current state");
            context.kind = EventKind::SoftFailed;
        } else {
            let mut after = full_state;
            if let Some(key) = &pdu.state_key {
                after.insert((pdu.kind.to_string(), key.clone()), event_id.to_string());
            }
            context.resolved_state =
                Some(resolve_states(state, rules, &[after, current], std::slice::from_ref(&pdu)).await?);
        }
    }
    if context.kind == EventKind::New && draft.redacts.is_some() && !may_redact(state, &pdu, &context).await? {
        // Kept, but the target stays as it was: the sender may not redact it.
        draft.redacts = None;
    }
    let soft_failed = context.kind == EventKind::SoftFailed;
    let stream_ordering = persist::persist(state, context, room_id, &pdu, object, &draft, None, room_lock).await?;
    Ok(match outcome {
        None if soft_failed => RemoteOutcome::SoftFailed,
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
        // Only a redaction redacts (`redacts` elsewhere means nothing).
        redacts: (pdu.kind.to_string() == "m.room.redaction")
            .then(|| pdu.redacts.clone())
            .flatten(),
        origin_server_ts: Some(pdu.origin_server_ts.0.into()),
    })
}

/// Whether the event passes the auth rules against `current` (the room's current state).
async fn passes_against(
    state: &Base,
    rules: &RoomVersionRules,
    pdu: &PduEvent,
    context: &mut EventContext,
    current: &StateMap,
) -> EventResult<bool> {
    let keys: Vec<(String, String)> = context.auth_state.keys().cloned().collect();
    let mut current_auth = StateMap::new();
    for key in keys {
        if let Some(id) = current.get(&key) {
            current_auth.insert(key, id.clone());
        }
    }
    let unloaded: Vec<String> = current_auth
        .values()
        .filter(|id| !context.loaded.contains_key(*id))
        .cloned()
        .collect();
    for row in state.storage.events(&unloaded).await? {
        context.loaded.insert(row.event_id.clone(), row);
    }
    let before = std::mem::replace(&mut context.auth_state, current_auth);
    let result = authorise::authorise(rules, pdu, context);
    context.auth_state = before;
    match result {
        Ok(()) => Ok(true),
        Err(EventError::Forbidden(_)) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Whether a remote redaction may redact its target: an event of the sender's own server, or
/// any event when the sender has the power to redact (the spec leaves this check to servers).
async fn may_redact(state: &Base, pdu: &PduEvent, context: &EventContext) -> EventResult<bool> {
    let Some(target) = &pdu.redacts else { return Ok(false) };
    let Some(row) = state.storage.event(target.as_str()).await? else {
        // Not here (yet): nothing to redact.
        return Ok(false);
    };
    if row.room_id.as_str() != pdu.room_id.as_deref().map(RoomId::as_str).unwrap_or_default() {
        return Ok(false);
    }
    let server_of = |user: &str| user.split_once(':').map(|(_, server)| server.to_owned());
    if server_of(&row.sender) == server_of(pdu.sender.as_str()) {
        return Ok(true);
    }
    let levels = context
        .state_id("m.room.power_levels", "")
        .and_then(|id| context.loaded.get(id))
        .and_then(|row| serde_json::from_str::<Value>(&row.json).ok())
        .map(|pdu| pdu["content"].clone())
        .unwrap_or(Value::Null);
    let creator_fallback = 0;
    let power = levels["users"][pdu.sender.as_str()]
        .as_i64()
        .or_else(|| levels["users_default"].as_i64())
        .unwrap_or(creator_fallback);
    let needed = levels["redact"].as_i64().unwrap_or(50);
    Ok(power >= needed)
}
