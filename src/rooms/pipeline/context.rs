//! The context of an event: what kind it is, where it sits in the DAG, the state before it
//! (the part the auth rules and the pipeline look at) and, for a rejected event, why. Local and
//! remote events share it. A local event's context is the room's head: its prev events are the
//! forward extremities and the state before it is current state. A remote event's context will
//! come from its own `prev_events`, by state resolution over the states after them.

use std::collections::HashMap;

use ruma::{
    RoomId, UserId, events::TimelineEventType, room_version_rules::RoomVersionRules, state_res::auth_types_for_event,
};
use serde_json::value::RawValue;

use super::build::EventDraft;
use crate::{
    base::Base,
    rooms::error::{EventError, EventResult},
    storage::{EventRow, EventWrites, StateMap},
};

/// How an event reaches the room, which decides what persisting it changes (Dendrite's input
/// kinds, Synapse's outlier and soft-failure flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new event at the room's head: a local one, or a remote one that passed every check.
    New,
    /// A historical event fetched by backfill: part of the DAG and of the room's history
    /// (which `/messages` pages through), not of its head, its current state or `/sync`. Its
    /// state is not known (no state group).
    Backfilled,
    /// An event known only by itself (an auth event fetched to check another): no state, no
    /// edges, not in any timeline.
    Outlier,
    /// Passes the auth rules against its own state but not against current state: kept in
    /// the DAG, never at the head, never current state, never served.
    SoftFailed,
    /// Fails the auth rules: stored so it is not fetched again, nothing else.
    Rejected,
}

impl EventKind {
    /// What persisting an event of this kind writes besides its row.
    pub fn writes(self) -> EventWrites {
        let none = EventWrites {
            edges: false,
            state_group: false,
            extremity: false,
            current_state: false,
            timeline: false,
            backfilled: false,
        };
        match self {
            Self::New => EventWrites::ALL,
            Self::Backfilled => EventWrites {
                edges: true,
                backfilled: true,
                ..none
            },
            Self::SoftFailed => EventWrites {
                edges: true,
                state_group: true,
                ..none
            },
            Self::Outlier => none,
            // Kept where it arrived (hidden by its rejection) so its position says when.
            Self::Rejected => EventWrites { timeline: true, ..none },
        }
    }
}

/// An event's place in its room, as the pipeline's later steps need it.
#[derive(Debug)]
pub struct EventContext {
    pub kind: EventKind,
    pub depth: i64,
    pub prev_events: Vec<String>,
    /// The state group of the state before the event (None only for a room's first event).
    pub state_before: Option<i64>,
    /// The entries of the state before the event that the auth rules (and the pipeline) read:
    /// (type, state key) → event ID.
    pub auth_state: StateMap,
    /// The events named above, and the prev events, loaded once.
    pub loaded: HashMap<String, EventRow>,
    /// Why the event was rejected (kind `Rejected`).
    pub rejection: Option<String>,
    /// The room's current state after the event, when the event does not build on current
    /// state and the forks had to be resolved (remote events only).
    pub resolved_state: Option<StateMap>,
}

impl EventContext {
    /// The event ID holding (type, state key) in the state before the event.
    pub fn state_id(&self, event_type: &str, state_key: &str) -> Option<&String> {
        self.auth_state.get(&(event_type.to_owned(), state_key.to_owned()))
    }

    /// The auth events the rules want for an event of this shape, by ID.
    pub fn auth_ids(&self, auth_types: &[(String, String)]) -> Vec<String> {
        auth_types
            .iter()
            .filter_map(|key| self.auth_state.get(key).cloned())
            .collect()
    }
}

/// The (type, state key) pairs the auth rules look at for a draft.
pub fn auth_types(draft: &EventDraft, sender: &UserId, rules: &RoomVersionRules) -> EventResult<Vec<(String, String)>> {
    let event_type = TimelineEventType::from(draft.event_type.as_str());
    let content =
        RawValue::from_string(draft.content.to_string()).map_err(|_| EventError::Internal("serialize content"))?;
    let types = auth_types_for_event(
        &event_type,
        sender,
        draft.state_key.as_deref(),
        &content,
        &rules.authorization,
    )
    .map_err(|reason| EventError::BadContent(format!("Invalid event content: {reason}")))?;
    Ok(types
        .iter()
        .map(|(kind, key)| (kind.to_string(), key.clone()))
        .collect())
}

/// The context of a local event: at the room's head. Only the state the rules look at is
/// loaded, not the whole room (500 members' worth).
pub async fn local_context(
    state: &Base,
    room_id: &RoomId,
    auth_types: &[(String, String)],
) -> EventResult<EventContext> {
    let storage = &state.storage;
    let extremities = storage.forward_extremities(room_id.as_str()).await?;
    let depth = extremities.iter().map(|(_, depth, _)| *depth).max().unwrap_or(0) + 1;
    // Current state: the state after the newest extremity or, once the room forked, the
    // resolution of all of them.
    let state_before = match storage.current_state_group(room_id.as_str()).await? {
        Some(group) => Some(group),
        None => extremities.last().map(|(_, _, group)| *group),
    };
    let prev_events: Vec<String> = extremities.iter().rev().take(20).map(|(id, _, _)| id.clone()).collect();
    let mut wanted_state = auth_types.to_vec();
    wanted_state.push(("m.room.create".to_owned(), String::new()));
    wanted_state.push(("m.room.history_visibility".to_owned(), String::new()));
    let auth_state = storage.current_state_entries(room_id.as_str(), &wanted_state).await?;
    let mut wanted: Vec<String> = auth_state.values().cloned().collect();
    wanted.extend(prev_events.iter().cloned());
    let loaded = storage
        .events(&wanted)
        .await?
        .into_iter()
        .map(|row| (row.event_id.clone(), row))
        .collect();
    Ok(EventContext {
        kind: EventKind::New,
        depth,
        prev_events,
        state_before,
        auth_state,
        loaded,
        rejection: None,
        resolved_state: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_events_move_the_head_or_current_state() {
        for kind in [
            EventKind::Backfilled,
            EventKind::Outlier,
            EventKind::SoftFailed,
            EventKind::Rejected,
        ] {
            let writes = kind.writes();
            assert!(!writes.extremity, "{kind:?} must not become an extremity");
            assert!(!writes.current_state, "{kind:?} must not change current state");
        }
        assert_eq!(EventKind::New.writes(), EventWrites::ALL);
    }

    #[test]
    fn rejected_and_outlier_events_are_outside_the_dag_and_its_state() {
        for kind in [EventKind::Outlier, EventKind::Rejected] {
            let writes = kind.writes();
            assert!(!writes.edges && !writes.state_group, "{kind:?}");
        }
        let soft_failed = EventKind::SoftFailed.writes();
        assert!(soft_failed.edges && soft_failed.state_group);
        // Backfilled history: in the DAG, its state unknown, and marked for /messages.
        let backfilled = EventKind::Backfilled.writes();
        assert!(backfilled.edges && !backfilled.state_group && backfilled.backfilled);
        assert!(!backfilled.timeline);
    }
}
