//! The client-server API as an appservice uses it: plain HTTP requests carrying
//! `Authorization: Bearer <as_token>`. Without `?user_id=` a request acts as the bot (the
//! registration's `sender_localpart`); with it, as a user in the appservice's namespace.
//!
//! Each call is spelled out as the spec's method and path, so this file doubles as a list
//! of what a simple appservice needs from its homeserver.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{Method, StatusCode};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::room::message::RoomMessageEventContent};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use url::Url;

/// A request to the homeserver that may not be answered (a slow join over federation)
/// gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    #[error("cannot reach the homeserver: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("the homeserver answered {status} {errcode}: {message}")]
    Refused {
        status: StatusCode,
        errcode: String,
        message: String,
    },
}

/// The fields of the homeserver's answers that we read. (ruma's client-api crate has the
/// full types; the examples leave it out so that each call stays visible as plain HTTP.)
#[derive(Deserialize)]
pub struct RoomIdAnswer {
    pub room_id: OwnedRoomId,
}

#[derive(Deserialize)]
pub struct EventIdAnswer {
    pub event_id: OwnedEventId,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    errcode: String,
    #[serde(default)]
    error: String,
}

/// Our connection to the homeserver.
pub struct Homeserver {
    http: reqwest::Client,
    base_url: Url,
    as_token: String,
    /// The appservice's own user, `@<sender_localpart>:<server_name>`.
    pub bot: OwnedUserId,
    /// Send transaction IDs must not repeat for a user while the homeserver remembers them
    /// (it would take a repeat for a retry and drop it): the start time in milliseconds plus
    /// a counter keeps them apart across restarts too.
    txn_prefix: u128,
    txn_counter: AtomicU64,
}

impl Homeserver {
    /// Needs the crypto provider installed ([`super::install_crypto_provider`]).
    pub fn new(base_url: Url, as_token: String, bot: OwnedUserId) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !base_url.cannot_be_a_base(),
            "homeserver_url {base_url} is not an http(s) URL"
        );
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(Self {
            http,
            base_url,
            as_token,
            bot,
            txn_prefix: started.as_millis(),
            txn_counter: AtomicU64::new(0),
        })
    }

    /// The URL of an endpoint: each segment percent-encoded (room IDs and aliases hold `!`,
    /// `#` and `:`), and `?user_id=` when acting as one of our users.
    pub fn endpoint(&self, segments: &[&str], as_user: Option<&UserId>) -> Url {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("checked in Homeserver::new: the base URL has a path")
            .pop_if_empty()
            .extend(segments);
        if let Some(user) = as_user {
            url.query_pairs_mut().append_pair("user_id", user.as_str());
        }
        url
    }

    /// Sends one request with the `as_token`; a non-2xx answer becomes
    /// [`HomeserverError::Refused`] with the Matrix error code.
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, HomeserverError> {
        tracing::debug!(%method, path = url.path(), "calling the homeserver");
        let mut request = self.http.request(method, url).bearer_auth(&self.as_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let text = response.text().await.unwrap_or_default();
        let answer = serde_json::from_str::<ErrorAnswer>(&text).unwrap_or(ErrorAnswer {
            errcode: "M_UNKNOWN".to_owned(),
            error: text,
        });
        Err(HomeserverError::Refused {
            status,
            errcode: answer.errcode,
            message: answer.error,
        })
    }

    /// A transaction ID for a send that nothing else uses.
    pub fn next_txn_id(&self) -> String {
        let counter = self.txn_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{counter}", self.txn_prefix)
    }

    /// `POST /_matrix/client/v3/join/{roomIdOrAlias}`: joins as the bot or `as_user`; works
    /// when invited or when the room is public, and again when already joined.
    pub async fn join(&self, room: &str, as_user: Option<&UserId>) -> Result<OwnedRoomId, HomeserverError> {
        let url = self.endpoint(&["_matrix", "client", "v3", "join", room], as_user);
        let answer: RoomIdAnswer = self.call(Method::POST, url, Some(&serde_json::json!({}))).await?;
        Ok(answer.room_id)
    }

    /// `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}`.
    pub async fn send_message(
        &self,
        room_id: &RoomId,
        content: &RoomMessageEventContent,
        as_user: Option<&UserId>,
    ) -> Result<OwnedEventId, HomeserverError> {
        let txn_id = self.next_txn_id();
        let segments = [
            "_matrix",
            "client",
            "v3",
            "rooms",
            room_id.as_str(),
            "send",
            "m.room.message",
            &txn_id,
        ];
        let url = self.endpoint(&segments, as_user);
        let answer: EventIdAnswer = self.call(Method::PUT, url, Some(content)).await?;
        Ok(answer.event_id)
    }

    /// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: asks the homeserver to call
    /// our `/_matrix/app/v1/ping`, proving both directions work and both tokens are right.
    /// Returns how long the homeserver's call to us took.
    pub async fn ping(&self, appservice_id: &str) -> Result<u64, HomeserverError> {
        #[derive(Deserialize)]
        struct PingAnswer {
            duration_ms: u64,
        }
        let url = self.endpoint(&["_matrix", "client", "v1", "appservice", appservice_id, "ping"], None);
        let body = serde_json::json!({ "transaction_id": self.next_txn_id() });
        let answer: PingAnswer = self.call(Method::POST, url, Some(&body)).await?;
        Ok(answer.duration_ms)
    }
}

/// Calls [`Homeserver::ping`] and logs the outcome; for start-up, once the appservice API is
/// listening. A failure is logged, not fatal: the homeserver may simply be starting too.
pub async fn log_ping(homeserver: &Homeserver, appservice_id: &str) {
    match homeserver.ping(appservice_id).await {
        Ok(duration_ms) => tracing::info!(duration_ms, "the homeserver reaches us with the right hs_token"),
        Err(error) => tracing::warn!(%error, "the homeserver's ping of this appservice failed"),
    }
}
