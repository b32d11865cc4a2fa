//! Joins with partial state (MSC3706), the joining side: the resident server leaves the
//! room's members out of `send_join`, so the user can read and send at once; the full state
//! at the join is fetched in the background (`/state`), checked, and put under the room.
//! Meanwhile events from other servers for the room wait here (they may be by members this
//! server does not know yet) and go in once the state is whole; the room's servers are the
//! ones the join named.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, api::federation::event::get_room_state,
};

use super::{Federation, pdu::event_id_of};
use crate::{
    rooms::pipeline::context::EventKind,
    storage::{PartialStateRoom, StateMap},
};

/// Events waiting for one room's full state, at most (more are dropped: their successors
/// bring them back through `get_missing_events`).
const MAX_PARKED: usize = 10_000;

/// An event from another server waiting for its room's full state.
pub struct Parked {
    pub origin: OwnedServerName,
    pub event_id: OwnedEventId,
    pub object: CanonicalJsonObject,
}

/// The rooms with partial state, and the events waiting for them.
#[derive(Default)]
pub struct PartialStates {
    inner: Mutex<Inner>,
    /// Woken whenever a room's state becomes whole.
    completed: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    rooms: HashSet<OwnedRoomId>,
    parked: HashMap<OwnedRoomId, Vec<Parked>>,
    /// When each room's state became whole, as a position on the typing stream (the one
    /// stream kept in memory, like this map): a client that synced before it gets the room
    /// again, whole, once.
    resets: HashMap<OwnedRoomId, i64>,
}

impl PartialStates {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, room_id: &RoomId) {
        self.inner().rooms.insert(room_id.to_owned());
    }

    pub fn is_partial(&self, room_id: &RoomId) -> bool {
        self.inner().rooms.contains(room_id)
    }

    /// Keeps an event for later if its room is partial; gives it back otherwise.
    pub fn park(&self, room_id: &RoomId, event: Parked) -> Result<(), Parked> {
        let mut inner = self.inner();
        if !inner.rooms.contains(room_id) {
            return Err(event);
        }
        let waiting = inner.parked.entry(room_id.to_owned()).or_default();
        if waiting.len() < MAX_PARKED {
            waiting.push(event);
        }
        Ok(())
    }

    /// The room is whole (or the join failed): the events that waited, in arrival order.
    pub fn finish(&self, room_id: &RoomId) -> Vec<Parked> {
        let parked = {
            let mut inner = self.inner();
            inner.rooms.remove(room_id);
            inner.parked.remove(room_id).unwrap_or_default()
        };
        self.completed.notify_waiters();
        parked
    }

    /// Notes that the room's state became whole at `position` (on the typing stream).
    pub fn note_reset(&self, room_id: &RoomId, position: i64) {
        self.inner().resets.insert(room_id.to_owned(), position);
    }

    /// Whether the room's state became whole in (`after`, `until`] on the typing stream: a
    /// client syncing across it gets the room as if newly joined (its whole state).
    pub fn reset_between(&self, room_id: &str, after: i64, until: i64) -> bool {
        let Ok(room_id) = <&RoomId>::try_from(room_id) else {
            return false;
        };
        self.inner()
            .resets
            .get(room_id)
            .is_some_and(|position| *position > after && *position <= until)
    }

    /// Waits (up to `timeout`) until the room's state is whole; whether it is.
    pub async fn wait_until_whole(&self, room_id: &RoomId, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let completed = self.completed.notified();
            if !self.is_partial(room_id) {
                return true;
            }
            if tokio::time::timeout_at(deadline, completed).await.is_err() {
                return false;
            }
        }
    }
}

impl Federation {
    /// 404 while the room's state is partial: this server cannot give its whole state, nor
    /// let another server join through it (as Synapse answers).
    pub fn require_whole_state(&self, room_id: &RoomId) -> crate::error::ApiResult<()> {
        if self.partial.is_partial(room_id) {
            return Err(crate::error::ApiError::not_found(
                "This server is still fetching the room's state; ask another server",
            ));
        }
        Ok(())
    }

    /// Picks up the rooms a restart left partial (at start-up).
    pub(super) fn resume_partial_states(self: &Arc<Self>) {
        let federation = self.clone();
        tokio::spawn(async move {
            match federation.base.storage.partial_state_rooms().await {
                Ok(rooms) => {
                    for room in rooms {
                        if let Ok(room_id) = RoomId::parse(&room.room_id) {
                            federation.partial.add(&room_id);
                        }
                        federation.complete_in_background(room);
                    }
                }
                Err(error) => tracing::error!(%error, "could not read the rooms joined with partial state"),
            }
        });
    }

    /// Fetches a partial-state room's full state in the background, trying again (backing
    /// off up to five minutes) until it is in.
    pub(super) fn complete_in_background(self: &Arc<Self>, room: PartialStateRoom) {
        let federation = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let started = std::time::Instant::now();
                match federation.complete_partial_state(&room).await {
                    Ok(()) => {
                        tracing::info!(room_id = room.room_id, took = ?started.elapsed(), "the room's full state is in");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(room_id = room.room_id, %error, "could not fetch the room's full state; will retry");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(300));
                    }
                }
            }
        });
    }

    /// The state our join landed on, as the join brought it (members left out).
    async fn state_before_join(&self, join_id: &OwnedEventId) -> anyhow::Result<StateMap> {
        let storage = &self.base.storage;
        let group = storage
            .state_group_after(join_id.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the join has no state"))?;
        let mut state = storage.state_group(group).await?;
        state.retain(|_, id| id != join_id.as_str());
        Ok(state)
    }

    async fn complete_partial_state(&self, room: &PartialStateRoom) -> anyhow::Result<()> {
        let room_id = OwnedRoomId::try_from(room.room_id.as_str())?;
        let join_id = OwnedEventId::try_from(room.join_event_id.as_str())?;
        let (_, rules) = self.room_rules(&room_id).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut servers: Vec<OwnedServerName> = OwnedServerName::try_from(room.joined_via.as_str())
            .into_iter()
            .collect();
        let named: Vec<String> = serde_json::from_str(&room.servers).unwrap_or_default();
        servers.extend(named.iter().filter_map(|s| OwnedServerName::try_from(s.as_str()).ok()));
        let visibility = crate::rooms::access::history_visibility_now(&self.base, &room_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut last_error = anyhow::anyhow!("no server to ask");
        for server in self.servers_to_try(&servers).into_iter().take(5) {
            let request = get_room_state::v1::Request::new(join_id.clone(), room_id.clone());
            let answer = match self.client.send(server, request).await {
                Ok(answer) => answer,
                Err(error) => {
                    last_error = error.into();
                    continue;
                }
            };
            let state_ids: Vec<OwnedEventId> = answer
                .pdus
                .iter()
                .filter_map(|raw| serde_json::from_str::<CanonicalJsonObject>(raw.get()).ok())
                .filter_map(|object| event_id_of(&object, &rules).ok())
                .collect();
            let mut all = answer.pdus;
            all.extend(answer.auth_chain);
            let batch = self
                .check_batch(server, &room_id, &rules, &all)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let mut state = StateMap::new();
            for id in &state_ids {
                if let Some(entry) = batch.checked.get(id).filter(|_| batch.passed.contains(id))
                    && let Some(key) = &entry.pdu.state_key
                {
                    state.insert((entry.pdu.kind.to_string(), key.clone()), id.to_string());
                }
            }
            if !state.contains_key(&("m.room.create".to_owned(), String::new())) {
                last_error = anyhow::anyhow!("{server} gave a state without the create event");
                continue;
            }
            // Only the members come from here: the rest of the state was checked at the join
            // and stays as it was (one server must not roll back power levels or ACLs).
            let at_join = self.state_before_join(&join_id).await?;
            state.retain(|(kind, _), _| kind == "m.room.member");
            state.extend(at_join.into_iter().filter(|((kind, _), _)| kind != "m.room.member"));
            let ids: HashSet<OwnedEventId> = batch.checked.keys().cloned().collect();
            let outliers = batch.stored(&room_id, &ids, EventKind::Outlier, &visibility);
            let room_lock = self.base.room_locks.lock(&room_id).await;
            let completed = self
                .base
                .storage
                .complete_partial_state(room_id.as_str(), join_id.as_str(), &outliers, state)
                .await?;
            self.base.caches.room_state_replaced(room_id.as_str());
            drop(room_lock);
            if !completed {
                // Another join replaced this one (the room was left and joined again): its
                // own fetch completes it.
                return Ok(());
            }
            // Clients that synced while the state was partial get the room again, whole.
            let position = self.base.notifier.next_position(crate::streams::Stream::Typing);
            self.partial.note_reset(&room_id, position);
            self.base.notifier.wake([room_id.as_str()]);
            // The events that waited go in now, in the order they came.
            for parked in self.partial.finish(&room_id) {
                if let Err(error) = self
                    .append_filling_gaps(&parked.origin, &room_id, &parked.event_id, parked.object, &rules)
                    .await
                {
                    tracing::info!(%room_id, event_id = %parked.event_id, ?error, "an event that waited for the full state failed");
                }
            }
            return Ok(());
        }
        Err(last_error)
    }
}
