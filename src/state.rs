//! The one value every handler receives: configuration, storage and the shared services. It is
//! built once at start-up and passed down; there are no global singletons.

use std::{ops::Deref, sync::Arc, time::Duration};

use hearth_federation::ServerKey;

use crate::{
    cache::Caches,
    config::Config,
    media::Media,
    metrics::Metrics,
    push::Push,
    ratelimit::RateLimits,
    rooms::{RoomLocks, persister::Persister},
    storage::Storage,
    sync::{Notifier, StreamToken, delivery::Deliveries, presence::Presence, sliding::Connections, typing::Typing},
};

#[derive(Clone)]
pub struct AppState(Arc<Services>);

pub struct Services {
    pub config: Config,
    pub storage: Storage,
    pub metrics: Metrics,
    pub rate_limits: RateLimits,
    /// The key this server signs events and federation requests with.
    pub signing_key: ServerKey,
    pub room_locks: RoomLocks,
    /// Writes events, many per transaction under load.
    pub persister: Persister,
    /// What syncs and sends read again and again (see [`crate::cache`]).
    pub caches: Caches,
    /// Stream positions, and the wake-ups of waiting clients.
    pub notifier: Arc<Notifier>,
    pub typing: Arc<Typing>,
    pub presence: Arc<Presence>,
    /// Sliding sync connections: what each has been sent.
    pub sliding: Connections,
    /// Delivery receipts waiting to be written.
    pub deliveries: Deliveries,
    /// The media repository.
    pub media: Media,
    /// Push rules, their evaluation and pushers.
    pub push: Push,
}

impl AppState {
    /// `positions`: where each stream stands at start-up (see [`crate::sync::starting_positions`]).
    pub fn new(config: Config, storage: Storage, signing_key: ServerKey, positions: StreamToken, media: Media) -> Self {
        let rate_limits = RateLimits::new(&config.rate_limits);
        let persister_storage = storage.clone();
        let push = Push::new(&config.push);
        let caches = Caches::default();
        caches.member_event_at(positions.events());
        Self(Arc::new(Services {
            config,
            storage,
            metrics: Metrics::new(),
            rate_limits,
            signing_key,
            room_locks: RoomLocks::default(),
            persister: Persister::start(persister_storage),
            caches,
            notifier: Arc::new(Notifier::new(positions)),
            typing: Arc::default(),
            presence: Arc::default(),
            sliding: Connections::default(),
            deliveries: Deliveries::default(),
            push,
            media,
        }))
    }
}

impl Services {
    /// Lifetime of access tokens issued with a refresh token.
    pub fn refreshable_token_lifetime(&self) -> Duration {
        Duration::from_secs(self.config.auth.refreshable_access_token_lifetime_secs)
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}
