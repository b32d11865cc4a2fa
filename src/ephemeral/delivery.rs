//! Delivery receipts, written in batches. Every sync that hands a member new messages records
//! "delivered" here in memory; one flusher stores everything pending in a single transaction
//! every few milliseconds and wakes the senders. A message to a 500-member room thus costs a
//! handful of writes, not 499 write transactions competing with sends for the database.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;

use super::DELIVERED;
use crate::streams::Stream;
use crate::{
    base::Base,
    storage::{NewReceipt, now_ms},
};

/// How long the flusher lets deliveries gather before writing them.
const GATHER: Duration = Duration::from_millis(10);

/// (recipient, room, sender).
type Key = (String, String, String);

/// Pending deliveries: (recipient, room, sender) → the newest event delivered (ID, position).
#[derive(Default)]
pub struct Deliveries {
    pending: Mutex<HashMap<Key, (String, i64)>>,
    wake: Notify,
}

impl Deliveries {
    /// Notes that `recipient` now holds `event_id` (by `sender`, at `ordering`) in `room_id`.
    pub fn record(&self, recipient: &str, room_id: &str, sender: &str, event_id: &str, ordering: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (recipient.to_owned(), room_id.to_owned(), sender.to_owned());
        let newer = pending.get(&key).is_none_or(|(_, known)| *known < ordering);
        if newer {
            pending.insert(key, (event_id.to_owned(), ordering));
            self.wake.notify_one();
        }
    }

    /// Writes whatever is pending, in one transaction, and wakes the senders.
    async fn flush(&self, state: &Base) {
        let batch: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        let ts = now_ms();
        let receipts: Vec<NewReceipt<'_>> = batch
            .iter()
            .map(|((recipient, room_id, sender), (event_id, ordering))| NewReceipt {
                room_id,
                receipt_type: DELIVERED,
                user_id: recipient,
                thread_id: "",
                event_sender: sender,
                event_id,
                event_stream_ordering: *ordering,
                ts,
            })
            .collect();
        match state.storage.upsert_receipts(&receipts).await {
            Ok(positions) => {
                let changed: Vec<(i64, &str)> = positions
                    .iter()
                    .zip(&batch)
                    .filter_map(|(position, ((_, _, sender), _))| position.map(|p| (p, sender.as_str())))
                    .collect();
                // A delivery of a message from another server is news for that server only.
                let ours = format!(":{}", state.config.server_name);
                for (position, ((recipient, room_id, sender), (event_id, _))) in positions.iter().zip(&batch) {
                    if position.is_some() && !sender.ends_with(&ours) {
                        state.publish(crate::base::Change::Receipt {
                            room_id,
                            user_id: recipient,
                            receipt_type: DELIVERED,
                            event_id,
                            thread_id: "",
                            event_sender: sender,
                            ts,
                        });
                    }
                }
                if let Some(highest) = changed.iter().map(|(p, _)| *p).max() {
                    state
                        .notifier
                        .advance(Stream::Receipts, highest, changed.iter().map(|(_, sender)| *sender));
                }
            }
            Err(error) => tracing::warn!(%error, count = batch.len(), "could not record deliveries"),
        }
    }
}

/// The flusher: runs for the life of the server; once the server is stopping, it writes
/// what is pending and ends (see [`Deliveries::finish`]).
pub async fn flush_deliveries(state: Base, deliveries: Arc<Deliveries>) {
    loop {
        deliveries.wake.notified().await;
        if !state.notifier.is_closing() {
            tokio::time::sleep(GATHER).await;
        }
        deliveries.flush(&state).await;
        if state.notifier.is_closing() {
            return;
        }
    }
}

impl Deliveries {
    /// Asks the flusher (once the notifier is closed) for its last write.
    pub fn finish(&self) {
        self.wake.notify_one();
    }

    /// Writes what was recorded after the flusher ended (by requests still draining).
    pub async fn flush_remaining(&self, state: &Base) {
        self.flush(state).await;
    }
}
