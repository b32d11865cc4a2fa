//! Inbound transactions (`PUT /send/{txnId}`): each PDU gets its own result, one bad PDU never
//! fails the others, PDUs of one room go in order while rooms go side by side, and a
//! transaction sent twice is answered from the first time.

use std::collections::{BTreeMap, HashMap};

use futures_util::future::join_all;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, ServerName};
use serde_json::value::RawValue;

use super::{Federation, pdu::event_id_of};
use crate::rooms::pipeline::remote::{RemoteOutcome, append_remote_event};

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
        let mut results = Vec::with_capacity(pdus.len());
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
            let result = match append_remote_event(&self.base, room_id, &event_id, object, &rules).await {
                Ok(RemoteOutcome::Accepted(_)) => {
                    self.base.metrics.federation_pdus_received.inc();
                    Ok(())
                }
                Ok(RemoteOutcome::Duplicate) => Ok(()),
                Ok(RemoteOutcome::Rejected(reason)) => Err(reason),
                Ok(RemoteOutcome::MissingEvents(ids)) => {
                    Err(format!("unknown prev or auth events: {}", ids.join(", ")))
                }
                Ok(RemoteOutcome::NeedsResolution) => Err("the room's state forked here; not resolved yet".to_owned()),
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
