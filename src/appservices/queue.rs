//! Each appservice's queue: a saved place in the event, to-device and device-list streams,
//! and at most one transaction in flight. A round (see [`crate::outbox`]) resends the stored
//! transaction if there is one; otherwise it reads what came after the saved place, keeps
//! what the appservice is interested in, stores that as the next transaction (a new ID) and
//! sends it. Only when the appservice accepts it do the positions move and the row go, so
//! delivery is at least once, in stream order, through restarts and outages; a retry after
//! a restart carries the same ID and body, so an appservice that saw it already can tell.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use hearth_appservices::{Appservice, AppserviceClient, transaction::Transaction};
use serde_json::Value;

use super::interest::RoomInterest;
use crate::{
    base::Base,
    outbox::{Courier, Round},
    rooms::client_event::{Unsigned, client_event},
    storage::{AppservicePositions, PendingAppserviceTxn, StorageError},
    streams::{Stream, StreamToken},
};

/// Events read per round (those of no interest are skipped past).
const SCAN: i64 = 500;
/// Events per transaction, at most (Synapse sends up to 100).
const MAX_EVENTS: usize = 100;
/// Ephemeral items and to-device messages per transaction, at most.
const MAX_EPHEMERAL: usize = 100;
/// Ephemeral items kept per appservice while it is down; the oldest go first.
const MAX_EPHEMERAL_WAITING: usize = 1000;
/// How often a queue's place is written when it only skips past events of no interest (kept
/// in memory meanwhile: after a crash those few are looked at again, and skipped again).
const SAVE_SKIPS_EVERY: Duration = Duration::from_secs(5);

/// What a round found past the saved positions.
struct Next {
    transaction: Transaction,
    upto: AppservicePositions,
    /// Reads stopped at a limit: more may be waiting.
    more: bool,
}

pub struct TransactionCourier {
    base: Base,
    client: AppserviceClient,
    /// Typing, receipts and presence per appservice, waiting for the next transaction.
    ephemeral: Mutex<HashMap<String, VecDeque<Value>>>,
    /// Positions past events of no interest not written yet, and when they last were.
    skipped: Mutex<HashMap<String, (AppservicePositions, Instant)>>,
}

impl TransactionCourier {
    pub fn new(base: Base, client: AppserviceClient) -> Self {
        Self {
            base,
            client,
            ephemeral: Mutex::default(),
            skipped: Mutex::default(),
        }
    }

    /// Puts items taken for a transaction that was not stored back in front of the queue.
    fn restore_ephemeral(&self, appservice_id: &str, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        let mut waiting = self.ephemeral.lock().unwrap_or_else(|p| p.into_inner());
        let queue = waiting.entry(appservice_id.to_owned()).or_default();
        for item in items.into_iter().rev() {
            queue.push_front(item);
        }
        queue.truncate(MAX_EPHEMERAL_WAITING);
    }

    /// Where the queue stands: the positions skipped to in memory, else the stored ones (a
    /// new appservice starts at the present).
    async fn positions(&self, appservice_id: &str) -> Result<AppservicePositions, StorageError> {
        if let Some((positions, _)) = self
            .skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(appservice_id)
        {
            return Ok(*positions);
        }
        let current = self.base.notifier.current();
        let start = AppservicePositions {
            events_position: current.events(),
            to_device_position: current.get(Stream::ToDevice),
            device_lists_position: current.get(Stream::DeviceLists),
        };
        self.base.storage.appservice_positions(appservice_id, start).await
    }

    /// Moves past events of no interest: in memory, written at most every few seconds.
    async fn skip_to(&self, appservice_id: &str, upto: AppservicePositions) -> Result<(), StorageError> {
        let due = {
            let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
            let last = skipped.get(appservice_id).map(|(_, saved)| *saved);
            let due = last.is_none_or(|saved| saved.elapsed() >= SAVE_SKIPS_EVERY);
            let saved = if due {
                Instant::now()
            } else {
                last.unwrap_or_else(Instant::now)
            };
            skipped.insert(appservice_id.to_owned(), (upto, saved));
            due
        };
        if due {
            self.base.storage.set_appservice_positions(appservice_id, upto).await?;
        }
        Ok(())
    }

    /// The stored positions are the truth again (a transaction moved them).
    fn forget_skips(&self, appservice_id: &str) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(appservice_id);
    }

    /// Adds an ephemeral item to an appservice's next transaction.
    pub fn push_ephemeral(&self, appservice_id: &str, item: Value) {
        let mut waiting = self.ephemeral.lock().unwrap_or_else(|p| p.into_inner());
        let queue = waiting.entry(appservice_id.to_owned()).or_default();
        if queue.len() >= MAX_EPHEMERAL_WAITING {
            queue.pop_front();
        }
        queue.push_back(item);
    }

    fn take_ephemeral(&self, appservice_id: &str) -> Vec<Value> {
        let mut waiting = self.ephemeral.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = waiting.get_mut(appservice_id) else {
            return Vec::new();
        };
        let taken = queue.drain(..queue.len().min(MAX_EPHEMERAL)).collect();
        if queue.is_empty() {
            waiting.remove(appservice_id);
        }
        taken
    }

    /// Sends the stored transaction; on success the queue moves past it.
    async fn send(&self, service: &Appservice, pending: PendingAppserviceTxn) -> Round {
        let Ok(body) = serde_json::from_str::<Value>(&pending.body) else {
            tracing::error!(appservice = service.id(), "a stored transaction is not JSON; dropped");
            return match self
                .base
                .storage
                .complete_appservice_txn(service.id(), pending.txn_id)
                .await
            {
                Ok(()) => Round::More,
                Err(_) => Round::Retry,
            };
        };
        let started = std::time::Instant::now();
        match self
            .client
            .push_transaction(&service.registration, &pending.txn_id.to_string(), &body)
            .await
        {
            Ok(()) => {
                tracing::debug!(
                    appservice = service.id(),
                    txn_id = pending.txn_id,
                    ms = started.elapsed().as_millis() as u64,
                    "transaction accepted"
                );
                if self
                    .base
                    .storage
                    .complete_appservice_txn(service.id(), pending.txn_id)
                    .await
                    .is_err()
                {
                    return Round::Retry;
                }
                self.forget_skips(service.id());
                self.drain_inboxes(&body, pending.to_device_position).await;
                Round::More
            }
            Err(error) => {
                tracing::warn!(appservice = service.id(), txn_id = pending.txn_id, %error, "transaction not delivered");
                Round::Failed { progressed: false }
            }
        }
    }

    /// The to-device messages the appservice accepted leave its devices' inboxes (nothing else
    /// reads them: its devices do not sync), so they cannot fill up.
    async fn drain_inboxes(&self, body: &Value, upto: i64) {
        let Some(messages) = body["de.sorunome.msc2409.to_device"].as_array() else {
            return;
        };
        let devices: BTreeSet<(&str, &str)> = messages
            .iter()
            .filter_map(|m| Some((m["to_user_id"].as_str()?, m["to_device_id"].as_str()?)))
            .collect();
        for (user_id, device_id) in devices {
            if let Err(error) = self
                .base
                .storage
                .delete_acknowledged_to_device(user_id, device_id, upto)
                .await
            {
                tracing::warn!(%error, "could not clear an appservice device's delivered to-device messages");
            }
        }
    }

    /// What the appservice is owed past its positions, and the positions it reaches.
    async fn next_transaction(&self, service: &Appservice, from: AppservicePositions) -> Result<Next, StorageError> {
        let mut transaction = Transaction::default();
        let mut upto = from;
        let notifier = &self.base.notifier;

        let until = notifier.position(Stream::Events);
        let rows = self
            .base
            .storage
            .events_between(from.events_position, until, SCAN)
            .await?;
        let mut interest = RoomInterest::at(from.events_position);
        // Past each event looked at, sent or not; a short read saw everything up to `until`.
        let (mut reached, mut full) = (from.events_position, false);
        for row in &rows {
            if transaction.events.len() >= MAX_EVENTS {
                full = true;
                break;
            }
            if interest.event(&self.base, service, row).await? {
                let version = self
                    .base
                    .caches
                    .room_version(&self.base.storage, &row.room_id)
                    .await?
                    .unwrap_or_else(|| "1".into());
                transaction
                    .events
                    .push(client_event(row, &version, Unsigned::default()));
            }
            reached = row.stream_ordering;
        }
        let mut more = full || rows.len() as i64 >= SCAN;
        upto.events_position = if more { reached } else { until.max(from.events_position) };

        let registration = &service.registration;
        if registration.wants_ephemeral() {
            transaction.ephemeral = self.take_ephemeral(service.id());
        }
        if registration.wants_ephemeral() || registration.msc3202 {
            let until = notifier.position(Stream::ToDevice);
            let limit = MAX_EPHEMERAL as i64;
            let messages = self
                .base
                .storage
                .inbox_messages_between(from.to_device_position, until, limit)
                .await?;
            upto.to_device_position = match messages.last() {
                Some(last) if messages.len() as i64 >= limit => {
                    more = true;
                    last.stream_position
                }
                _ => until.max(from.to_device_position),
            };
            for message in messages {
                if !service.is_user_in_namespace(&message.user_id) {
                    continue;
                }
                let content: Value = serde_json::from_str(&message.content).unwrap_or_default();
                transaction.to_device.push(serde_json::json!({
                    "type": message.event_type,
                    "sender": message.sender,
                    "content": content,
                    "to_user_id": message.user_id,
                    "to_device_id": message.device_id,
                }));
            }
        } else {
            upto.to_device_position = notifier.position(Stream::ToDevice);
        }
        if registration.msc3202 {
            self.add_device_lists(service, from, &mut upto, &mut transaction)
                .await?;
        } else {
            upto.device_lists_position = notifier.position(Stream::DeviceLists);
        }
        Ok(Next {
            transaction,
            upto,
            more,
        })
    }

    /// MSC3202: the device list changes the appservice's own user would see in `/sync`, and
    /// (with anything else to send) the one-time key counts of its devices.
    async fn add_device_lists(
        &self,
        service: &Appservice,
        from: AppservicePositions,
        upto: &mut AppservicePositions,
        transaction: &mut Transaction,
    ) -> Result<(), StorageError> {
        upto.device_lists_position = self.base.notifier.position(Stream::DeviceLists);
        let token = |events: i64, device_lists: i64| {
            let mut token = StreamToken::default();
            token.set(Stream::Events, events);
            token.set(Stream::DeviceLists, device_lists);
            token
        };
        let bot = service.sender.as_str();
        let (changed, left) = crate::e2ee::device_list_changes(
            &self.base,
            bot,
            &token(from.events_position, from.device_lists_position),
            &token(upto.events_position, upto.device_lists_position),
        )
        .await
        .map_err(|_| StorageError::Invariant("device list changes of an appservice"))?;
        transaction.device_lists_changed = changed.into_iter().collect();
        transaction.device_lists_left = left.into_iter().collect();
        if transaction.is_empty() {
            return Ok(());
        }
        for device in self.base.storage.devices(bot).await? {
            let counts: BTreeMap<String, u64> = self
                .base
                .storage
                .one_time_key_counts(bot, &device.device_id)
                .await?
                .into_iter()
                .map(|(algorithm, count)| (algorithm, count.max(0) as u64))
                .collect();
            transaction
                .one_time_key_counts
                .entry(bot.to_owned())
                .or_default()
                .insert(device.device_id.clone(), counts);
        }
        Ok(())
    }
}

impl Courier for TransactionCourier {
    type Target = String;

    async fn deliver(&self, appservice_id: &String) -> Round {
        let registry = self.base.appservice_registry();
        let Some(service) = registry.by_id(appservice_id) else {
            return Round::Gone;
        };
        if service.registration.url.is_none() {
            return Round::Gone;
        }
        let storage = &self.base.storage;
        match storage.pending_appservice_txn(appservice_id).await {
            Ok(Some(pending)) => return self.send(service, pending).await,
            Ok(None) => {}
            Err(_) => return Round::Retry,
        }
        let Ok(from) = self.positions(appservice_id).await else {
            return Round::Retry;
        };
        let Ok(Next {
            transaction,
            upto,
            more,
        }) = self.next_transaction(service, from).await
        else {
            return Round::Retry;
        };
        if transaction.is_empty() {
            if upto != from && self.skip_to(appservice_id, upto).await.is_err() {
                return Round::Retry;
            }
            return if more { Round::More } else { Round::Idle };
        }
        let body = transaction.to_body().to_string();
        let Ok(txn_id) = storage.create_appservice_txn(appservice_id, &body, upto).await else {
            self.restore_ephemeral(appservice_id, transaction.ephemeral);
            return Round::Retry;
        };
        let pending = PendingAppserviceTxn {
            txn_id,
            body,
            events_position: upto.events_position,
            to_device_position: upto.to_device_position,
            device_lists_position: upto.device_lists_position,
        };
        self.send(service, pending).await
    }

    async fn exists(&self, appservice_id: &String) -> bool {
        self.base
            .appservice_registry()
            .by_id(appservice_id)
            .is_some_and(|service| service.registration.url.is_some())
    }
}
