//! Fetching a room's older history from the servers in it (`/backfill`), for a reader of a
//! room we joined late who pages back past what this server has. The events come checked
//! (signatures, hashes, auth against their own auth events, fetched when unknown) and join
//! the room's history at negative positions: `/messages` pages through them after the
//! timeline; `/sync` never shows them. They are old, so they change neither the room's head
//! nor its current state.

use std::collections::{HashMap, HashSet};

use hearth_federation::pdu::PduEvent;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, UInt,
    api::federation::{backfill::get_backfill, event::get_event},
    room_version_rules::RoomVersionRules,
};

use super::{
    Federation,
    join::{Checked, authorise_chain, is_of_room, stored_event},
};
use crate::rooms::{
    error::{EventError, EventResult},
    pipeline::EventKind,
};

/// Auth events one backfill fetches one by one at most (the rest of the batch waits).
const MAX_AUTH_FETCHES: usize = 50;

/// Servers asked in turn before a backfill gives up.
const MAX_SERVERS: usize = 3;

impl Federation {
    /// Fetches up to `limit` events of the room's history older than the oldest held here.
    /// Returns how many entered the history (0: the start of the room is here already, or no
    /// server had more).
    pub async fn fetch_history(&self, room_id: &RoomId, limit: usize) -> EventResult<usize> {
        let _one_at_a_time = self.backfilling.lock(room_id).await;
        let storage = &self.base.storage;
        // Where the history here ends: the prev events of its oldest events we do not hold.
        let oldest = storage.oldest_history_events(room_id.as_str(), 10).await?;
        let mut wanted: Vec<String> = Vec::new();
        for row in &oldest {
            let prevs = serde_json::from_str::<serde_json::Value>(&row.json)
                .ok()
                .and_then(|pdu| pdu.get("prev_events").cloned())
                .and_then(|prevs| serde_json::from_value::<Vec<serde_json::Value>>(prevs).ok())
                .unwrap_or_default();
            // Room versions 1 and 2 list [id, hashes] pairs.
            for prev in prevs {
                let id = match &prev {
                    serde_json::Value::String(id) => Some(id.clone()),
                    serde_json::Value::Array(pair) => pair.first().and_then(|id| id.as_str()).map(str::to_owned),
                    _ => None,
                };
                if let Some(id) = id.filter(|id| !wanted.contains(id)) {
                    wanted.push(id);
                }
            }
        }
        let held = storage.history_event_ids(&wanted).await?;
        wanted.retain(|id| !held.contains(id));
        let from: Vec<OwnedEventId> = wanted
            .iter()
            .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
            .take(20)
            .collect();
        if from.is_empty() {
            return Ok(0);
        }
        let (_, rules) = self.room_rules(room_id).await?;
        let servers: Vec<OwnedServerName> = self
            .servers_in_room(room_id)
            .await?
            .into_iter()
            .filter(|server| server != self.server_name().as_str())
            .filter_map(|server| OwnedServerName::try_from(server).ok())
            .filter(|server| !self.is_blocked(server))
            .take(MAX_SERVERS)
            .collect();
        for server in servers {
            let limit = UInt::try_from(limit.clamp(1, super::history::MAX_EVENTS)).unwrap_or(UInt::MIN);
            let request = get_backfill::v1::Request::new(room_id.to_owned(), from.clone(), limit);
            let pdus = match self.client.send(&server, request).await {
                Ok(response) => response.pdus,
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "backfill failed");
                    continue;
                }
            };
            let added = self.take_history(&server, room_id, &rules, &from, &pdus).await?;
            tracing::info!(%room_id, %server, received = pdus.len(), added, "backfilled history");
            if added > 0 {
                return Ok(added);
            }
        }
        Ok(0)
    }

    /// Checks a backfill answer and stores what passes; returns how many events entered the
    /// history. Only the events asked for (`from`) and their ancestors through the answer's
    /// own prev events are taken: nothing else a server slips in.
    async fn take_history(
        &self,
        server: &OwnedServerName,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        from: &[OwnedEventId],
        pdus: &[Box<serde_json::value::RawValue>],
    ) -> EventResult<usize> {
        let pdus = &pdus[..pdus.len().min(super::history::MAX_EVENTS)];
        let batch = self.check_batch(server, room_id, rules, pdus).await?;
        if batch.new.is_empty() {
            return Ok(0);
        }
        // The state at each old event is not known here: who may read it follows the room's
        // visibility now.
        let visibility = crate::rooms::access::history_visibility_now(&self.base, room_id).await?;
        let outliers = batch.stored(room_id, &batch.fetched, EventKind::Outlier, &visibility);
        let mut reachable: HashSet<&OwnedEventId> = HashSet::new();
        let mut queue: Vec<&OwnedEventId> = from.iter().collect();
        while let Some(id) = queue.pop() {
            if let Some(entry) = batch.checked.get(id)
                && reachable.insert(id)
            {
                queue.extend(entry.pdu.prev_events.iter());
            }
        }
        let mut history: Vec<&Checked> = batch
            .new
            .iter()
            .filter(|id| batch.passed.contains(*id) && reachable.contains(id))
            .filter_map(|id| batch.checked.get(id))
            .collect();
        // Newest first: each takes the next lower position.
        history.sort_by_key(|c| std::cmp::Reverse((c.pdu.depth, c.pdu.origin_server_ts)));
        let history: Vec<_> = history
            .into_iter()
            .map(|c| stored_event(room_id, &c.pdu, &c.object, EventKind::Backfilled, &visibility))
            .collect();
        Ok(self.base.storage.persist_backfill(&outliers, &history).await?)
    }

    /// Checks a batch of a room's events from `server` together: each one's format,
    /// signatures and hash, then the auth rules against its auth events (held here, in the
    /// batch, or fetched from `server`, a bounded number).
    pub(super) async fn check_batch(
        &self,
        server: &OwnedServerName,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        pdus: &[Box<serde_json::value::RawValue>],
    ) -> EventResult<CheckedBatch> {
        let mut checked: HashMap<OwnedEventId, Checked> = HashMap::new();
        for raw in pdus {
            if let Some(entry) = self.checked_event(raw.get(), room_id, rules).await? {
                checked.insert(entry.pdu.event_id.clone(), entry);
            }
        }
        let ids: Vec<String> = checked.keys().map(ToString::to_string).collect();
        let held: HashSet<String> = self
            .base
            .storage
            .events(&ids)
            .await?
            .into_iter()
            .map(|row| row.event_id)
            .collect();
        let in_history = self.base.storage.history_event_ids(&ids).await?;
        let new: HashSet<OwnedEventId> = checked
            .keys()
            .filter(|id| !in_history.contains(id.as_str()))
            .cloned()
            .collect();
        let mut trusted: HashSet<OwnedEventId> = checked
            .keys()
            .filter(|id| held.contains(id.as_str()))
            .cloned()
            .collect();
        let mut fetched: HashSet<OwnedEventId> = HashSet::new();
        let mut queue: Vec<OwnedEventId> = checked
            .values()
            .flat_map(|c| c.pdu.auth_events.iter().cloned())
            .collect();
        let mut fetches = 0;
        while let Some(id) = queue.pop() {
            if checked.contains_key(&id) {
                continue;
            }
            if let Some(row) = self.base.storage.event(id.as_str()).await? {
                // Another room's event never stands behind this room's.
                if row.room_id != room_id.as_str() {
                    continue;
                }
                let pdu = PduEvent::from_json(id.clone(), &row.json, false).map_err(|_| EventError::internal())?;
                let object = serde_json::from_str(&row.json).map_err(|_| EventError::internal())?;
                trusted.insert(id.clone());
                checked.insert(id, Checked { object, pdu });
                continue;
            }
            if fetches >= MAX_AUTH_FETCHES {
                continue;
            }
            fetches += 1;
            let Ok(answer) = self.client.send(server, get_event::v1::Request::new(id.clone())).await else {
                continue;
            };
            if let Some(entry) = self.checked_event(answer.pdu.get(), room_id, rules).await?
                && entry.pdu.event_id == id
            {
                queue.extend(entry.pdu.auth_events.iter().cloned());
                fetched.insert(id.clone());
                checked.insert(id, entry);
            }
        }
        // The room's own create event always stands behind the batch (in version 12 no
        // event lists it).
        if let Some(row) = self
            .base
            .storage
            .current_state_event(room_id.as_str(), "m.room.create", "")
            .await?
            && let Ok(id) = OwnedEventId::try_from(row.event_id.as_str())
        {
            let pdu = PduEvent::from_json(id.clone(), &row.json, false).map_err(|_| EventError::internal())?;
            let object = serde_json::from_str(&row.json).map_err(|_| EventError::internal())?;
            trusted.insert(id.clone());
            checked.insert(id, Checked { object, pdu });
        }
        let passed = authorise_chain(&checked, trusted.clone(), room_id, rules);
        for id in checked.keys().filter(|id| !passed.contains(*id)) {
            tracing::info!(%room_id, event_id = %id, "an event from another server fails the auth rules: dropped");
        }
        Ok(CheckedBatch {
            checked,
            trusted,
            new,
            fetched,
            passed,
        })
    }

    /// A PDU of the room, checked (format, signatures, content hash); `None` if it is not one.
    async fn checked_event(
        &self,
        json: &str,
        room_id: &RoomId,
        rules: &RoomVersionRules,
    ) -> EventResult<Option<Checked>> {
        let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(json) else {
            return Ok(None);
        };
        let (id, object) = match self.check_pdu(object, rules).await {
            Ok(checked) => checked,
            Err(super::pdu::PduCheckError::Internal) => return Err(EventError::internal()),
            Err(error) => {
                tracing::info!(%room_id, %error, "a backfilled event does not check out");
                return Ok(None);
            }
        };
        let Ok(pdu) = PduEvent::from_json(id, &CanonicalJsonValue::Object(object.clone()).to_string(), false) else {
            return Ok(None);
        };
        Ok(is_of_room(&pdu, room_id).then_some(Checked { object, pdu }))
    }
}

/// A batch of a room's events from another server, checked together.
pub(super) struct CheckedBatch {
    /// Every event looked at: the batch, and the auth events it names.
    pub checked: HashMap<OwnedEventId, Checked>,
    /// Events held here already (as anything).
    pub trusted: HashSet<OwnedEventId>,
    /// Events of the batch not yet in the room's history here.
    pub new: HashSet<OwnedEventId>,
    /// Auth events fetched one by one for the batch.
    pub fetched: HashSet<OwnedEventId>,
    /// Events that pass the auth rules (trusted ones included).
    pub passed: HashSet<OwnedEventId>,
}

impl CheckedBatch {
    /// The events of `ids` that passed and are not held here, as storage takes them.
    pub fn stored(
        &self,
        room_id: &RoomId,
        ids: &HashSet<OwnedEventId>,
        kind: EventKind,
        visibility: &str,
    ) -> Vec<crate::storage::NewEvent> {
        ids.iter()
            .filter(|id| self.passed.contains(*id) && !self.trusted.contains(*id))
            .filter_map(|id| self.checked.get(id))
            .map(|c| stored_event(room_id, &c.pdu, &c.object, kind, visibility))
            .collect()
    }
}
