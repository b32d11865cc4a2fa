//! The notifier: where every stream's current position lives, and how a waiting `/sync`,
//! sliding sync or WebSocket learns that something it cares about moved.
//!
//! Waiters listen on keys: their user ID (account data, invites, to-device) and the IDs of
//! their rooms (events, typing, receipts, presence of members). A change wakes exactly the
//! listeners of the keys it names, found by a hash lookup per key, never by scanning every
//! connection. Writers call [`Notifier::advance`] after their transaction commits; with
//! workers, a Redis subscriber will call the same method for changes made elsewhere.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
};

use tokio::sync::Notify;

use super::token::{Stream, StreamToken};

#[derive(Default)]
pub struct Notifier {
    positions: [AtomicI64; Stream::COUNT],
    listeners: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    /// Set at shutdown: every listener is woken and new ones return at once, so long-polls
    /// answer instead of holding the server open.
    closing: AtomicBool,
    /// Listeners registered now.
    waiting: AtomicI64,
}

impl Notifier {
    /// Starts from the positions the database holds (and the typing position, which is not
    /// stored).
    pub fn new(start: StreamToken) -> Self {
        let notifier = Self::default();
        for stream in Stream::ALL {
            notifier.positions[stream as usize].store(start.get(stream), Ordering::SeqCst);
        }
        notifier
    }

    /// The positions every client may be served up to: for each stream, every write at or
    /// below it has committed.
    pub fn current(&self) -> StreamToken {
        let mut token = StreamToken::default();
        for stream in Stream::ALL {
            token.set(stream, self.positions[stream as usize].load(Ordering::SeqCst));
        }
        token
    }

    pub fn position(&self, stream: Stream) -> i64 {
        self.positions[stream as usize].load(Ordering::SeqCst)
    }

    /// Records that a write at `position` committed, then wakes the listeners of `keys`.
    ///
    /// Positions on a stream are handed out under a lock held until commit, so a committed
    /// position means every lower one committed too; the maximum is therefore safe to serve.
    pub fn advance<'a>(&self, stream: Stream, position: i64, keys: impl IntoIterator<Item = &'a str>) {
        self.positions[stream as usize].fetch_max(position, Ordering::SeqCst);
        self.wake(keys);
    }

    /// Hands out the next position of a stream the process keeps in memory (typing).
    pub fn next_position(&self, stream: Stream) -> i64 {
        self.positions[stream as usize].fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn wake<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let listeners = self.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in keys {
            for listener in listeners.get(key).into_iter().flatten() {
                if let Some(notify) = listener.upgrade() {
                    notify.notify_one();
                }
            }
        }
    }

    /// Registers interest in `keys`. A change after this call wakes the returned listener,
    /// even one that happens before it starts waiting, so a caller can register, read, and
    /// then wait without a gap in which a change is missed.
    pub fn listen(self: &Arc<Self>, keys: Vec<String>) -> Listener {
        let notify = Arc::new(Notify::new());
        if self.is_closing() {
            notify.notify_one();
        }
        {
            let mut listeners = self.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for key in &keys {
                listeners.entry(key.clone()).or_default().push(Arc::downgrade(&notify));
            }
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Listener {
            notifier: Arc::clone(self),
            keys,
            notify,
        }
    }

    /// Wakes every listener for good: the server is stopping.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let listeners = self.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for notify in listeners.values().flatten().filter_map(Weak::upgrade) {
            notify.notify_one();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// How many listeners are registered (clients waiting for news).
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// How many keys have listeners (for metrics and tests).
    pub fn listened_keys(&self) -> usize {
        self.listeners.lock().map_or(0, |listeners| listeners.len())
    }
}

/// A registration on the notifier; dropping it unregisters.
pub struct Listener {
    notifier: Arc<Notifier>,
    keys: Vec<String>,
    notify: Arc<Notify>,
}

impl Listener {
    /// Waits until one of the keys is woken (or returns at once if one was since `listen`).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.notifier.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut listeners = self
            .notifier
            .listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in &self.keys {
            if let Some(list) = listeners.get_mut(key) {
                list.retain(|weak| weak.strong_count() > 0 && !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&self.notify)));
                if list.is_empty() {
                    listeners.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_only_the_keys_named() {
        let notifier = Arc::new(Notifier::default());
        let room = notifier.listen(vec!["!a:x".into()]);
        let other = notifier.listen(vec!["!b:x".into()]);
        notifier.advance(Stream::Events, 5, ["!a:x"]);
        tokio::time::timeout(Duration::from_secs(1), room.changed())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.changed())
                .await
                .is_err()
        );
        assert_eq!(notifier.current().get(Stream::Events), 5);
        // Positions never go back when commits report out of order.
        notifier.advance(Stream::Events, 3, []);
        assert_eq!(notifier.position(Stream::Events), 5);
    }

    #[tokio::test]
    async fn dropping_a_listener_unregisters_it() {
        let notifier = Arc::new(Notifier::default());
        let first = notifier.listen(vec!["@u:x".into()]);
        let second = notifier.listen(vec!["@u:x".into()]);
        drop(first);
        assert_eq!(notifier.listened_keys(), 1);
        drop(second);
        assert_eq!(notifier.listened_keys(), 0);
    }
}
