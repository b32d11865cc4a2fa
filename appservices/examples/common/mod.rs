//! What every appservice needs, shared by the examples (each binary includes this folder with
//! `#[path = "../../common/mod.rs"] mod common;`, so both stay one package each):
//!
//! - [`config`]: the YAML config and the registration file the homeserver was given;
//! - [`appservice_api`]: the API the homeserver calls (`/_matrix/app/v1/...`): checking the
//!   `hs_token`, answering a repeated transaction without handling it twice, and handing the
//!   events, in order, to the example's [`appservice_api::EventHandler`];
//! - [`homeserver`]: the client-server API calls made with the `as_token`;
//! - [`auth`] (the `hs_token` check, as an extractor), [`transactions`] (the remembered
//!   transaction IDs), [`ruma_axum`] (ruma's request and response types in axum handlers) and
//!   [`error`] (answers in the Matrix error shape) serve the appservice API.
//!
//! Copy this folder along with an example to start your own appservice.

pub mod appservice_api;
pub mod auth;
pub mod config;
pub mod error;
pub mod homeserver;
pub mod ruma_axum;
pub mod transactions;

use std::net::SocketAddr;

use anyhow::Context as _;
use serde::de::DeserializeOwned;

/// What start-up gives every example.
pub struct Startup<C> {
    pub config: C,
    pub registration: config::Registration,
    pub homeserver: homeserver::Homeserver,
}

/// The start every example makes: logging, the TLS provider, the config file named on the
/// command line, the registration it points to, and the client of the homeserver.
pub fn start<C: DeserializeOwned + AsRef<config::AppserviceSettings>>() -> anyhow::Result<Startup<C>> {
    init_logging();
    install_crypto_provider();
    let config_path = config::config_path_from_args()?;
    let config: C = config::read_yaml(&config_path)?;
    let settings = config.as_ref();
    let registration = settings.read_registration(&config_path)?;
    let bot = settings.bot_user_id(&registration)?;
    let homeserver = homeserver::Homeserver::new(settings.homeserver_url.clone(), registration.as_token.clone(), bot)?;
    tracing::info!(bot = %homeserver.bot, homeserver = %settings.homeserver_url, "starting");
    Ok(Startup {
        config,
        registration,
        homeserver,
    })
}

/// Binds the listener first, so that the homeserver can reach us (its ping) before we serve.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "listening");
    Ok(listener)
}

/// Serves `app` until SIGTERM or Ctrl-C, then lets the requests in flight finish.
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> anyhow::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed")
}

/// Installs the process-wide TLS crypto provider. reqwest is built without one (so the
/// workspace picks a single provider, ring); building a client without it panics.
fn install_crypto_provider() {
    // `Err` means a provider is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Resolves on SIGTERM or Ctrl-C: the server then stops accepting, finishes the requests in
/// flight, and the event worker drains what the homeserver already handed over.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
