//! In-memory caches of what every sync and every send reads again: room versions, a user's
//! memberships, a member's membership history in a room, whether a room is world-readable,
//! where a room's relations end, and a user's ignore list.
//!
//! Each cache is filled on a miss from storage and emptied by the write that changes it: the
//! event pipeline calls [`Caches::event_persisted`] after it commits, and account data goes
//! through [`Caches::account_data_changed`]. A value read from storage is only kept if no
//! invalidation happened while it was being read (a generation counter, checked under the
//! same lock the writers take), so a slow read never puts back what a write just removed.
//! There is one process today; when workers arrive (DESIGN.md), their replication feed must
//! call the same two hooks for writes made elsewhere.
//!
//! Every cache is bounded (quick_cache's S3-FIFO eviction), so a large server trades hits for
//! memory, never the other way round.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use quick_cache::{Equivalent, sync::Cache};
use serde_json::Value;

use crate::{
    json::content_field,
    storage::{MembershipRow, Storage, StorageError},
};

/// One membership event of a user in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    pub stream_ordering: i64,
    pub membership: String,
    pub event_id: String,
}

/// (room ID, user ID), or (user ID, device ID): owned as a key, borrowed for a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pair(String, String);

#[derive(PartialEq, Eq)]
struct PairRef<'a>(&'a str, &'a str);

impl Hash for PairRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same as `Pair`'s derived hash: strings hash like their `str`.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<Pair> for PairRef<'_> {
    fn equivalent(&self, key: &Pair) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A member event sent to a device through lazy-loading `/sync`.
#[derive(Debug, Default)]
struct SentMember {
    /// The client synced from the token of a response that carried it: it has the event.
    acknowledged: bool,
    /// The events positions of the `next_batch` tokens of responses that carried it, newest
    /// last. A later token alone proves nothing: the client may have lost the response that
    /// carried the member and got a later one that did not.
    positions: Vec<i64>,
}

type SentMembers = Arc<Mutex<HashMap<String, SentMember>>>;

/// A device's record of sent members is forgotten past this size (it then resends once).
const MAX_SENT_MEMBERS: usize = 1_000;
/// Responses remembered per member event not yet acknowledged.
const MAX_SENT_POSITIONS: usize = 4;

/// Weighs a list by its length (at least 1), so a bound on weight bounds memory.
#[derive(Debug, Clone, Copy)]
struct ByLength;

impl<K, T> quick_cache::Weighter<K, Arc<Vec<T>>> for ByLength {
    fn weight(&self, _key: &K, value: &Arc<Vec<T>>) -> u64 {
        value.len().max(1) as u64
    }
}

pub struct Caches {
    room_versions: Cache<String, Arc<str>>,
    world_readable: Cache<String, bool>,
    /// The newest stream position of an event relating to another (`m.relates_to`), per room.
    last_relation: Cache<String, i64>,
    memberships: Cache<String, Arc<Vec<MembershipRow>>, ByLength>,
    membership_histories: Cache<Pair, Arc<Vec<MembershipEvent>>, ByLength>,
    ignored: Cache<String, Arc<HashSet<String>>>,
    /// The member event in the room's current state, per (room, user).
    current_members: Cache<Pair, Option<String>>,
    sent_members: Cache<Pair, SentMembers>,
    /// Users deactivated with erasure (few, and only ever more): read once, then kept whole.
    erased: Mutex<Option<Arc<HashSet<String>>>>,
    /// The newest membership event's stream position, or later: a sync whose token is past it
    /// has no membership changes to look up for `device_lists`. Starts at the position the
    /// process started at, since earlier ones are not known without a scan.
    last_member_event: AtomicI64,
    /// Taken by every invalidation and by every insert of a value read from storage.
    invalidation: Mutex<()>,
    generation: AtomicU64,
}

impl Default for Caches {
    fn default() -> Self {
        Self {
            room_versions: Cache::new(100_000),
            world_readable: Cache::new(100_000),
            last_relation: Cache::new(100_000),
            // Weighed by rows: a user in thousands of rooms costs thousands.
            memberships: Cache::with_weighter(50_000, 1_000_000, ByLength),
            membership_histories: Cache::with_weighter(200_000, 1_000_000, ByLength),
            ignored: Cache::new(50_000),
            current_members: Cache::new(200_000),
            sent_members: Cache::new(10_000),
            erased: Mutex::new(None),
            last_member_event: AtomicI64::new(i64::MAX),
            invalidation: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }
}

impl Caches {
    /// The room's version; `None` for a room this server does not know. Versions never
    /// change, so they stay until evicted.
    pub async fn room_version(&self, storage: &Storage, room_id: &str) -> Result<Option<Arc<str>>, StorageError> {
        if let Some(version) = self.room_versions.get(room_id) {
            return Ok(Some(version));
        }
        let Some(version) = storage.room_version(room_id).await? else {
            return Ok(None);
        };
        let version: Arc<str> = version.into();
        self.room_versions.insert(room_id.to_owned(), version.clone());
        Ok(Some(version))
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub async fn world_readable(&self, storage: &Storage, room_id: &str) -> Result<bool, StorageError> {
        if let Some(readable) = self.world_readable.get(room_id) {
            return Ok(readable);
        }
        let generation = self.generation();
        let readable = storage
            .current_state_event(room_id, "m.room.history_visibility", "")
            .await?
            .and_then(|row| content_field(&row.json, "history_visibility"))
            .as_deref()
            == Some("world_readable");
        self.keep(generation, || self.world_readable.insert(room_id.to_owned(), readable));
        Ok(readable)
    }

    /// The newest stream position of a relation in the room (0 if none): events older than
    /// none of these have no relations to bundle.
    pub async fn last_relation(&self, storage: &Storage, room_id: &str) -> Result<i64, StorageError> {
        if let Some(position) = self.last_relation.get(room_id) {
            return Ok(position);
        }
        let generation = self.generation();
        let position = storage.last_relation_position(room_id).await?;
        self.keep(generation, || self.last_relation.insert(room_id.to_owned(), position));
        Ok(position)
    }

    /// Every room the user has a membership in (current state).
    pub async fn user_memberships(
        &self,
        storage: &Storage,
        user_id: &str,
    ) -> Result<Arc<Vec<MembershipRow>>, StorageError> {
        if let Some(rows) = self.memberships.get(user_id) {
            return Ok(rows);
        }
        let generation = self.generation();
        let rows = Arc::new(storage.user_memberships(user_id).await?);
        self.keep(generation, || self.memberships.insert(user_id.to_owned(), rows.clone()));
        Ok(rows)
    }

    /// Every membership event of the user in the room, oldest first.
    pub async fn membership_history(
        &self,
        storage: &Storage,
        room_id: &str,
        user_id: &str,
    ) -> Result<Arc<Vec<MembershipEvent>>, StorageError> {
        if let Some(history) = self.membership_histories.get(&PairRef(room_id, user_id)) {
            return Ok(history);
        }
        let generation = self.generation();
        let history: Vec<MembershipEvent> = storage
            .membership_history(room_id, user_id)
            .await?
            .into_iter()
            .map(|(stream_ordering, event_id, json)| {
                let pdu: Value = serde_json::from_str(&json).unwrap_or_default();
                MembershipEvent {
                    stream_ordering,
                    membership: pdu["content"]["membership"].as_str().unwrap_or_default().to_owned(),
                    // From the column: PDUs of room versions 3 and later carry no `event_id`.
                    event_id,
                }
            })
            .collect();
        let history = Arc::new(history);
        self.keep(generation, || {
            self.membership_histories
                .insert(Pair(room_id.to_owned(), user_id.to_owned()), history.clone());
        });
        Ok(history)
    }

    /// The user's member event in the room's current state, if any.
    pub async fn current_member_event(
        &self,
        storage: &Storage,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<String>, StorageError> {
        if let Some(event_id) = self.current_members.get(&PairRef(room_id, user_id)) {
            return Ok(event_id);
        }
        let generation = self.generation();
        let key = ("m.room.member".to_owned(), user_id.to_owned());
        let event_id = storage
            .current_state_entries(room_id, std::slice::from_ref(&key))
            .await?
            .remove(&key);
        self.keep(generation, || {
            self.current_members
                .insert(Pair(room_id.to_owned(), user_id.to_owned()), event_id.clone());
        });
        Ok(event_id)
    }

    /// The users the user ignores (`m.ignored_user_list`).
    pub async fn ignored_users(&self, storage: &Storage, user_id: &str) -> Result<Arc<HashSet<String>>, StorageError> {
        if let Some(ignored) = self.ignored.get(user_id) {
            return Ok(ignored);
        }
        let generation = self.generation();
        let content = storage.account_data(user_id, "", "m.ignored_user_list").await?;
        let content: Value = content
            .and_then(|content| serde_json::from_str(&content).ok())
            .unwrap_or_default();
        let ignored: Arc<HashSet<String>> = Arc::new(
            content["ignored_users"]
                .as_object()
                .map(|users| users.keys().cloned().collect())
                .unwrap_or_default(),
        );
        self.keep(generation, || self.ignored.insert(user_id.to_owned(), ignored.clone()));
        Ok(ignored)
    }

    /// Every erased user (see [`Storage::mark_erased`]).
    pub async fn erased_users(&self, storage: &Storage) -> Result<Arc<HashSet<String>>, StorageError> {
        if let Some(erased) = self.erased.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(erased);
        }
        let generation = self.generation();
        let erased: Arc<HashSet<String>> = Arc::new(storage.erased_users().await?.into_iter().collect());
        self.keep(generation, || {
            *self.erased.lock().unwrap_or_else(|p| p.into_inner()) = Some(erased.clone());
        });
        Ok(erased)
    }

    /// A user was erased (after the commit): read the set again.
    pub fn user_erased(&self) {
        self.invalidate(|| *self.erased.lock().unwrap_or_else(|p| p.into_inner()) = None);
    }

    /// Drops what a newly committed event makes stale. `state_key` is the event's, for state
    /// events; `relates` says the event relates to another.
    pub fn event_persisted(&self, room_id: &str, event_type: &str, state_key: Option<&str>, relates: bool) {
        let membership_of = state_key.filter(|_| event_type == "m.room.member");
        let visibility = state_key.is_some() && event_type == "m.room.history_visibility";
        if membership_of.is_none() && !visibility && !relates {
            return;
        }
        self.invalidate(|| {
            if let Some(user_id) = membership_of {
                self.memberships.remove(user_id);
                self.membership_histories.remove(&PairRef(room_id, user_id));
                self.current_members.remove(&PairRef(room_id, user_id));
            }
            if visibility {
                self.world_readable.remove(room_id);
            }
            if relates {
                self.last_relation.remove(room_id);
            }
        });
    }

    /// Drops everything derived from a room whose state was replaced wholesale (joined over
    /// federation: many members at once). Membership caches are cleared whole; such joins
    /// are rare.
    pub fn room_state_replaced(&self, room_id: &str) {
        self.invalidate(|| {
            self.room_versions.remove(room_id);
            self.world_readable.remove(room_id);
            self.last_relation.remove(room_id);
            self.memberships.clear();
            self.membership_histories.clear();
            self.current_members.clear();
        });
    }

    /// Drops what the user forgetting a room makes stale (their room list).
    pub fn room_forgotten(&self, user_id: &str) {
        self.invalidate(|| {
            self.memberships.remove(user_id);
        });
    }

    /// Records that a membership event committed at `position` (or, at start, that any may
    /// have up to it).
    pub fn member_event_at(&self, position: i64) {
        let _ = self
            .last_member_event
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(if last == i64::MAX { position } else { last.max(position) })
            });
    }

    /// Whether a membership event may have committed after `position`.
    pub fn member_events_after(&self, position: i64) -> bool {
        self.last_member_event.load(Ordering::SeqCst) > position
    }

    /// Drops what a change to the user's account data makes stale.
    pub fn account_data_changed(&self, user_id: &str, room_id: &str, data_type: &str) {
        if room_id.is_empty() && data_type == "m.ignored_user_list" {
            self.invalidate(|| {
                self.ignored.remove(user_id);
            });
        }
    }

    /// Of these member events, the ones the device may not have: never sent to it, or sent
    /// only in responses the client has not acknowledged by syncing from their token (`since`
    /// is the events position of the token it syncs from now).
    pub fn unsent_members(&self, user_id: &str, device_id: &str, since: i64, event_ids: &mut Vec<String>) {
        let Some(sent) = self.sent_members.get(&PairRef(user_id, device_id)) else {
            return;
        };
        let mut sent = sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        event_ids.retain(|id| {
            let Some(member) = sent.get_mut(id) else {
                return true;
            };
            if member.positions.contains(&since) {
                // Syncing from that response's token acknowledges it, for good.
                member.acknowledged = true;
                member.positions.clear();
            }
            !member.acknowledged
        });
    }

    /// Records member events sent to the device in a response whose `next_batch` has events
    /// position `at`.
    pub fn members_sent(&self, user_id: &str, device_id: &str, at: i64, event_ids: impl IntoIterator<Item = String>) {
        let sent = self
            .sent_members
            .get_or_insert_with(&Pair(user_id.to_owned(), device_id.to_owned()), || {
                Ok::<_, std::convert::Infallible>(SentMembers::default())
            })
            .unwrap_or_else(|never| match never {});
        let mut sent = sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if sent.len() > MAX_SENT_MEMBERS {
            sent.clear();
        }
        for event_id in event_ids {
            let member = sent.entry(event_id).or_default();
            if !member.acknowledged && !member.positions.contains(&at) {
                if member.positions.len() == MAX_SENT_POSITIONS {
                    member.positions.remove(0);
                }
                member.positions.push(at);
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn invalidate(&self, remove: impl FnOnce()) {
        let _guard = self
            .invalidation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        remove();
    }

    /// Inserts a value read from storage, unless something was invalidated since the read began.
    fn keep(&self, generation: u64, insert: impl FnOnce()) {
        let _guard = self
            .invalidation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            insert();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_lookups_find_owned_keys() {
        let cache: Cache<Pair, u8> = Cache::new(10);
        cache.insert(Pair("!r:h".into(), "@u:h".into()), 7);
        assert_eq!(cache.get(&PairRef("!r:h", "@u:h")), Some(7));
        assert_eq!(cache.get(&PairRef("!r:h", "@v:h")), None);
    }

    #[test]
    fn members_count_as_sent_only_once_acknowledged() {
        let caches = Caches::default();
        caches.members_sent("@u:h", "D", 10, ["$a".to_owned()]);
        let mut ids = vec!["$a".to_owned(), "$b".to_owned()];
        // A retry of the request that got $a (since 5): resend it.
        caches.unsent_members("@u:h", "D", 5, &mut ids);
        assert_eq!(ids, ["$a", "$b"]);
        // A later token that is not the one that carried it proves nothing either: that
        // response may have been lost and a later one, without $a, received.
        caches.unsent_members("@u:h", "D", 11, &mut ids);
        assert_eq!(ids, ["$a", "$b"]);
        // Syncing from the token of the response that carried it acknowledges it, for good.
        caches.unsent_members("@u:h", "D", 10, &mut ids);
        assert_eq!(ids, ["$b"]);
        let mut again = vec!["$a".to_owned()];
        caches.unsent_members("@u:h", "D", 30, &mut again);
        assert!(again.is_empty());
        // Another device has its own record.
        let mut other = vec!["$a".to_owned()];
        caches.unsent_members("@u:h", "E", 10, &mut other);
        assert_eq!(other, ["$a"]);
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_kept() {
        let caches = Caches::default();
        let generation = caches.generation();
        caches.event_persisted("!r:h", "m.room.history_visibility", Some(""), false);
        caches.keep(generation, || caches.world_readable.insert("!r:h".into(), false));
        assert_eq!(caches.world_readable.get("!r:h"), None);
        let generation = caches.generation();
        caches.keep(generation, || caches.world_readable.insert("!r:h".into(), true));
        assert_eq!(caches.world_readable.get("!r:h"), Some(true));
    }
}
