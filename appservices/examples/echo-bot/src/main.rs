//! `hearth-echo-bot`: an example application service. It joins every room its bot user is
//! invited to and answers `!echo <text>`, `!ping` and `!help` there. See README.md.
//!
//! It talks to the homeserver only through the public Matrix APIs: the homeserver pushes
//! events to our appservice API (`common::appservice_api`), and we act through the
//! client-server API with the registration's `as_token` (`common::homeserver`).

#[path = "../../common/mod.rs"]
mod common;

mod bot;
mod commands;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use crate::{bot::EchoBot, common::config::AppserviceSettings};

/// The config file: only what every appservice has (see `common::config`).
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(flatten)]
    appservice: AppserviceSettings,
}

impl AsRef<AppserviceSettings> for Config {
    fn as_ref(&self) -> &AppserviceSettings {
        &self.appservice
    }
}

/// How long, at shutdown, events already taken from the homeserver may still be handled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let common::Startup {
        config,
        registration,
        homeserver,
    } = common::start::<Config>()?;
    let bot = Arc::new(EchoBot { homeserver });
    let (app, worker) = common::appservice_api::routes(registration.hs_token, bot.clone());
    let listener = common::bind(config.appservice.listen).await?;

    let pinger = bot.clone();
    tokio::spawn(async move { common::homeserver::log_ping(&pinger.homeserver, &registration.id).await });

    common::serve(listener, app).await?;
    if tokio::time::timeout(DRAIN_TIMEOUT, worker).await.is_err() {
        tracing::warn!("stopped before handling every event taken from the homeserver");
    }
    Ok(())
}
