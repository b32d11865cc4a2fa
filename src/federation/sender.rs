//! The outbound queue: every server with a member in one of our rooms is a destination with a
//! saved position in our event stream. Its task (see [`crate::outbox`]) sends what it is owed
//! in transactions of up to 50 PDUs, one in flight at a time, moving the position only past
//! what the destination accepted, so nothing is lost on a restart or an outage. A destination
//! that does not answer is tried again with exponential backoff (capped at
//! `federation.max_retry_interval_secs`), and at once when it calls us.
//!
//! A destination that was down catches up from its position, in order.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{
    outbound_edus::{Ephemeral, device_list_edus, presence_entry, queued},
    transactions::MAX_EDUS,
};
use crate::{
    base::{Base, Change, Subscriber},
    ephemeral::DELIVERED,
    outbox::{Courier, Outbox, Round},
    streams::Stream,
};
use hearth_federation::client::FederationClient;

/// PDUs per transaction (the spec's limit).
const BATCH: i64 = 50;

/// Bytes of stored EDUs' content per transaction, at most (after the first).
const MAX_EDU_BYTES: usize = 1024 * 1024;

/// When this process started (ms): with a counter, a unique transaction ID across restarts.
static STARTED_MS: LazyLock<i64> = LazyLock::new(crate::storage::now_ms);

/// Sends each destination the events and EDUs it is owed.
pub struct DestinationCourier {
    base: Base,
    client: Arc<FederationClient>,
    /// Typing notices, receipts and presence waiting per destination.
    ephemeral: Mutex<HashMap<OwnedServerName, Ephemeral>>,
    /// Whether each destination runs Hearth (it is then sent delivery receipts).
    hearth: Mutex<HashMap<OwnedServerName, bool>>,
    /// Makes the IDs of transactions with EDUs unique.
    transactions: AtomicU64,
}

impl DestinationCourier {
    fn ephemeral(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedServerName, Ephemeral>> {
        self.ephemeral.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what waits in memory for a destination, up to `room` EDUs.
    fn take_ephemeral(&self, destination: &OwnedServerName, room: usize) -> Ephemeral {
        let mut pending = self.ephemeral();
        let Some(waiting) = pending.get_mut(destination) else {
            return Ephemeral::default();
        };
        let taken = waiting.take(room);
        if waiting.is_empty() {
            pending.remove(destination);
        }
        taken
    }

    /// Whether the destination runs Hearth; asked once (`/version`), remembered once known.
    async fn is_hearth(&self, destination: &OwnedServerName) -> bool {
        if let Some(known) = self.hearth.lock().unwrap_or_else(|p| p.into_inner()).get(destination) {
            return *known;
        }
        let request = ruma::api::federation::discovery::get_server_version::v1::Request::new();
        let Ok(response) = self.client.send_unsigned(destination, request).await else {
            return false;
        };
        let hearth = response
            .server
            .and_then(|server| server.name)
            .is_some_and(|name| name == "Hearth");
        self.hearth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(destination.clone(), hearth);
        hearth
    }
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
        let mut stored_edus = match storage.outbound_edus(destination.as_str(), MAX_EDUS as i64).await {
            Ok(edus) => edus,
            Err(_) => return Round::Retry,
        };
        // Well under a receiver's body limit (Hearth's is 4 MiB): the first EDU always goes.
        let mut bytes = 0;
        let fits = stored_edus
            .iter()
            .take_while(|edu| {
                bytes += edu.content.len();
                bytes <= MAX_EDU_BYTES
            })
            .count()
            .max(1);
        stored_edus.truncate(fits);
        let ephemeral = self.take_ephemeral(destination, MAX_EDUS - stored_edus.len());
        if pending.is_empty() && stored_edus.is_empty() && ephemeral.is_empty() {
            return Round::Idle;
        }
        let hearth = ephemeral.has_deliveries() && self.is_hearth(destination).await;
        let mut edus: Vec<Box<RawValue>> = stored_edus
            .iter()
            .filter_map(|edu| {
                let content = RawValue::from_string(edu.content.clone()).ok()?;
                serde_json::value::to_raw_value(&serde_json::json!({ "edu_type": edu.edu_type, "content": content }))
                    .ok()
            })
            .collect();
        edus.extend(
            ephemeral
                .clone()
                .into_edus(hearth)
                .iter()
                .filter_map(|edu| serde_json::value::to_raw_value(edu).ok()),
        );
        let pdus: Vec<Box<RawValue>> = pending
            .iter()
            .filter_map(|(_, json)| RawValue::from_string(json.clone()).ok())
            .collect();
        let range = match (pending.first(), pending.last()) {
            (Some((first, _)), Some((last, _))) => format!("{first}-{last}-{}", batch_digest(&pending)),
            _ => "edus".to_owned(),
        };
        // The same batch of events sent again keeps its ID, so the destination answers it from
        // memory; a different batch over the same range (membership changed between tries)
        // gets another. Transactions with EDUs are each new (EDUs repeat: typing, typing).
        let txn_id = if edus.is_empty() {
            OwnedTransactionId::from(range)
        } else {
            let count = self.transactions.fetch_add(1, Ordering::Relaxed);
            OwnedTransactionId::from(format!("{range}-{}.{count}", *STARTED_MS))
        };
        let request = send_transaction_message::v1::Request::new(
            txn_id,
            self.base.config.server_name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        let mut request = request;
        request.pdus = pdus;
        request.edus = edus.into_iter().map(Raw::from_json).collect();
        match self.client.send(destination, request).await {
            Ok(response) => {
                for (event_id, result) in &response.pdus {
                    if let Err(reason) = result {
                        tracing::info!(%destination, %event_id, %reason, "the destination refused a PDU");
                    }
                }
                self.base.metrics.federation_pdus_sent.inc_by(pending.len() as u64);
                if let Some((last, _)) = pending.last()
                    && storage
                        .set_destination_position(destination.as_str(), *last)
                        .await
                        .is_err()
                {
                    return Round::Retry;
                }
                if let Some(last) = stored_edus.last()
                    && storage
                        .delete_outbound_edus(destination.as_str(), last.id)
                        .await
                        .is_err()
                {
                    return Round::Retry;
                }
                Round::More
            }
            Err(error) if error.status() == Some(413) && !stored_edus.is_empty() => {
                // The destination will never take these EDUs: drop them, or nothing after
                // them ever goes.
                tracing::warn!(%destination, count = stored_edus.len(), "the destination refused EDUs as too large; dropped");
                if let Some(last) = stored_edus.last()
                    && storage
                        .delete_outbound_edus(destination.as_str(), last.id)
                        .await
                        .is_err()
                {
                    return Round::Retry;
                }
                Round::More
            }
            Err(error) => {
                tracing::info!(%destination, %error, "could not send a transaction; will retry");
                if !ephemeral.is_empty() {
                    self.ephemeral()
                        .entry(destination.clone())
                        .or_default()
                        .restore(ephemeral);
                }
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

/// Follows committed changes and wakes the destinations they concern.
pub struct FederationSender {
    outbox: Arc<Outbox<DestinationCourier>>,
    events: mpsc::UnboundedSender<Routed>,
}

/// A committed change, as the router needs it.
enum Routed {
    Event(RoutedEvent),
    Typing {
        room_id: String,
        user_id: String,
        typing: bool,
    },
    Receipt {
        room_id: String,
        user_id: String,
        receipt_type: String,
        event_id: String,
        /// The thread, or for a delivery receipt the delivered message's sender.
        place: String,
        ts: i64,
    },
    Presence {
        user_id: String,
    },
    DeviceList {
        user_id: String,
        since: i64,
        position: i64,
    },
    Queued {
        destination: String,
    },
}

/// A committed event.
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
                ephemeral: Mutex::default(),
                hearth: Mutex::default(),
                transactions: AtomicU64::new(0),
            },
            max_backoff,
        );
        let (events, mut incoming) = mpsc::unbounded_channel::<Routed>();
        let routing_base = base.clone();
        let routing_outbox = outbox.clone();
        tokio::spawn(async move {
            let mut known = HashSet::new();
            if let Ok(destinations) = routing_base.storage.destinations().await {
                for destination in destinations {
                    if let Ok(destination) = OwnedServerName::try_from(destination) {
                        known.insert(destination.clone());
                        routing_outbox.wake_or_start(destination);
                    }
                }
            }
            let mut router = Router {
                base: routing_base,
                outbox: routing_outbox,
                known,
                rooms: RoomServers::default(),
                routed: None,
            };
            while let Some(change) = incoming.recv().await {
                router.route(change).await;
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

/// The router's task state: the destinations stored, and each room's servers.
struct Router {
    base: Base,
    outbox: Arc<Outbox<DestinationCourier>>,
    known: HashSet<OwnedServerName>,
    rooms: RoomServers,
    /// The newest event routed: a destination first set up for an EDU starts there, so an
    /// event committed but not yet routed still reaches it.
    routed: Option<i64>,
}

impl Router {
    async fn route(&mut self, change: Routed) {
        match change {
            Routed::Event(event) => self.route_event(event).await,
            Routed::Typing {
                room_id,
                user_id,
                typing,
            } => {
                let servers = self.room_servers(&room_id, false).await;
                self.note_for_each(servers, |waiting| waiting.typing(&room_id, &user_id, typing))
                    .await;
            }
            Routed::Receipt {
                room_id,
                user_id,
                receipt_type,
                event_id,
                place,
                ts,
            } => {
                // A delivery concerns the message's sender's server only.
                let servers = if receipt_type == DELIVERED {
                    place
                        .split_once(':')
                        .map(|(_, server)| server.to_owned())
                        .into_iter()
                        .collect()
                } else {
                    self.room_servers(&room_id, false).await
                };
                self.note_for_each(servers, |waiting| {
                    waiting.receipt(&room_id, &receipt_type, &user_id, &place, &event_id, ts);
                })
                .await;
            }
            Routed::Presence { user_id } => {
                let Ok(Some(entry)) = presence_entry(&self.base, &user_id).await else {
                    return;
                };
                let servers = self.servers_sharing(&user_id).await;
                self.note_for_each(servers, |waiting| waiting.presence(&user_id, entry.clone()))
                    .await;
            }
            Routed::DeviceList {
                user_id,
                since,
                position,
            } => {
                let servers = self.servers_sharing(&user_id).await;
                if servers.is_empty() {
                    return;
                }
                let queued = match device_list_edus(&self.base, &user_id, since, position).await {
                    Ok(edus) => queued(&servers, &edus),
                    Err(error) => {
                        tracing::warn!(%user_id, %error, "could not build device list updates for other servers");
                        return;
                    }
                };
                if let Err(error) = self.base.storage.queue_edus_now(&queued).await {
                    tracing::warn!(%user_id, %error, "could not queue device list updates for other servers");
                    return;
                }
                for server in servers {
                    self.wake(server).await;
                }
            }
            Routed::Queued { destination } => self.wake(destination).await,
        }
    }

    /// Notes an ephemeral EDU for each of `servers` (ours excepted) and wakes them.
    async fn note_for_each(&mut self, servers: Vec<String>, mut note: impl FnMut(&mut Ephemeral)) {
        let ours = self.base.config.server_name.as_str();
        let mut woken = Vec::new();
        {
            let mut waiting = self.outbox.courier().ephemeral();
            for server in servers {
                if server == ours {
                    continue;
                }
                let Ok(destination) = OwnedServerName::try_from(server) else {
                    continue;
                };
                note(waiting.entry(destination.clone()).or_default());
                woken.push(destination);
            }
        }
        for destination in woken {
            self.wake(destination.to_string()).await;
        }
    }

    /// Wakes a destination, setting it up first if it has never been sent anything.
    async fn wake(&mut self, server: String) {
        if server == self.base.config.server_name.as_str() {
            return;
        }
        let Ok(destination) = OwnedServerName::try_from(server) else {
            return;
        };
        if !self.known.contains(&destination) {
            let position = self
                .routed
                .unwrap_or_else(|| self.base.notifier.position(Stream::Events));
            if self
                .base
                .storage
                .add_destination(destination.as_str(), position)
                .await
                .is_err()
            {
                return;
            }
            self.known.insert(destination.clone());
        }
        self.outbox.wake_or_start(destination);
    }

    /// The servers with a joined member in the room, read again after a membership change.
    async fn room_servers(&mut self, room_id: &str, members_changed: bool) -> Vec<String> {
        if !members_changed && let Some(servers) = self.rooms.0.get(room_id) {
            return servers.clone();
        }
        let Ok(servers) = self.base.storage.servers_in_room(room_id).await else {
            self.rooms.0.remove(room_id);
            return Vec::new();
        };
        if self.rooms.0.len() >= REMEMBERED_ROOMS {
            self.rooms.0.clear();
        }
        self.rooms.0.insert(room_id.to_owned(), servers.clone());
        servers
    }

    /// The other servers sharing a joined room with a local user.
    async fn servers_sharing(&mut self, user_id: &str) -> Vec<String> {
        let Ok(rooms) = self.base.storage.rooms_with_membership(user_id, "join").await else {
            return Vec::new();
        };
        let mut servers = std::collections::BTreeSet::new();
        for room_id in rooms {
            servers.extend(self.room_servers(&room_id, false).await);
        }
        servers.remove(self.base.config.server_name.as_str());
        servers.into_iter().collect()
    }

    /// Wakes (or first sets up) every other server in the room of a new event.
    async fn route_event(&mut self, event: RoutedEvent) {
        self.routed = Some(self.routed.map_or(event.position, |routed| routed.max(event.position)));
        let servers = self.room_servers(&event.room_id, event.members_changed).await;
        let base = &self.base;
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
            if !self.known.contains(&destination) {
                if base
                    .storage
                    .add_destination(destination.as_str(), event.position - 1)
                    .await
                    .is_err()
                {
                    continue;
                }
                self.known.insert(destination.clone());
            }
            self.outbox.wake_or_start(destination);
        }
    }
}

impl Subscriber for FederationSender {
    fn published(&self, change: Change<'_>) {
        let routed = match change {
            Change::Event {
                room_id,
                stream_ordering,
                members_changed,
            } => Routed::Event(RoutedEvent {
                room_id: room_id.to_owned(),
                position: stream_ordering,
                members_changed,
            }),
            Change::Typing {
                room_id,
                user_id,
                typing,
            } => Routed::Typing {
                room_id: room_id.to_owned(),
                user_id: user_id.to_owned(),
                typing,
            },
            Change::Receipt {
                room_id,
                user_id,
                receipt_type,
                event_id,
                thread_id,
                event_sender,
                ts,
            } => Routed::Receipt {
                room_id: room_id.to_owned(),
                user_id: user_id.to_owned(),
                receipt_type: receipt_type.to_owned(),
                event_id: event_id.to_owned(),
                place: if receipt_type == DELIVERED {
                    event_sender
                } else {
                    thread_id
                }
                .to_owned(),
                ts,
            },
            Change::Presence { user_id } => Routed::Presence {
                user_id: user_id.to_owned(),
            },
            Change::DeviceList {
                user_id,
                since,
                position,
            } => Routed::DeviceList {
                user_id: user_id.to_owned(),
                since,
                position,
            },
            Change::EdusQueued { destination } => Routed::Queued {
                destination: destination.to_owned(),
            },
            Change::AccountData { .. }
            | Change::Pushers { .. }
            | Change::ReadReceipt { .. }
            | Change::ToDevice { .. } => {
                return;
            }
        };
        let _ = self.events.send(routed);
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
