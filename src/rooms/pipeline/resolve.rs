//! State resolution: when the room's DAG forks, the states on its branches are merged with the
//! room version's algorithm (v2, or v2.1 from room version 12), as ruma implements it. This
//! file loads what the algorithm reads (the events of every state, their auth chains and, for
//! v2.1, the conflicted state subgraph) and converts between our state maps and ruma's.

use std::collections::{HashMap, HashSet};

use hearth_federation::pdu::PduEvent;
use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, utils::event_id_set::EventIdSet},
};

use crate::{
    base::Base,
    rooms::error::{EventError, EventResult},
    storage::StateMap,
};

/// Resolves the states `maps` (each (type, state key) → event ID) into one. `pending`: events
/// the maps name that are not stored yet (the remote event being taken in).
pub async fn resolve_states(
    state: &Base,
    rules: &RoomVersionRules,
    maps: &[StateMap],
    pending: &[PduEvent],
) -> EventResult<StateMap> {
    let Some(first) = maps.first() else {
        return Ok(StateMap::new());
    };
    if maps.iter().all(|map| map == first) {
        return Ok(first.clone());
    }
    let v2 = rules
        .state_res
        .v2_rules()
        .ok_or_else(|| EventError::UnsupportedVersion("state resolution v1 (room versions 1)".to_owned()))?;
    let events = load_with_auth_chains(state, maps, pending).await?;
    let mut chains: HashMap<OwnedEventId, HashSet<OwnedEventId>> = HashMap::new();
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = maps
        .iter()
        .map(|map| {
            let mut set = HashSet::new();
            for id in map.values() {
                if let Ok(id) = OwnedEventId::try_from(id.as_str()) {
                    set.extend(auth_chain_of(&id, &events, &mut chains));
                }
            }
            set.into_iter().collect()
        })
        .collect();
    let ruma_maps: Vec<state_res::StateMap<OwnedEventId>> = maps
        .iter()
        .map(|map| {
            map.iter()
                .filter_map(|((kind, key), id)| {
                    Some((
                        (StateEventType::from(kind.as_str()), key.clone()),
                        OwnedEventId::try_from(id.as_str()).ok()?,
                    ))
                })
                .collect()
        })
        .collect();
    let resolved = state_res::resolve(
        &rules.authorization,
        v2,
        &ruma_maps,
        auth_chains,
        |id: &EventId| events.get(id).cloned(),
        |conflicted| Some(conflicted_subgraph(conflicted, &events)),
    )
    .map_err(|error| {
        tracing::warn!(%error, "state resolution failed");
        EventError::Internal("state resolution")
    })?;
    Ok(resolved
        .into_iter()
        .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
        .collect())
}

/// Every event of the maps and of their auth chains, as far as we hold them.
async fn load_with_auth_chains(
    state: &Base,
    maps: &[StateMap],
    pending: &[PduEvent],
) -> EventResult<HashMap<OwnedEventId, PduEvent>> {
    let mut events: HashMap<OwnedEventId, PduEvent> = pending
        .iter()
        .map(|event| (event.event_id.clone(), event.clone()))
        .collect();
    let mut wanted: Vec<String> = maps
        .iter()
        .flat_map(|map| map.values().cloned())
        .chain(
            pending
                .iter()
                .flat_map(|event| event.auth_events.iter().map(ToString::to_string)),
        )
        .filter(|id| OwnedEventId::try_from(id.as_str()).is_ok_and(|id| !events.contains_key(&id)))
        .collect();
    wanted.sort();
    wanted.dedup();
    while !wanted.is_empty() {
        let rows = state.storage.events(&wanted).await?;
        let mut next = Vec::new();
        for row in rows {
            let Ok(id) = OwnedEventId::try_from(row.event_id.as_str()) else {
                continue;
            };
            let Ok(pdu) = PduEvent::from_json(id.clone(), &row.json, false) else {
                continue;
            };
            for auth in &pdu.auth_events {
                if !events.contains_key(auth) {
                    next.push(auth.to_string());
                }
            }
            events.insert(id, pdu);
        }
        next.sort();
        next.dedup();
        next.retain(|id| OwnedEventId::try_from(id.as_str()).is_ok_and(|id| !events.contains_key(&id)));
        wanted = next;
    }
    Ok(events)
}

/// The full auth chain of an event (its auth events, theirs, ...), memoised.
fn auth_chain_of(
    id: &OwnedEventId,
    events: &HashMap<OwnedEventId, PduEvent>,
    chains: &mut HashMap<OwnedEventId, HashSet<OwnedEventId>>,
) -> HashSet<OwnedEventId> {
    if let Some(chain) = chains.get(id) {
        return chain.clone();
    }
    // Iterative, so a long chain cannot overflow the stack: collect the ancestors.
    let mut chain = HashSet::new();
    let mut stack: Vec<OwnedEventId> = events.get(id).map(|e| e.auth_events.clone()).unwrap_or_default();
    while let Some(next) = stack.pop() {
        if chain.insert(next.clone())
            && let Some(event) = events.get(&next)
        {
            stack.extend(event.auth_events.iter().cloned());
        }
    }
    chains.insert(id.clone(), chain.clone());
    chain
}

/// The conflicted state subgraph (room version 12): the events on auth paths from one
/// conflicted event to another, the conflicted events included: those that are both in the
/// auth chain of a conflicted event and descend (through auth events) from one.
fn conflicted_subgraph(
    conflicted: &state_res::StateMap<Vec<OwnedEventId>>,
    events: &HashMap<OwnedEventId, PduEvent>,
) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
    // Ancestors: the auth chains of the conflicted events.
    let mut ancestors: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<OwnedEventId> = conflicted
        .iter()
        .filter_map(|id| events.get(id))
        .flat_map(|event| event.auth_events.iter().cloned())
        .collect();
    while let Some(id) = stack.pop() {
        if ancestors.insert(id.clone())
            && let Some(event) = events.get(&id)
        {
            stack.extend(event.auth_events.iter().cloned());
        }
    }
    // Descendants: walk the auth edges the other way from the conflicted events, within the
    // ancestors (nothing else can be on a path between two of them).
    let mut children: HashMap<&OwnedEventId, Vec<&OwnedEventId>> = HashMap::new();
    for id in ancestors.iter().chain(conflicted.iter()) {
        if let Some(event) = events.get(id) {
            for auth in &event.auth_events {
                children.entry(auth).or_default().push(id);
            }
        }
    }
    let mut subgraph: HashSet<OwnedEventId> = conflicted.clone();
    let mut stack: Vec<&OwnedEventId> = conflicted.iter().collect();
    while let Some(id) = stack.pop() {
        for child in children.get(id).into_iter().flatten() {
            if ancestors.contains(*child) && subgraph.insert((*child).clone()) {
                stack.push(child);
            }
        }
    }
    subgraph.into_iter().collect()
}
