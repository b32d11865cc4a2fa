//! The handles every area shares: configuration, storage, caches, the notifier, the event
//! writer and room locks, limits, the signing key, metrics, and the subscribers told of every
//! committed change. Areas (rooms, accounts, E2EE, ephemeral, push, media) take a `&Base`, not
//! the whole set of services: nothing here knows the areas above it, so the dependency arrows
//! point one way (see docs/architecture.md).

use std::{
    ops::Deref,
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use hearth_federation::ServerKey;

use crate::{
    cache::Caches,
    config::Config,
    metrics::Metrics,
    ratelimit::RateLimits,
    rooms::{RoomLocks, persister::Persister},
    storage::Storage,
    streams::{Notifier, StreamToken},
};

/// A committed change, told to every [`Subscriber`] after the caches and the notifier have
/// it. Subscribers run on the writer's path: they must only note the change and return (wake
/// a task, drop a cache entry), never wait.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Events of a room were persisted up to `stream_ordering` (one event, with its room's lock
    /// still held; or a new room's first events, all at once).
    /// `members_changed`: a membership (or the whole state, by a resolution) changed with it.
    Event {
        room_id: &'a str,
        stream_ordering: i64,
        members_changed: bool,
    },
    /// A user's account data changed (`room_id` `""` for global data).
    AccountData {
        user_id: &'a str,
        room_id: &'a str,
        data_type: &'a str,
    },
    /// A user's pushers changed (added, removed, or gone with their device).
    Pushers { user_id: &'a str },
    /// A user's read receipt moved (their unread counts dropped).
    ReadReceipt { user_id: &'a str },
    /// A local user started (`typing`) or stopped typing in a room.
    Typing {
        room_id: &'a str,
        user_id: &'a str,
        typing: bool,
    },
    /// A local user's receipt others may see was stored: `m.read`, or a delivery receipt
    /// (`event_sender` names whose message was delivered; `""` for the other kinds).
    Receipt {
        room_id: &'a str,
        user_id: &'a str,
        receipt_type: &'a str,
        event_id: &'a str,
        thread_id: &'a str,
        event_sender: &'a str,
        ts: i64,
    },
    /// A local user's presence changed (the stored row is the news).
    Presence { user_id: &'a str },
    /// A local user's devices or keys changed in (`since`, `position`] on the `device_lists`
    /// stream.
    DeviceList {
        user_id: &'a str,
        since: i64,
        position: i64,
    },
    /// EDUs for another server were stored in its outbound queue.
    EdusQueued { destination: &'a str },
    /// To-device messages were stored for these users' devices (local senders or remote).
    ToDevice { recipients: &'a [String] },
}

/// Something that follows committed changes: push today; federation senders and
/// appservice queues will hang off the same list.
pub trait Subscriber: Send + Sync {
    fn published(&self, change: Change<'_>);
}

/// Another server's part in a local event. An invite of a user of another server must carry
/// that server's signature before it is stored; federation provides this (see
/// [`Base::set_countersigner`]). A refusal is its reason.
pub trait Countersigner: Send + Sync {
    /// Has the invitee's server sign the invite; returns the event with its signature added.
    fn countersign_invite<'a>(
        &'a self,
        room_id: &'a ruma::RoomId,
        event_id: &'a ruma::EventId,
        version: &'a str,
        event: ruma::CanonicalJsonObject,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ruma::CanonicalJsonObject, String>> + Send + 'a>>;
}

#[derive(Clone)]
pub struct Base(Arc<Handles>);

pub struct Handles {
    pub config: Config,
    pub storage: Storage,
    pub metrics: Metrics,
    pub rate_limits: RateLimits,
    /// The key this server signs events and federation requests with.
    pub signing_key: Arc<ServerKey>,
    pub room_locks: RoomLocks,
    /// Writes events, many per transaction under load.
    pub persister: Persister,
    /// What syncs and sends read again and again (see [`crate::cache`]).
    pub caches: Caches,
    /// Stream positions, and the wake-ups of waiting clients.
    pub notifier: Arc<Notifier>,
    /// Weak: a subscriber (push) may hold a `Base` itself.
    subscribers: RwLock<Vec<Weak<dyn Subscriber>>>,
    /// Federation's hand in local events (invites to other servers); none when it is off.
    countersigner: RwLock<Option<Weak<dyn Countersigner>>>,
    /// The registered application services: what their namespaces claim is checked wherever
    /// users or aliases are created. Replaced whole on a reload.
    appservices: RwLock<Arc<hearth_appservices::Registry>>,
}

impl Base {
    /// `positions`: where each stream stands at start-up (see
    /// [`crate::streams::starting_positions`]).
    pub fn new(config: Config, storage: Storage, signing_key: ServerKey, positions: StreamToken) -> Self {
        let rate_limits = RateLimits::new(&config.rate_limits);
        let caches = Caches::default();
        caches.member_event_at(positions.events());
        Self(Arc::new(Handles {
            rate_limits,
            metrics: Metrics::new(),
            signing_key: Arc::new(signing_key),
            room_locks: RoomLocks::default(),
            persister: Persister::start(storage.clone()),
            caches,
            notifier: Arc::new(Notifier::new(positions)),
            subscribers: RwLock::default(),
            countersigner: RwLock::default(),
            appservices: RwLock::default(),
            config,
            storage,
        }))
    }

    /// Adds a subscriber to every change committed from now on.
    pub fn subscribe(&self, subscriber: Weak<dyn Subscriber>) {
        self.subscribers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(subscriber);
    }

    /// Sets who countersigns invites to other servers (federation, at start).
    pub fn set_countersigner(&self, countersigner: Weak<dyn Countersigner>) {
        *self.countersigner.write().unwrap_or_else(|p| p.into_inner()) = Some(countersigner);
    }

    pub fn countersigner(&self) -> Option<std::sync::Arc<dyn Countersigner>> {
        self.countersigner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// The application services registered now.
    pub fn appservice_registry(&self) -> Arc<hearth_appservices::Registry> {
        Arc::clone(&self.appservices.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the registered application services (at start, and on a reload).
    pub fn set_appservice_registry(&self, registry: Arc<hearth_appservices::Registry>) {
        *self.appservices.write().unwrap_or_else(|p| p.into_inner()) = registry;
    }

    /// Tells every subscriber of a committed change.
    pub fn publish(&self, change: Change<'_>) {
        let subscribers = self.subscribers.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        for subscriber in subscribers.iter().filter_map(Weak::upgrade) {
            subscriber.published(change);
        }
    }

    /// The notifier keys of a user: themselves and every room they are joined to, invited to
    /// or knocking on.
    pub async fn listen_keys(&self, user_id: &ruma::UserId) -> Result<Vec<String>, crate::storage::StorageError> {
        let mut keys: Vec<String> = self
            .caches
            .user_memberships(&self.storage, user_id.as_str())
            .await?
            .iter()
            .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
            .map(|m| m.room_id.clone())
            .collect();
        keys.push(user_id.to_string());
        Ok(keys)
    }

    /// Lifetime of access tokens issued with a refresh token.
    pub fn refreshable_token_lifetime(&self) -> Duration {
        Duration::from_secs(self.config.auth.refreshable_access_token_lifetime_secs)
    }
}

impl Deref for Base {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}
