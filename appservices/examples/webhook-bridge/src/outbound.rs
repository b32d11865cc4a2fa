//! Forwarding room messages out: each goes as one `POST outbound_url` with a JSON body,
//! retried a couple of times, from a task of its own so the homeserver's transactions
//! never wait on the receiver. One task, one message at a time: they arrive in order.

use std::time::Duration;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};
use url::Url;

/// What the receiver gets, as JSON.
#[derive(Debug, Serialize)]
pub struct OutboundMessage {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub body: String,
    pub event_id: OwnedEventId,
    /// Milliseconds since the Unix epoch, when the homeserver received the message.
    pub origin_server_ts: u64,
}

/// Messages waiting to go out; past this they are dropped (see `Bridge::forward`).
const QUEUE_LENGTH: usize = 1000;

/// The waits before the second and third attempts.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// One attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the forwarder. It stops once every sender is dropped and the queue is empty.
/// `secret`, if set, goes along as `Authorization: Bearer <secret>` so the receiver can tell
/// the bridge from anyone else.
pub fn spawn_forwarder(
    url: Url,
    secret: Option<String>,
) -> anyhow::Result<(mpsc::Sender<OutboundMessage>, JoinHandle<()>)> {
    let http = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build()?;
    let (sender, mut receiver) = mpsc::channel::<OutboundMessage>(QUEUE_LENGTH);
    let forwarder = tokio::spawn(async move {
        while let Some(message) = receiver.recv().await {
            deliver(&http, &url, secret.as_deref(), &message).await;
        }
    });
    Ok((sender, forwarder))
}

/// Posts one message, retrying on a network error, a 5xx or a 429; other answers are final.
async fn deliver(http: &reqwest::Client, url: &Url, secret: Option<&str>, message: &OutboundMessage) {
    let event_id = &message.event_id;
    for attempt in 0..=RETRY_DELAYS.len() {
        if let Some(delay) = attempt.checked_sub(1).and_then(|index| RETRY_DELAYS.get(index)) {
            tokio::time::sleep(*delay).await;
        }
        let mut request = http.post(url.clone()).json(message);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(%event_id, "forwarded");
                return;
            }
            Ok(response) => {
                let status = response.status();
                if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                    tracing::warn!(%event_id, %status, "the outbound URL refused a message; not retried");
                    return;
                }
                tracing::info!(%event_id, %status, attempt, "the outbound URL failed; will retry");
            }
            Err(error) => tracing::info!(%event_id, %error, attempt, "cannot reach the outbound URL"),
        }
    }
    tracing::warn!(%event_id, "giving up forwarding a message");
}
