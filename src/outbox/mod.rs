//! Outbound delivery, one queue per target: a pusher today; federation destinations and
//! application services next. The queue itself is in storage, owned by the courier (a saved
//! cursor per target: the pusher's last stream position, a destination's last PDU sent); this
//! module runs one task per target that asks the courier to deliver what is pending, in order,
//! and backs off exponentially (1 s doubling to 10 min) while the target refuses or does not
//! answer; the backoff starts again once something went through or the target was set up
//! anew. Our own failures (the database) are retried after 1 s without growing it. A slow or
//! dead target delays nobody else, and since the cursor moves only past what the target
//! accepted, pending deliveries survive a restart.
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
    /// The target refused or did not answer: try again after the backoff, which starts
    /// over if this round still delivered something (`progressed`).
    Failed { progressed: bool },
    /// Our side failed (the database): try again in a second, backoff unchanged.
    Retry,
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

/// A target's task: how to wake it, whether it was nudged or set up anew, and how to stop it.
struct Running {
    wake: Arc<Notify>,
    nudged: Arc<AtomicBool>,
    renewed: Arc<AtomicBool>,
    task: AbortHandle,
}

/// The running targets of one courier.
pub struct Outbox<C: Courier> {
    courier: C,
    running: Mutex<BTreeMap<C::Target, Running>>,
    /// The longest wait between tries at a target that keeps failing.
    max_backoff: Duration,
}

impl<C: Courier> Outbox<C> {
    pub fn new(courier: C) -> Arc<Self> {
        Self::with_max_backoff(courier, MAX_BACKOFF)
    }

    /// An outbox whose backoff grows up to `max_backoff` (federation waits up to an hour for
    /// a server that is down; pushers ten minutes).
    pub fn with_max_backoff(courier: C, max_backoff: Duration) -> Arc<Self> {
        Arc::new(Self {
            courier,
            running: Mutex::default(),
            max_backoff: max_backoff.max(FIRST_BACKOFF),
        })
    }

    /// Wakes the target's task, starting it if it is not running. Unlike
    /// [`Self::ensure_running`], a backoff in progress is left alone: more to send is no
    /// reason to call a failing target sooner.
    pub fn wake_or_start(self: &Arc<Self>, target: C::Target) {
        if let Some(entry) = self.running().get(&target) {
            entry.wake.notify_one();
            return;
        }
        self.ensure_running(target);
    }

    /// The target is known to be back (it called us): a backoff in progress ends now.
    pub fn renew_if_running(&self, target: &C::Target) {
        if let Some(entry) = self.running().get(target) {
            entry.renewed.store(true, Ordering::SeqCst);
            entry.wake.notify_one();
        }
    }

    pub fn courier(&self) -> &C {
        &self.courier
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<C::Target, Running>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the target's task unless it runs already; wakes it either way. A running target
    /// counts as set up anew (new settings, say): a backoff in progress ends and starts over.
    pub fn ensure_running(self: &Arc<Self>, target: C::Target) {
        let mut running = self.running();
        if let Some(entry) = running.get(&target) {
            entry.renewed.store(true, Ordering::SeqCst);
            entry.wake.notify_one();
            return;
        }
        let (wake, nudged, renewed) = (Arc::new(Notify::new()), Arc::default(), Arc::default());
        // Spawned under the lock: the task's own removal of its entry waits until it is in.
        let run = Arc::clone(self).run(target.clone(), wake.clone(), Arc::clone(&nudged), Arc::clone(&renewed));
        let task = tokio::spawn(run).abort_handle();
        running.insert(
            target,
            Running {
                wake,
                nudged,
                renewed,
                task,
            },
        );
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
    async fn run(
        self: Arc<Self>,
        target: C::Target,
        wake: Arc<Notify>,
        nudged: Arc<AtomicBool>,
        renewed: Arc<AtomicBool>,
    ) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let woken = wake.notified();
            // A renewal before this round is this round's to use (and a failure of it waits
            // the first backoff again); one during it cuts the backoff after it short.
            if renewed.swap(false, Ordering::SeqCst) {
                backoff = FIRST_BACKOFF;
            }
            match self.courier.deliver(&target).await {
                Round::Idle => {
                    backoff = FIRST_BACKOFF;
                    if nudged.swap(false, Ordering::SeqCst) {
                        self.courier.nudged(&target).await;
                    }
                    woken.await;
                }
                Round::More => backoff = FIRST_BACKOFF,
                Round::Retry => tokio::time::sleep(FIRST_BACKOFF).await,
                Round::Failed { progressed } => {
                    if progressed {
                        backoff = FIRST_BACKOFF;
                    }
                    tracing::debug!(?target, ?backoff, "delivery failed; backing off");
                    backoff = if back_off(backoff, &wake, &renewed).await {
                        FIRST_BACKOFF
                    } else {
                        (backoff * 2).min(self.max_backoff)
                    };
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

/// Waits `backoff`, or less if the target is set up anew meanwhile (then true). Ordinary
/// wake-ups (more to send) do not shorten it.
async fn back_off(backoff: Duration, wake: &Notify, renewed: &AtomicBool) -> bool {
    let deadline = tokio::time::Instant::now() + backoff;
    loop {
        if renewed.swap(false, Ordering::SeqCst) {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return renewed.swap(false, Ordering::SeqCst),
            () = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Delivers `items` one per round, failing the first `failures` attempts.
    struct Counting {
        attempts: AtomicUsize,
        items: usize,
        failures: AtomicUsize,
        delivered: AtomicUsize,
        nudges: AtomicUsize,
        gone: AtomicBool,
    }

    impl Courier for Arc<Counting> {
        type Target = (String, u32);

        async fn deliver(&self, _target: &Self::Target) -> Round {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.gone.load(Ordering::SeqCst) {
                return Round::Gone;
            }
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Round::Failed { progressed: false };
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
            attempts: AtomicUsize::new(0),
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
    async fn the_backoff_doubles_and_ends_when_the_target_is_set_up_anew() {
        let courier = counting(1, 10);
        let outbox = Outbox::new(courier.clone());
        let target = ("@a:x".to_owned(), 1);
        outbox.ensure_running(target.clone());
        settle().await;
        assert_eq!(courier.attempts.load(Ordering::SeqCst), 1);
        // Waits of 1 s, 2 s, 4 s: attempts at 0, 1, 3 and 7 seconds.
        for (wait_ms, attempts) in [(1_100, 2), (2_000, 3), (4_000, 4)] {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            settle().await;
            assert_eq!(courier.attempts.load(Ordering::SeqCst), attempts);
        }
        // An ordinary wake does not cut the 8 s wait short; new settings do.
        outbox.wake_range(&target, |t| t == &target);
        settle().await;
        assert_eq!(courier.attempts.load(Ordering::SeqCst), 4);
        outbox.ensure_running(target.clone());
        settle().await;
        assert_eq!(courier.attempts.load(Ordering::SeqCst), 5);
        // And the next wait is 1 s again.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        settle().await;
        assert_eq!(courier.attempts.load(Ordering::SeqCst), 6);
    }

    /// Answers each round from a script (then `Idle`), noting when it was asked.
    #[derive(Default)]
    struct Scripted {
        rounds: Mutex<std::collections::VecDeque<Round>>,
        asked: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Courier for Arc<Scripted> {
        type Target = u32;

        async fn deliver(&self, _target: &u32) -> Round {
            self.asked.lock().unwrap().push(tokio::time::Instant::now());
            self.rounds.lock().unwrap().pop_front().unwrap_or(Round::Idle)
        }

        async fn exists(&self, _target: &u32) -> bool {
            true
        }
    }

    impl Scripted {
        fn push(&self, rounds: &[Round]) {
            self.rounds.lock().unwrap().extend(rounds.iter().copied());
        }

        /// Seconds from `start` of each round asked for.
        fn asked_at(&self, start: tokio::time::Instant) -> Vec<u64> {
            self.asked
                .lock()
                .unwrap()
                .iter()
                .map(|at| (*at - start).as_secs())
                .collect()
        }
    }

    const FAILED: Round = Round::Failed { progressed: false };

    #[tokio::test(start_paused = true)]
    async fn our_own_failures_do_not_grow_the_backoff_and_progress_resets_it() {
        let courier = Arc::new(Scripted::default());
        let progressed = Round::Failed { progressed: true };
        courier.push(&[FAILED, FAILED, Round::Retry, FAILED, progressed, FAILED]);
        let start = tokio::time::Instant::now();
        Outbox::new(courier.clone()).ensure_running(1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        // Waits: 1, 2, then 1 for our own failure (the backoff stays 4), 4, then 1 again
        // after a round that delivered something, 2; then nothing is left.
        assert_eq!(courier.asked_at(start), [0, 1, 3, 4, 8, 9, 11]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_set_up_anew_backs_off_from_the_start() {
        let courier = Arc::new(Scripted::default());
        courier.push(&[FAILED, FAILED, FAILED, Round::Retry, FAILED, FAILED]);
        let start = tokio::time::Instant::now();
        let outbox = Outbox::new(courier.clone());
        outbox.ensure_running(1);
        // During the 1 s after our own failure at 7 s, with the backoff grown to 8 s, the
        // target gets new settings: its next failure waits 1 s, not 8 s, nor nothing at all.
        tokio::time::sleep(Duration::from_millis(7_500)).await;
        assert_eq!(courier.asked_at(start), [0, 1, 3, 7]);
        outbox.ensure_running(1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(courier.asked_at(start), [0, 1, 3, 7, 8, 9, 11]);
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
