//! Start-up and shutdown: open storage, bind the listener, serve until told to stop, then
//! finish in-flight requests and close the database pool.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    api,
    api::state::AppState,
    config::{Config, RegistrationMode},
    listener,
    media::Media,
    services::Services,
    signing::load_or_create_signing_key,
    storage::{Storage, now_ms},
    tls::TlsFiles,
};

/// UIA sessions older than this are dropped (and their registration token uses released).
const UIA_SESSION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// A server with its storage open and its port bound, not yet serving.
pub struct Server {
    state: AppState,
    listener: TcpListener,
    /// The federation listener (`federation.listen`) and its TLS, when federation is on.
    federation: Option<(TcpListener, Option<Arc<TlsFiles>>)>,
}

impl Server {
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        if config.database.url.is_none() {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
        }
        let url = config.database_url();
        let storage = connect(&config, &url)
            .await
            .with_context(|| format!("cannot open the database ({})", redact_url(&url)))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let federation = bind_federation(&config).await?;
        let signing_key = load_or_create_signing_key(&storage).await?;
        log_startup(&config, &listener, storage.backend());
        let positions = crate::streams::starting_positions(&storage)
            .await
            .map_err(|_| anyhow::anyhow!("cannot read stream positions"))?;
        let media = Media::new(&config)?;
        media
            .store
            .check()
            .await
            .context("the media store does not answer (check media.s3 or media.path)")?;
        let state = AppState::new(Services::new(config, storage, signing_key, positions, media)?);
        state
            .presence
            .restore(&state)
            .await
            .map_err(|_| anyhow::anyhow!("cannot read stored presence"))?;
        state
            .push
            .start()
            .await
            .map_err(|_| anyhow::anyhow!("cannot start push evaluation and pushers"))?;
        state
            .appservices
            .start()
            .await
            .context("cannot start the application services")?;
        Ok(Self {
            state,
            listener,
            federation,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The federation listener's address, when federation is on.
    pub fn federation_addr(&self) -> Option<SocketAddr> {
        self.federation
            .as_ref()
            .map(|(listener, _)| listener.local_addr().expect("a bound listener has an address"))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish, and closes the database pool.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self {
            state,
            listener,
            federation,
        } = self;
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let appservice_reloads = tokio::spawn(reload_appservices_on_sighup(state.appservices.clone()));
        let presence = tokio::spawn(age_presence(state.clone()));
        let deliveries = tokio::spawn(crate::ephemeral::delivery::flush_deliveries(
            state.base.clone(),
            state.deliveries.clone(),
        ));
        let notifier = state.notifier.clone();
        let stopping = tokio_util::sync::CancellationToken::new();
        let stop = stopping.clone();
        tokio::spawn(async move {
            shutdown.await;
            // Long-polls and WebSockets answer now instead of holding the shutdown open.
            notifier.close();
            stop.cancel();
        });
        let file_limit = listener::raise_file_limit();
        let config = &state.config.limits;
        let cap = listener::connection_cap(
            config.max_connections,
            file_limit,
            state.config.database.max_connections,
        );
        tracing::info!(?file_limit, max_connections = cap, "client connections capped");
        // One address never gets more than a quarter of all connections.
        let per_address = match config.max_connections_per_ip {
            0 => 0,
            configured => configured.min((cap / 4).max(1)),
        };
        tracing::info!(max_connections_per_ip = per_address, "connections per address capped");
        let limits = listener::ConnectionLimits {
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            exempt_header_timeout: Duration::from_secs(config.exempt_idle_timeout_secs),
            body_timeout: Duration::from_secs(config.body_timeout_secs),
            per_address: listener::PerAddressLimit::new(per_address, config.connection_limit_exempt.clone()),
        };
        let limits = Arc::new(limits);
        let client_side = listener::serve(
            listener::CappedListener::new(listener, cap),
            api::router(state.clone()),
            limits.clone(),
            None,
            stopping.clone().cancelled_owned(),
        );
        let federation_side = async {
            let Some((listener, tls)) = federation else { return };
            let reload = tls.clone().map(|tls| tokio::spawn(reload_on_sighup(tls)));
            listener::serve(
                listener::CappedListener::new(listener, cap),
                api::router(state.clone()),
                limits.clone(),
                tls,
                stopping.clone().cancelled_owned(),
            )
            .await;
            if let Some(reload) = reload {
                reload.abort();
            }
        };
        tokio::join!(client_side, federation_side);
        housekeeping.abort();
        presence.abort();
        appservice_reloads.abort();
        state.push.stop();
        state.appservices.stop();
        if let Some(federation) = &state.federation {
            federation.sender.stop();
        }
        // The flusher writes the deliveries still pending, then ends.
        state.deliveries.finish();
        let _ = deliveries.await;
        state.deliveries.flush_remaining(&state).await;
        state.storage.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn log_startup(config: &Config, listener: &TcpListener, backend: crate::storage::Backend) {
    let address = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    tracing::info!(server_name = %config.server_name, %address, ?backend, "Hearth is listening");
    match config.registration_mode() {
        RegistrationMode::Closed => tracing::info!("registration: closed"),
        RegistrationMode::TokenRequired => {
            tracing::info!("registration: open to holders of a registration token")
        }
        RegistrationMode::Open if config.listen.ip().is_loopback() => {
            tracing::info!("registration: open to anyone, without verification (loopback address only)")
        }
        RegistrationMode::Open => {
            tracing::warn!("registration: open to anyone, without verification, on a public address")
        }
    }
    if config.registration.shared_secret.is_some() {
        tracing::info!("shared-secret registration (/_synapse/admin/v1/register): on");
    }
    if config.registration.allow_guests {
        tracing::info!("guest accounts: allowed");
    }
}

/// Binds `federation.listen` and loads its TLS files, when federation is on.
async fn bind_federation(config: &Config) -> anyhow::Result<Option<(TcpListener, Option<Arc<TlsFiles>>)>> {
    let federation = &config.federation;
    if !federation.enabled {
        tracing::info!("federation: off (federation.enabled = false)");
        return Ok(None);
    }
    let tls = match (&federation.tls_certificate, &federation.tls_private_key) {
        (Some(certificate), Some(key)) => Some(TlsFiles::load(certificate, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(federation.listen)
        .await
        .with_context(|| format!("cannot listen on {} (federation.listen)", federation.listen))?;
    let address = listener
        .local_addr()
        .map_or_else(|_| federation.listen.to_string(), |a| a.to_string());
    if tls.is_some() {
        tracing::info!(%address, "federation: listening with TLS");
    } else {
        tracing::info!(%address, "federation: listening without TLS (a reverse proxy must terminate TLS in front)");
    }
    Ok(Some((listener, tls)))
}

/// Reads the federation certificate again on each SIGHUP.
async fn reload_on_sighup(tls: Arc<TlsFiles>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tls.reload();
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// Reads the appservice registrations again on each SIGHUP; a bad set is logged and the old
/// one kept.
async fn reload_appservices_on_sighup(appservices: Arc<crate::appservices::Appservices>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(error) = appservices.reload().await {
                tracing::error!(%error, "appservice registrations not reloaded; the previous ones stay");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = appservices;
        std::future::pending::<()>().await;
    }
}

/// Periodic clean-up of expired short-lived state.
async fn housekeeping(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(600));
    loop {
        interval.tick().await;
        let cutoff = now_ms() - UIA_SESSION_LIFETIME.as_millis() as i64;
        match state.storage.expire_uia_sessions(cutoff).await {
            Ok(0) => {}
            Ok(expired) => tracing::debug!(expired, "expired UIA sessions"),
            Err(error) => tracing::warn!(%error, "could not expire UIA sessions"),
        }
        let keep = Duration::from_secs(state.config.push.keep_notifications_days.saturating_mul(86_400));
        match state
            .storage
            .prune_push_actions(now_ms() - keep.as_millis() as i64)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned old notifications"),
            Err(error) => tracing::warn!(%error, "could not prune old notifications"),
        }
    }
}

/// Moves idle users to `unavailable` and users who stopped syncing to `offline`.
async fn age_presence(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        state.presence.tick(&state).await;
    }
}

/// Opens the database; one that is out of reach is tried again every 2 s for
/// `database.connect_wait_secs`, saying why each time.
async fn connect(config: &Config, url: &str) -> Result<Storage, crate::storage::StorageError> {
    let wait = Duration::from_secs(config.database.connect_wait_secs);
    let started = std::time::Instant::now();
    loop {
        match Storage::connect(url, config.database.max_connections).await {
            Err(error) if error.is_unavailable() && started.elapsed() < wait => {
                let left = wait.saturating_sub(started.elapsed()).as_secs();
                tracing::warn!(%error, "the database does not answer; trying again in 2 s ({left} s left)");
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            result => return result,
        }
    }
}

/// Between tries at a database that does not answer at start.
const CONNECT_RETRY: Duration = Duration::from_secs(2);

/// The database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
