//! The last step, published: once an event is committed, and before its sender hears back,
//! everyone who keeps something derived from the room learns of it: the caches, the notifier
//! (which wakes the room's members and, for a membership change, its subject, who may not be
//! in the room yet), and every subscriber of committed changes (push now; federation senders
//! and appservice queues next). For an appended event it runs in the writer task, under the
//! room's lock; room creation announces its whole batch once committed.

use tokio::sync::OwnedMutexGuard;

use crate::{
    base::{Base, Change},
    rooms::persister::AfterCommit,
    streams::Stream,
};

/// What the after-commit work needs to know of an event.
pub struct Published {
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub is_relation: bool,
    /// The user a membership event is about.
    pub subject: Option<String>,
    /// Whether clients see it (not rejected, not soft-failed).
    pub visible: bool,
    /// Current state was replaced by a resolution (a fork merged): everything cached of the
    /// room's state is stale, not only this event's key.
    pub state_replaced: bool,
}

/// The work to run once the event is committed at its position; drops the room lock last.
pub fn after_commit(state: &Base, event: Published, room_lock: OwnedMutexGuard<()>) -> AfterCommit {
    let state = state.clone();
    Box::new(move |stream_ordering| {
        if event.visible {
            announce(
                &state,
                &event.room_id,
                stream_ordering,
                event.subject.as_deref(),
                event.state_replaced,
                |caches| {
                    caches.event_persisted(
                        &event.room_id,
                        &event.event_type,
                        event.state_key.as_deref(),
                        event.is_relation,
                    );
                    if event.state_replaced {
                        caches.room_state_replaced(&event.room_id);
                    }
                },
            );
        }
        drop(room_lock);
    })
}

/// Tells caches, waiting clients and subscribers that the room's events up to
/// `stream_ordering` are committed; `subjects` are users outside the room who must hear of it
/// (an invitee, a joiner). `state_replaced`: the room's state was replaced wholesale (a
/// resolution, a remote join), so its members may have changed too. `invalidate` drops what
/// the caches hold of the room.
pub fn announce<'a>(
    state: &Base,
    room_id: &'a str,
    stream_ordering: i64,
    subjects: impl IntoIterator<Item = &'a str>,
    state_replaced: bool,
    invalidate: impl FnOnce(&crate::cache::Caches),
) {
    invalidate(&state.caches);
    let mut subjects = subjects.into_iter().peekable();
    let members_changed = subjects.peek().is_some();
    if members_changed {
        state.caches.member_event_at(stream_ordering);
    }
    state.notifier.advance(
        Stream::Events,
        stream_ordering,
        std::iter::once(room_id).chain(subjects),
    );
    state.publish(Change::Event {
        room_id,
        stream_ordering,
        members_changed: members_changed || state_replaced,
    });
}
