//! Outbound delivery, one queue per target: a pusher today; federation destinations and
//! application services next. The queue itself is in storage, owned by the courier (a saved
//! cursor per target: the pusher's last stream position, a destination's last PDU sent); this
//! module runs one task per target that asks the courier to deliver what is pending, in order,
//! and backs off exponentially (1 s doubling to 10 min) while deliveries fail. A slow or dead
//! target delays nobody else, and since the cursor moves only past what the target accepted,
//! pending deliveries survive a restart.
//!
//! With workers, a lease per shard of targets will decide which process runs which tasks; the
//! couriers will not change.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, task::AbortHandle};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What one delivery round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing is pending: sleep until woken.
    Idle,
    /// Something went out and more may be pending: go again at once.
    More,
    /// Delivery failed (the target or our storage): try again after the backoff.
    Failed,
    /// The target is gone: its task ends.
    Gone,
}

/// Delivers to one kind of target from that target's saved cursor.
pub trait Courier: Send + Sync + 'static {
    /// Names a target (ordered, so a prefix of targets is found without a scan).
    type Target: Ord + Clone + Debug + Send + Sync + 'static;

    /// Sends (part of) what is pending for `target`, in order, moving its cursor past each
    /// item the target accepted.
    fn deliver(&self, target: &Self::Target) -> impl Future<Output = Round> + Send;

    /// The target caught up and was nudged meanwhile ([`Outbox::nudge_range`]): a pusher sends
    /// a counts-only badge update. Tried once.
    fn nudged(&self, _target: &Self::Target) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Whether the target still exists (asked when its task ends, in case it was added again
    /// while the task was deciding to stop).
    fn exists(&self, target: &Self::Target) -> impl Future<Output = bool> + Send;
}

/// A target's task: how to wake it, whether it was nudged, and how to stop it.
struct Running {
    wake: Arc<Notify>,
    nudged: Arc<AtomicBool>,
    task: AbortHandle,
}

/// The running targets of one courier.
pub struct Outbox<C: Courier> {
    courier: C,
    running: Mutex<BTreeMap<C::Target, Running>>,
}

impl<C: Courier> Outbox<C> {
    pub fn new(courier: C) -> Arc<Self> {
        Arc::new(Self {
            courier,
            running: Mutex::default(),
        })
    }

    pub fn courier(&self) -> &C {
        &self.courier
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<C::Target, Running>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the target's task unless it runs already; wakes it either way.
    pub fn ensure_running(self: &Arc<Self>, target: C::Target) {
        let mut running = self.running();
        if let Some(entry) = running.get(&target) {
            entry.wake.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        let nudged = Arc::new(AtomicBool::new(false));
        // Spawned under the lock: the task's own removal of its entry waits until it is in.
        let task = tokio::spawn(Arc::clone(self).run(target.clone(), wake.clone(), nudged.clone())).abort_handle();
        running.insert(target, Running { wake, nudged, task });
    }

    /// Wakes the running targets from `from` on while `within` holds (in target order).
    pub fn wake_range(&self, from: &C::Target, within: impl Fn(&C::Target) -> bool) {
        for (_, entry) in self.running().range(from..).take_while(|(target, _)| within(target)) {
            entry.wake.notify_one();
        }
    }

    /// Like [`Self::wake_range`], and each target owes a [`Courier::nudged`] once idle.
    pub fn nudge_range(&self, from: &C::Target, within: impl Fn(&C::Target) -> bool) {
        for (_, entry) in self.running().range(from..).take_while(|(target, _)| within(target)) {
            entry.nudged.store(true, Ordering::SeqCst);
            entry.wake.notify_one();
        }
    }

    /// How many targets have a task.
    pub fn len(&self) -> usize {
        self.running().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every task (at shutdown). An item being sent is sent again after the restart:
    /// targets get at-least-once delivery.
    pub fn stop(&self) {
        for (_, entry) in std::mem::take(&mut *self.running()) {
            entry.task.abort();
        }
    }

    /// One target's loop. Ends when the target is gone.
    async fn run(self: Arc<Self>, target: C::Target, wake: Arc<Notify>, nudged: Arc<AtomicBool>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let woken = wake.notified();
            match self.courier.deliver(&target).await {
                Round::Idle => {
                    backoff = FIRST_BACKOFF;
                    if nudged.swap(false, Ordering::SeqCst) {
                        self.courier.nudged(&target).await;
                    }
                    woken.await;
                }
                Round::More => backoff = FIRST_BACKOFF,
                Round::Failed => {
                    tracing::debug!(?target, ?backoff, "delivery failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Round::Gone => break,
            }
        }
        {
            let mut running = self.running();
            // Only this task's own entry (a new one may have replaced it).
            if running
                .get(&target)
                .is_some_and(|entry| Arc::ptr_eq(&entry.wake, &wake))
            {
                running.remove(&target);
            }
        }
        tracing::debug!(?target, "delivery target stopped");
        if self.courier.exists(&target).await {
            self.ensure_running(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Delivers `items` one per round, failing the first `failures` attempts.
    struct Counting {
        items: usize,
        failures: AtomicUsize,
        delivered: AtomicUsize,
        nudges: AtomicUsize,
        gone: AtomicBool,
    }

    impl Courier for Arc<Counting> {
        type Target = (String, u32);

        async fn deliver(&self, _target: &Self::Target) -> Round {
            if self.gone.load(Ordering::SeqCst) {
                return Round::Gone;
            }
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Round::Failed;
            }
            if self.delivered.load(Ordering::SeqCst) < self.items {
                self.delivered.fetch_add(1, Ordering::SeqCst);
                return Round::More;
            }
            Round::Idle
        }

        async fn nudged(&self, _target: &Self::Target) {
            self.nudges.fetch_add(1, Ordering::SeqCst);
        }

        async fn exists(&self, _target: &Self::Target) -> bool {
            !self.gone.load(Ordering::SeqCst)
        }
    }

    fn counting(items: usize, failures: usize) -> Arc<Counting> {
        Arc::new(Counting {
            items,
            failures: AtomicUsize::new(failures),
            delivered: AtomicUsize::new(0),
            nudges: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
        })
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delivers_everything_then_backs_off_on_failure_then_ends_when_gone() {
        let courier = counting(3, 2);
        let outbox = Outbox::new(courier.clone());
        let target = ("@a:x".to_owned(), 1);
        outbox.ensure_running(target.clone());
        settle().await;
        // Two failures: 1 s, then 2 s of backoff before anything goes out.
        assert_eq!(courier.delivered.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(courier.delivered.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        settle().await;
        assert_eq!(courier.delivered.load(Ordering::SeqCst), 3);
        assert_eq!(outbox.len(), 1);

        // A nudge of the user's targets reaches the idle target once.
        let prefix = ("@a:x".to_owned(), 0);
        outbox.nudge_range(&prefix, |(user, _)| user == "@a:x");
        settle().await;
        assert_eq!(courier.nudges.load(Ordering::SeqCst), 1);
        // Another user's range does not reach it.
        outbox.nudge_range(&("@b:x".to_owned(), 0), |(user, _)| user == "@b:x");
        settle().await;
        assert_eq!(courier.nudges.load(Ordering::SeqCst), 1);

        courier.gone.store(true, Ordering::SeqCst);
        outbox.wake_range(&prefix, |(user, _)| user == "@a:x");
        settle().await;
        assert!(outbox.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_every_task() {
        let courier = counting(0, 0);
        let outbox = Outbox::new(courier);
        for n in 0..3 {
            outbox.ensure_running(("@a:x".to_owned(), n));
        }
        settle().await;
        assert_eq!(outbox.len(), 3);
        outbox.stop();
        assert!(outbox.is_empty());
    }
}
