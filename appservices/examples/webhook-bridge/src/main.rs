//! `hearth-webhook-bridge`: an example application service that bridges HTTP webhooks and
//! Matrix rooms, both ways. See README.md.
//!
//! - In: `POST /webhook/{roomIdOrAlias}` posts the text into the room as a ghost user,
//!   `@webhook_<username>:<server>`, created and brought into the room on first use.
//! - Out: messages real users send in bridged rooms (those the bot was invited to) are
//!   posted as JSON to `outbound_url`.
//!
//! Like the echo bot it uses only the public Matrix APIs: the appservice API the homeserver
//! calls (`common::appservice_api`) and the client-server API with the `as_token`.

#[path = "../../common/mod.rs"]
mod common;

mod bridge;
mod calls;
mod events;
mod ghosts;
mod outbound;
mod webhook;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use crate::{bridge::Bridge, common::config::AppserviceSettings};

/// The config file: what every appservice has, plus the webhook's settings.
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(flatten)]
    appservice: AppserviceSettings,
    /// Webhook callers send `Authorization: Bearer <webhook_secret>`.
    webhook_secret: String,
    /// Where room messages go; none: nothing is forwarded.
    #[serde(default)]
    outbound_url: Option<url::Url>,
    /// Sent to `outbound_url` as `Authorization: Bearer <outbound_secret>`, if set.
    #[serde(default)]
    outbound_secret: Option<String>,
    /// The ghost of calls that give no `username`: `@webhook_<default_username>`.
    #[serde(default = "default_username")]
    default_username: String,
}

impl AsRef<AppserviceSettings> for Config {
    fn as_ref(&self) -> &AppserviceSettings {
        &self.appservice
    }
}

fn default_username() -> String {
    "hook".to_owned()
}

/// How long, at shutdown, taken events and queued outbound messages may still be handled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let common::Startup {
        config,
        registration,
        homeserver,
    } = common::start::<Config>()?;
    anyhow::ensure!(
        config.webhook_secret.len() >= 16,
        "webhook_secret must be at least 16 characters"
    );
    let (outbound, forwarder) = match config.outbound_url {
        Some(url) => {
            let (queue, task) = outbound::spawn_forwarder(url, config.outbound_secret)?;
            (Some(queue), Some(task))
        }
        None => (None, None),
    };
    let bridge = Arc::new(Bridge::new(homeserver, config.appservice.server_name, outbound));
    let (appservice_api, worker) = common::appservice_api::routes(registration.hs_token, bridge.clone());
    let webhook = webhook::routes(webhook::WebhookState {
        bridge: bridge.clone(),
        secret: config.webhook_secret,
        default_username: config.default_username,
    });
    let listener = common::bind(config.appservice.listen).await?;

    let starting = bridge.clone();
    let startup = tokio::spawn(async move {
        common::homeserver::log_ping(&starting.homeserver, &registration.id).await;
        recall_bridged_rooms(&starting).await;
    });

    common::serve(listener, webhook.merge(appservice_api)).await?;
    // The forwarder stops once nothing holds the bridge (and so its queue) any more and the
    // queue is empty: the server has let go, the worker will once it has drained.
    startup.abort();
    drop(bridge);
    let drained = async {
        let _ = worker.await;
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("stopped before handling or forwarding everything");
    }
    Ok(())
}

/// The rooms the bot is already in are bridged (it joined them in an earlier run).
async fn recall_bridged_rooms(bridge: &Bridge) {
    match bridge.homeserver.joined_rooms().await {
        Ok(rooms) => {
            for room_id in &rooms {
                bridge.set_bridged(room_id, true);
            }
            tracing::info!(rooms = rooms.len(), "bridged rooms recalled");
        }
        Err(error) => tracing::warn!(%error, "cannot list the bot's rooms; they are bridged again on their next event"),
    }
}
