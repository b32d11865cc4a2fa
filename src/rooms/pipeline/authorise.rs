//! Authorise: the room version's auth rules (ruma's), state-independent checks against
//! the event's auth events and state-dependent ones against the state before it. A refusal is
//! the reason; the caller decides what it means (403 for a local user, a rejected PDU for a
//! remote server).

use std::collections::HashMap;

use hearth_federation::pdu::PduEvent;
use ruma::{
    OwnedEventId,
    room_version_rules::RoomVersionRules,
    state_res::{check_state_dependent_auth_rules, check_state_independent_auth_rules},
};

use super::context::EventContext;
use crate::rooms::error::{EventError, EventResult};

/// Checks `pdu` against the auth rules with the context's state before it.
pub fn authorise(rules: &RoomVersionRules, pdu: &PduEvent, context: &EventContext) -> EventResult<()> {
    let mut by_id: HashMap<OwnedEventId, PduEvent> = HashMap::with_capacity(context.loaded.len());
    for row in context.loaded.values() {
        let id =
            OwnedEventId::try_from(row.event_id.as_str()).map_err(|_| EventError::Internal("a stored event ID"))?;
        let event =
            PduEvent::from_json(id.clone(), &row.json, false).map_err(|_| EventError::Internal("a stored PDU"))?;
        by_id.insert(id, event);
    }
    let state_events: HashMap<(String, String), PduEvent> = context
        .auth_state
        .iter()
        .filter_map(|(key, id)| {
            let id = OwnedEventId::try_from(id.as_str()).ok()?;
            Some((key.clone(), by_id.get(&id)?.clone()))
        })
        .collect();
    check_state_independent_auth_rules(&rules.authorization, pdu, |id| by_id.get(id).cloned())
        .and_then(|()| {
            check_state_dependent_auth_rules(&rules.authorization, pdu, |kind, key| {
                state_events.get(&(kind.to_string(), key.to_owned())).cloned()
            })
        })
        .map_err(|reason| EventError::Forbidden(format!("Not allowed: {reason}")))
}
