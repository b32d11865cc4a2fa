//! The outbound queue: every server with a member in one of our rooms is a destination with a
//! saved position in our event stream. Its task (see [`crate::outbox`]) sends what it is owed
//! in transactions of up to 50 PDUs, one in flight at a time, moving the position only past
//! what the destination accepted, so nothing is lost on a restart or an outage. A destination
//! that does not answer is tried again with exponential backoff (capped at
//! `federation.max_retry_interval_secs`), and at once when it calls us.
//!
//! A destination that was down catches up from its position, in order.

use std::{sync::Arc, time::Duration};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId,
    api::federation::transactions::send_transaction_message,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::{
    base::{Base, Change, Subscriber},
    outbox::{Courier, Outbox, Round},
};
use hearth_federation::client::FederationClient;

/// PDUs per transaction (the spec's limit).
const BATCH: i64 = 50;

/// Sends each destination the events it is owed.
pub struct DestinationCourier {
    base: Base,
    client: Arc<FederationClient>,
}

impl Courier for DestinationCourier {
    type Target = OwnedServerName;

    async fn deliver(&self, destination: &OwnedServerName) -> Round {
        let storage = &self.base.storage;
        let position = match storage.destination_position(destination.as_str()).await {
            Ok(Some(position)) => position,
            Ok(None) => return Round::Gone,
            Err(_) => return Round::Retry,
        };
        let our_server = self.base.config.server_name.as_str();
        let pending = match storage
            .events_for_destination(destination.as_str(), our_server, position, BATCH)
            .await
        {
            Ok(pending) => pending,
            Err(_) => return Round::Retry,
        };
        let (Some((first, _)), Some((last, _))) = (pending.first(), pending.last()) else {
            return Round::Idle;
        };
        let (first, last) = (*first, *last);
        let pdus: Vec<Box<RawValue>> = pending
            .iter()
            .filter_map(|(_, json)| RawValue::from_string(json.clone()).ok())
            .collect();
        // The same batch sent again keeps its ID, so the destination answers it from memory;
        // a different batch over the same range (membership changed between tries) gets
        // another.
        let txn_id = OwnedTransactionId::from(format!("{first}-{last}-{}", batch_digest(&pending)));
        let request = send_transaction_message::v1::Request::new(
            txn_id,
            self.base.config.server_name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        let mut request = request;
        request.pdus = pdus;
        match self.client.send(destination, request).await {
            Ok(response) => {
                for (event_id, result) in &response.pdus {
                    if let Err(reason) = result {
                        tracing::info!(%destination, %event_id, %reason, "the destination refused a PDU");
                    }
                }
                self.base.metrics.federation_pdus_sent.inc_by(pending.len() as u64);
                if storage
                    .set_destination_position(destination.as_str(), last)
                    .await
                    .is_err()
                {
                    return Round::Retry;
                }
                Round::More
            }
            Err(error) => {
                tracing::info!(%destination, %error, "could not send a transaction; will retry");
                let _ = storage.destination_failed(destination.as_str()).await;
                self.client.forget_destination(destination);
                Round::Failed { progressed: false }
            }
        }
    }

    async fn exists(&self, destination: &OwnedServerName) -> bool {
        matches!(
            self.base.storage.destination_position(destination.as_str()).await,
            Ok(Some(_))
        )
    }
}

/// Follows committed events and wakes the destinations of their rooms.
pub struct FederationSender {
    outbox: Arc<Outbox<DestinationCourier>>,
    events: mpsc::UnboundedSender<RoutedEvent>,
}

/// A committed event, as the router needs it.
struct RoutedEvent {
    room_id: String,
    position: i64,
    members_changed: bool,
}

/// The servers with a joined member in each room an event was routed for, read again after
/// any membership change in the room (most events are messages: no query for them).
#[derive(Default)]
struct RoomServers(std::collections::HashMap<String, Vec<String>>);

/// Rooms whose servers the router remembers at most (it forgets them all past that).
const REMEMBERED_ROOMS: usize = 10_000;

impl FederationSender {
    /// The sender, with a task that routes new events to destinations; restarts the tasks of
    /// known destinations (they send what they were owed when the server stopped).
    pub fn start(base: &Base, client: Arc<FederationClient>) -> Arc<Self> {
        let max_backoff = Duration::from_secs(base.config.federation.max_retry_interval_secs);
        let outbox = Outbox::with_max_backoff(
            DestinationCourier {
                base: base.clone(),
                client,
            },
            max_backoff,
        );
        let (events, mut incoming) = mpsc::unbounded_channel::<RoutedEvent>();
        let routing_base = base.clone();
        let routing_outbox = outbox.clone();
        tokio::spawn(async move {
            let mut known = std::collections::HashSet::new();
            if let Ok(destinations) = routing_base.storage.destinations().await {
                for destination in destinations {
                    if let Ok(destination) = OwnedServerName::try_from(destination) {
                        known.insert(destination.clone());
                        routing_outbox.wake_or_start(destination);
                    }
                }
            }
            let mut rooms = RoomServers::default();
            while let Some(event) = incoming.recv().await {
                route(&routing_base, &routing_outbox, &mut known, &mut rooms, event).await;
            }
        });
        Arc::new(Self { outbox, events })
    }

    /// A server called us: if we were backing off from it, try it now.
    pub fn heard_from(&self, origin: &OwnedServerName) {
        self.outbox.renew_if_running(origin);
    }

    pub fn stop(&self) {
        self.outbox.stop();
    }
}

/// Wakes (or first sets up) every other server in the room of a new event. `known`: the
/// destinations already stored (set up once, then only woken).
async fn route(
    base: &Base,
    outbox: &Arc<Outbox<DestinationCourier>>,
    known: &mut std::collections::HashSet<OwnedServerName>,
    rooms: &mut RoomServers,
    event: RoutedEvent,
) {
    let cached = if event.members_changed {
        None
    } else {
        rooms.0.get(&event.room_id).cloned()
    };
    let servers = match cached {
        Some(servers) => servers,
        None => {
            let Ok(servers) = base.storage.servers_in_room(&event.room_id).await else {
                rooms.0.remove(&event.room_id);
                return;
            };
            if rooms.0.len() >= REMEMBERED_ROOMS {
                rooms.0.clear();
            }
            rooms.0.insert(event.room_id.clone(), servers.clone());
            servers
        }
    };
    // A member event's subject's server is owed it even after leaving (kicks, bans).
    let subject_server = if event.members_changed {
        match base.storage.event_at(event.position).await {
            Ok(Some(row)) if row.event_type == "m.room.member" => row
                .state_key
                .and_then(|key| key.split_once(':').map(|(_, server)| server.to_owned())),
            _ => None,
        }
    } else {
        None
    };
    for server in servers.into_iter().chain(subject_server) {
        if server == base.config.server_name.as_str() {
            continue;
        }
        let Ok(destination) = OwnedServerName::try_from(server) else {
            continue;
        };
        if !known.contains(&destination) {
            if base
                .storage
                .add_destination(destination.as_str(), event.position - 1)
                .await
                .is_err()
            {
                continue;
            }
            known.insert(destination.clone());
        }
        outbox.wake_or_start(destination);
    }
}

impl Subscriber for FederationSender {
    fn published(&self, change: Change<'_>) {
        if let Change::Event {
            room_id,
            stream_ordering,
            members_changed,
        } = change
        {
            let _ = self.events.send(RoutedEvent {
                room_id: room_id.to_owned(),
                position: stream_ordering,
                members_changed,
            });
        }
    }
}

/// A short digest of a batch's events, for its transaction ID.
fn batch_digest(pending: &[(i64, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (position, json) in pending {
        hasher.update(position.to_le_bytes());
        hasher.update(json.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}
