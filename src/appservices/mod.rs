//! Application services (bridges and bots): the registrations read from the configuration,
//! the appservices' requests (see [`auth`]), and the persistent queue of transactions each
//! one is sent ([`queue`]). Registrations, namespaces and the HTTP calls to an appservice are
//! the `hearth-appservices` crate's; this area decides what each appservice is sent and keeps
//! its place in the streams.
//!
//! The registry itself sits in [`Base`] so that areas below this one (accounts, rooms) can
//! refuse what an appservice's exclusive namespaces claim without knowing this area.

pub mod auth;
mod ephemeral;
mod interest;
pub mod queries;
mod queue;

use std::{path::PathBuf, sync::Arc, time::Duration};

use hearth_appservices::{AppserviceClient, RegistrationError, Registry};
use tokio::sync::mpsc;

use self::{ephemeral::EphemeralNews, queue::TransactionCourier};
use crate::{
    base::{Base, Change, Subscriber},
    ephemeral::typing::Typing,
    outbox::Outbox,
};

/// The appservices' queues and calls.
pub struct Appservices {
    base: Base,
    client: AppserviceClient,
    outbox: Arc<Outbox<TransactionCourier>>,
    /// Typing, receipts and presence to sort out per appservice (off the writer's path).
    news: mpsc::Sender<EphemeralNews>,
    /// Users and aliases appservices said they do not know, and when: not asked again for a
    /// while (anyone may look up a profile; each lookup must not cost an appservice call).
    unknown: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// Ephemeral changes waiting to be sorted; beyond this many, new ones are dropped (they are
/// best-effort, as typing notices are everywhere) rather than grow memory.
const NEWS_BACKLOG: usize = 10_000;

/// The longest wait between tries at an appservice that does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Appservices {
    /// Reads the registrations (a bad one stops the start, with its file and reason).
    pub fn new(base: &Base, typing: Arc<Typing>) -> anyhow::Result<Arc<Self>> {
        let registry = load(base)?;
        if !registry.is_empty() {
            tracing::info!(count = registry.iter().count(), "application services registered");
        }
        base.set_appservice_registry(Arc::new(registry));
        // Appservice URLs are the operator's (usually loopback): no address policy applies.
        crate::outbound::install_crypto_provider();
        let client = AppserviceClient::new(
            reqwest::Client::builder()
                .no_proxy()
                // An appservice's answer is its own: a redirect could point our requests
                // (and the answers relayed to clients) anywhere.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .build()?,
        );
        let courier = TransactionCourier::new(base.clone(), client.clone());
        let outbox = Outbox::with_max_backoff(courier, MAX_BACKOFF);
        let (news, receiver) = mpsc::channel(NEWS_BACKLOG);
        tokio::spawn(ephemeral::sort_news(
            base.clone(),
            typing,
            Arc::clone(&outbox),
            receiver,
        ));
        let appservices = Arc::new(Self {
            base: base.clone(),
            client,
            outbox,
            news,
            unknown: std::sync::Mutex::default(),
        });
        // Weak: the service lives as long as `Services` holds it.
        let subscriber: Arc<dyn Subscriber> = appservices.clone();
        base.subscribe(Arc::downgrade(&subscriber));
        Ok(appservices)
    }

    /// Creates the appservices' own users and starts a queue for each appservice with a URL.
    pub async fn start(&self) -> anyhow::Result<()> {
        self.register_senders().await?;
        self.start_queues();
        Ok(())
    }

    /// Reads the registration files again (on SIGHUP). A bad set is refused whole and the
    /// old one stays; queued transactions survive either way (they are stored per appservice
    /// ID), and an appservice that is gone keeps its queue in case it comes back.
    pub async fn reload(&self) -> Result<(), RegistrationError> {
        let registry = load(&self.base)?;
        tracing::info!(count = registry.iter().count(), "application services reloaded");
        self.base.set_appservice_registry(Arc::new(registry));
        if let Err(error) = self.register_senders().await {
            tracing::error!(%error, "could not create an appservice's sender user");
        }
        self.start_queues();
        Ok(())
    }

    pub fn client(&self) -> &AppserviceClient {
        &self.client
    }

    /// Every appservice's own user exists without registering (spec: "the sender user").
    async fn register_senders(&self) -> anyhow::Result<()> {
        for service in self.base.appservice_registry().iter() {
            register_user(&self.base, &service.sender)
                .await
                .map_err(|error| anyhow::anyhow!("cannot create {}: {error:?}", service.sender))?;
        }
        Ok(())
    }

    /// Starts (or renews: new settings, new backoff) the queue of each appservice with a URL.
    fn start_queues(&self) {
        for service in self.base.appservice_registry().iter() {
            if service.registration.url.is_some() {
                self.outbox.ensure_running(service.id().to_owned());
            }
        }
    }

    /// Stops the queues (at shutdown); a transaction in flight is sent again after the restart.
    pub fn stop(&self) {
        self.outbox.stop();
    }
}

/// Creates an appservice user (no password: only its appservice acts as it), unless it exists.
pub async fn register_user(base: &Base, user_id: &ruma::UserId) -> crate::error::ApiResult<bool> {
    if base.storage.user(user_id.as_str()).await?.is_some() {
        return Ok(false);
    }
    let registration = crate::accounts::Registration {
        user_id,
        password: None,
        password_hash: None,
        is_admin: false,
        is_guest: false,
        user_type: None,
        display_name: None,
        uia_session: None,
        session: None,
    };
    match crate::accounts::register_account(base, registration).await {
        Ok(_) => Ok(true),
        // Registered meanwhile by a concurrent request.
        Err(error) if error.errcode() == Some(ruma::api::error::ErrorKind::UserInUse) => Ok(false),
        Err(error) => Err(error),
    }
}

/// MSC4190: an appservice creates a device for one of its users (no token: the appservice
/// acts on it with `device_id`). Returns whether it is new; an existing one gets the name.
pub async fn create_device(
    base: &Base,
    user_id: &ruma::UserId,
    device_id: &str,
    display_name: Option<&str>,
) -> crate::error::ApiResult<bool> {
    crate::accounts::sessions::check_device_id(Some(device_id))?;
    let mut tx = base.storage.begin_write().await?;
    let created =
        crate::storage::Storage::upsert_device(&mut tx, user_id.as_str(), device_id, display_name, None).await?;
    if !created && display_name.is_some() {
        crate::storage::Storage::set_device_display_name(&mut tx, user_id.as_str(), device_id, display_name).await?;
    }
    let position = crate::storage::Storage::record_device_change(&mut tx, user_id.as_str(), Some(device_id)).await?;
    tx.commit().await?;
    crate::e2ee::device_lists_changed(base, user_id, position).await?;
    Ok(created)
}

/// Whether the request is an appservice's that manages its users' devices itself (MSC4190:
/// no user-interactive auth to delete them, and `PUT /devices/{id}` creates them).
pub fn manages_devices(sender: &crate::accounts::sessions::Sender) -> bool {
    sender
        .appservice
        .as_ref()
        .is_some_and(|service| service.registration.msc4190)
}

fn load(base: &Base) -> Result<Registry, RegistrationError> {
    let files: &[PathBuf] = &base.config.appservices.config_files;
    Registry::load(files, base.config.server_name.as_str())
}

impl Appservices {
    /// Hands an ephemeral change to the sorter, unless no appservice wants ephemeral data or
    /// the sorter is that far behind.
    fn tell(&self, news: EphemeralNews) {
        let registry = self.base.appservice_registry();
        if !registry.iter().any(|service| service.registration.wants_ephemeral()) {
            return;
        }
        if self.news.try_send(news).is_err() {
            tracing::debug!("appservice ephemeral backlog full: a typing notice, receipt or presence dropped");
        }
    }
}

/// Appservices follow committed changes: events and to-device messages wake their queues;
/// typing, receipts and presence are sorted out per appservice by [`ephemeral::sort_news`].
impl Subscriber for Appservices {
    fn published(&self, change: Change<'_>) {
        match change {
            Change::Event { .. } | Change::ToDevice { .. } | Change::DeviceList { .. } => {
                self.outbox.wake_range(&String::new(), |_| true);
            }
            Change::Typing { room_id, .. } => {
                self.tell(EphemeralNews::Typing {
                    room_id: room_id.to_owned(),
                });
            }
            // Read receipts only: delivery receipts are for the sender's server alone.
            Change::Receipt {
                room_id,
                user_id,
                receipt_type: receipt_type @ "m.read",
                event_id,
                thread_id,
                ts,
                ..
            } => {
                self.tell(EphemeralNews::Receipt {
                    room_id: room_id.to_owned(),
                    user_id: user_id.to_owned(),
                    receipt_type: receipt_type.to_owned(),
                    event_id: event_id.to_owned(),
                    thread_id: thread_id.to_owned(),
                    ts,
                });
            }
            Change::Presence { user_id } => {
                self.tell(EphemeralNews::Presence {
                    user_id: user_id.to_owned(),
                });
            }
            Change::Receipt { .. }
            | Change::AccountData { .. }
            | Change::Pushers { .. }
            | Change::ReadReceipt { .. }
            | Change::EdusQueued { .. } => {}
        }
    }
}
