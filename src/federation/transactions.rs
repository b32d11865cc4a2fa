//! Inbound transactions (`PUT /send/{txnId}`): each PDU gets its own result, one bad PDU never
//! fails the others, PDUs of one room go in order while rooms go side by side, and a
//! transaction sent twice is answered from the first time.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::future::join_all;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, ServerName};
use serde_json::value::RawValue;

use super::{Federation, pdu::event_id_of};
use crate::{
    rooms::{
        error::EventResult,
        pipeline::{
            EventKind,
            remote::{RemoteOutcome, append_remote_event, append_remote_event_after_gap},
        },
    },
    storage::StateMap,
};
use ruma::{
    EventId, UInt,
    api::federation::event::{get_event, get_missing_events, get_room_state},
    room_version_rules::RoomVersionRules,
};

/// The spec's limits per transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;

/// Per-PDU results, as `/send` answers them.
pub type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

impl Federation {
    /// Processes the PDUs of a transaction from `origin`.
    pub async fn receive_pdus(&self, origin: &ServerName, pdus: &[Box<RawValue>]) -> PduResults {
        let mut by_room: HashMap<OwnedRoomId, Vec<CanonicalJsonObject>> = HashMap::new();
        let mut order: Vec<OwnedRoomId> = Vec::new();
        for pdu in pdus {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(pdu.get()) else {
                tracing::debug!(%origin, "dropped a PDU that is not a JSON object");
                continue;
            };
            let room_id = match object.get("room_id") {
                Some(CanonicalJsonValue::String(id)) => OwnedRoomId::try_from(id.as_str()).ok(),
                _ => None,
            };
            let Some(room_id) = room_id else {
                tracing::debug!(%origin, "dropped a PDU without a room ID");
                continue;
            };
            if !by_room.contains_key(&room_id) {
                order.push(room_id.clone());
            }
            by_room.entry(room_id).or_default().push(object);
        }
        let rooms = order.into_iter().map(|room_id| {
            let pdus = by_room.remove(&room_id).unwrap_or_default();
            async move { self.receive_room_pdus(origin, &room_id, pdus).await }
        });
        join_all(rooms).await.into_iter().flatten().collect()
    }

    async fn receive_room_pdus(
        &self,
        origin: &ServerName,
        room_id: &OwnedRoomId,
        pdus: Vec<CanonicalJsonObject>,
    ) -> Vec<(OwnedEventId, Result<(), String>)> {
        let Ok((_, rules)) = self.room_rules(room_id).await else {
            // Without the room's version the event ID cannot even be computed (Synapse drops
            // these too).
            tracing::debug!(%origin, %room_id, count = pdus.len(), "dropped PDUs for a room we are not in");
            return Vec::new();
        };
        // Only rooms a local user is in take events (a stored invite is not being in it).
        match self.base.storage.servers_in_room(room_id.as_str()).await {
            Ok(servers) if servers.iter().any(|s| s == self.server_name().as_str()) => {}
            _ => {
                tracing::debug!(%origin, %room_id, count = pdus.len(), "dropped PDUs for a room we are not in");
                return Vec::new();
            }
        }
        let mut results = Vec::with_capacity(pdus.len());
        if let Err(error) = self.check_acl(origin, room_id).await {
            tracing::info!(%origin, %room_id, "PDUs refused by the room's server ACL");
            for object in &pdus {
                if let Ok(event_id) = event_id_of(object, &rules) {
                    results.push((event_id, Err(error.to_string())));
                }
            }
            return results;
        }
        for object in pdus {
            let Ok(event_id) = event_id_of(&object, &rules) else {
                tracing::debug!(%origin, %room_id, "dropped a PDU without a usable event ID");
                continue;
            };
            let object = match self.check_pdu(object, &rules).await {
                Ok((_, object)) => object,
                Err(error) => {
                    tracing::info!(%origin, %room_id, %event_id, %error, "refused a PDU");
                    results.push((event_id, Err(error.to_string())));
                    continue;
                }
            };
            // A room joined with partial state: the event waits for the members (from a
            // server the join named; others' events are refused until then).
            if self.partial.is_partial(room_id)
                && !self
                    .base
                    .storage
                    .servers_in_room(room_id.as_str())
                    .await
                    .is_ok_and(|servers| servers.iter().any(|s| s == origin.as_str()))
            {
                results.push((event_id, Err("this server is not in the room".to_owned())));
                continue;
            }
            let waiting = super::partial::Parked {
                origin: origin.to_owned(),
                event_id: event_id.clone(),
                object,
            };
            let object = match self.partial.park(room_id, waiting) {
                Ok(()) => {
                    results.push((event_id, Ok(())));
                    continue;
                }
                Err(back) => back.object,
            };
            let result = match self
                .append_filling_gaps(origin, room_id, &event_id, object, &rules)
                .await
            {
                Ok(RemoteOutcome::Accepted(_)) => {
                    self.base.metrics.federation_pdus_received.inc();
                    Ok(())
                }
                // Soft-failed: accepted as far as the sender is concerned (as Synapse answers).
                Ok(RemoteOutcome::Duplicate | RemoteOutcome::SoftFailed) => Ok(()),
                Ok(RemoteOutcome::Rejected(reason)) => Err(reason),
                Ok(RemoteOutcome::MissingEvents(ids)) => {
                    Err(format!("unknown prev or auth events: {}", ids.join(", ")))
                }
                Err(error) => Err(error.to_string()),
            };
            if let Err(reason) = &result {
                tracing::info!(%origin, %room_id, %event_id, %reason, "PDU not accepted");
            }
            results.push((event_id, result));
        }
        results
    }
}

/// Events fetched to fill one gap before its PDU (as Synapse bounds it).
const GAP_LIMIT: u32 = 20;

/// Unknown prev events of one event whose state is fetched, at most.
const MAX_GAP_PREVS: usize = 5;

impl Federation {
    /// Appends a remote event; when events before it are unknown, asks `origin` for them
    /// (`get_missing_events`, back to our forward extremities, bounded), takes them in oldest
    /// first, and tries again.
    pub(super) async fn append_filling_gaps(
        &self,
        origin: &ServerName,
        room_id: &OwnedRoomId,
        event_id: &OwnedEventId,
        object: CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> EventResult<RemoteOutcome> {
        let outcome = append_remote_event(&self.base, room_id, event_id, object.clone(), rules).await?;
        let RemoteOutcome::MissingEvents(_) = &outcome else {
            return Ok(outcome);
        };
        self.fill_gap(origin, room_id, event_id, rules).await?;
        match append_remote_event(&self.base, room_id, event_id, object.clone(), rules).await? {
            RemoteOutcome::MissingEvents(missing) => {
                self.append_after_gap(origin, room_id, event_id, object, rules, &missing)
                    .await
            }
            outcome => Ok(outcome),
        }
    }

    /// An event whose prev events are still unknown after `get_missing_events` (a gap longer
    /// than it fetches): the state after each missing prev event comes from `origin` (`/state`
    /// at it, and the event itself), checked like a join's state, its events kept as
    /// outliers; the event goes in on that state and the gap stays (backfill can fill it).
    async fn append_after_gap(
        &self,
        origin: &ServerName,
        room_id: &OwnedRoomId,
        event_id: &OwnedEventId,
        object: CanonicalJsonObject,
        rules: &RoomVersionRules,
        missing: &[String],
    ) -> EventResult<RemoteOutcome> {
        let pdu = crate::rooms::pipeline::to_pdu(event_id, &object)?;
        let prevs: Vec<OwnedEventId> = pdu
            .prev_events
            .iter()
            .filter(|id| missing.iter().any(|m| m == id.as_str()))
            .cloned()
            .collect();
        if prevs.is_empty() || prevs.len() > MAX_GAP_PREVS {
            return Ok(RemoteOutcome::MissingEvents(missing.to_vec()));
        }
        let origin = origin.to_owned();
        let visibility = crate::rooms::access::history_visibility_now(&self.base, room_id).await?;
        let mut gap_states = HashMap::new();
        for prev in prevs {
            let request = get_room_state::v1::Request::new(prev.clone(), room_id.clone());
            let (state, prev_event) = match (
                self.client.send(&origin, request).await,
                self.client
                    .send(&origin, get_event::v1::Request::new(prev.clone()))
                    .await,
            ) {
                (Ok(state), Ok(event)) => (state, event.pdu),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::info!(%origin, %room_id, %prev, %error, "could not fetch the state at a gap");
                    return Ok(RemoteOutcome::MissingEvents(missing.to_vec()));
                }
            };
            let state_ids: Vec<OwnedEventId> = state
                .pdus
                .iter()
                .filter_map(|raw| serde_json::from_str::<CanonicalJsonObject>(raw.get()).ok())
                .filter_map(|object| event_id_of(&object, rules).ok())
                .collect();
            let mut all = state.pdus;
            all.extend(state.auth_chain);
            all.push(prev_event);
            let batch = self.check_batch(&origin, room_id, rules, &all).await?;
            if !batch.passed.contains(&prev) {
                tracing::info!(%origin, %room_id, %prev, "the event before a gap does not check out");
                return Ok(RemoteOutcome::MissingEvents(missing.to_vec()));
            }
            // The state after the prev event: the state at it, then the event itself.
            let mut after = StateMap::new();
            for id in state_ids.iter().chain([&prev]) {
                if let Some(entry) = batch.checked.get(id).filter(|_| batch.passed.contains(id))
                    && let Some(key) = &entry.pdu.state_key
                {
                    after.insert((entry.pdu.kind.to_string(), key.clone()), id.to_string());
                }
            }
            let ids: HashSet<OwnedEventId> = batch.checked.keys().cloned().collect();
            let outliers = batch.stored(room_id, &ids, EventKind::Outlier, &visibility);
            self.base.storage.persist_backfill(&outliers, &[]).await?;
            let group = self
                .base
                .storage
                .create_state_snapshot(room_id.as_str(), &after)
                .await?;
            gap_states.insert(prev.to_string(), group);
        }
        tracing::info!(%origin, %room_id, %event_id, "took in an event after a gap, on the state its server gave");
        append_remote_event_after_gap(&self.base, room_id, event_id, object, rules, &gap_states).await
    }

    /// Fetches and appends the events between our head and `event_id`; returns how many
    /// entered the room.
    async fn fill_gap(
        &self,
        origin: &ServerName,
        room_id: &OwnedRoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
    ) -> EventResult<usize> {
        let earliest = self
            .base
            .storage
            .forward_extremities(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|(id, _, _)| OwnedEventId::try_from(id).ok())
            .collect();
        let mut request = get_missing_events::v1::Request::new(room_id.clone(), earliest, vec![event_id.to_owned()]);
        request.limit = UInt::from(GAP_LIMIT);
        let events = match self.client.send(origin, request).await {
            Ok(response) => response.events,
            Err(error) => {
                tracing::info!(%origin, %room_id, %error, "could not fetch missing events");
                return Ok(0);
            }
        };
        let mut objects: Vec<CanonicalJsonObject> = events
            .iter()
            .filter_map(|raw| serde_json::from_str(raw.get()).ok())
            .collect();
        // Oldest first, whatever order they came in.
        objects.sort_by_key(|object| match object.get("depth") {
            Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
            _ => 0,
        });
        let mut added = 0;
        for (index, object) in objects.into_iter().take(GAP_LIMIT as usize).enumerate() {
            let Ok((id, object)) = self.check_pdu(object, rules).await else {
                continue;
            };
            let mut outcome = append_remote_event(&self.base, room_id, &id, object.clone(), rules).await?;
            // The oldest of them still has unknown prev events: the gap is longer than what was
            // fetched, and it goes in on the state its server gives.
            if index == 0
                && let RemoteOutcome::MissingEvents(missing) = &outcome
            {
                outcome = self
                    .append_after_gap(origin, room_id, &id, object, rules, missing)
                    .await?;
            }
            if matches!(outcome, RemoteOutcome::Accepted(_)) {
                self.base.metrics.federation_pdus_received.inc();
                added += 1;
            }
        }
        tracing::info!(%origin, %room_id, added, "filled a gap before a PDU");
        Ok(added)
    }
}
