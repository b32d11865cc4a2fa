//! The services of one server: the shared handles ([`Base`]) and the areas built on them
//! (ephemeral streams, push, media). Built once at start-up and passed down; there are no
//! global singletons. The sync transports take a `&Services`; the areas below them take only
//! the handles they use, usually a `&Base`.

use std::{ops::Deref, sync::Arc};

use hearth_federation::ServerKey;

use crate::{
    appservices::Appservices,
    base::Base,
    config::Config,
    ephemeral::{delivery::Deliveries, presence::Presence, typing::Typing},
    federation::Federation,
    media::Media,
    push::Push,
    storage::Storage,
    streams::StreamToken,
};

#[derive(Clone)]
pub struct Services(Arc<Areas>);

pub struct Areas {
    pub base: Base,
    pub typing: Arc<Typing>,
    pub presence: Arc<Presence>,
    /// Delivery receipts waiting to be written.
    pub deliveries: Arc<Deliveries>,
    /// The media repository.
    pub media: Media,
    /// Push rules, their evaluation and pushers.
    pub push: Arc<Push>,
    /// Talking to other servers; `None` when `federation.enabled` is off.
    pub federation: Option<Arc<Federation>>,
    /// Application services: their queues and the calls to them.
    pub appservices: Arc<Appservices>,
}

impl Services {
    /// `positions`: where each stream stands at start-up (see
    /// [`crate::streams::starting_positions`]).
    pub fn new(
        config: Config,
        storage: Storage,
        signing_key: ServerKey,
        positions: StreamToken,
        media: Media,
    ) -> anyhow::Result<Self> {
        let base = Base::new(config, storage, signing_key, positions);
        let typing: Arc<Typing> = Arc::default();
        let presence: Arc<Presence> = Arc::default();
        let federation = Federation::new(&base, typing.clone(), presence.clone())?;
        let appservices = Appservices::new(&base, typing.clone())?;
        let push = Arc::new(Push::new(&base));
        let subscriber: Arc<dyn crate::base::Subscriber> = push.clone();
        base.subscribe(Arc::downgrade(&subscriber));
        Ok(Self(Arc::new(Areas {
            base,
            typing,
            presence,
            deliveries: Arc::default(),
            push,
            media,
            federation,
            appservices,
        })))
    }
}

impl Deref for Services {
    type Target = Areas;

    fn deref(&self) -> &Areas {
        &self.0
    }
}

impl Deref for Areas {
    type Target = Base;

    fn deref(&self) -> &Base {
        &self.base
    }
}
