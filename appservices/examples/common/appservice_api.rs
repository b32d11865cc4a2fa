//! The application service API: what the homeserver calls on us (`/_matrix/app/v1/...`).
//!
//! Transactions are answered as soon as their events are queued; one worker task hands the
//! events to the example's [`EventHandler`] in the order the homeserver sent them. A slow
//! reply to the homeserver would hold up every later transaction (it sends them one at a
//! time), and handling an event usually means calling the homeserver back.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    routing::{get, post, put},
};
use http::StatusCode;
use ruma::{
    api::appservice::{
        event::push_events,
        ping::send_ping,
        query::{query_room_alias, query_user_id},
    },
    events::AnyTimelineEvent,
    serde::Raw,
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    auth::FromHomeserver,
    error::MatrixError,
    ruma_axum::{Ruma, RumaResponse},
    transactions::RecentTransactions,
};

/// What an appservice does with the events the homeserver pushes to it.
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event; called for one event at a time, in the homeserver's order.
    fn handle_event(&self, event: AnyTimelineEvent) -> impl Future<Output = ()> + Send;
}

/// Transactions taken but not yet handled; past this, answering waits (and so does the
/// homeserver), which is the back-pressure we want.
const QUEUED_TRANSACTIONS: usize = 64;

/// How many transaction IDs we remember to recognise a retry.
const REMEMBERED_TRANSACTIONS: usize = 1024;

/// What the appservice API handlers share.
pub struct ApiState {
    /// The token the homeserver must present.
    pub(super) hs_token: String,
    recent: Mutex<RecentTransactions>,
    events: mpsc::Sender<Vec<Raw<AnyTimelineEvent>>>,
}

/// The appservice API's routes, and the worker that feeds `handler`. The worker ends once
/// the router (all its clones) is dropped and the queue is drained; await it at shutdown.
pub fn routes<H: EventHandler>(hs_token: String, handler: Arc<H>) -> (Router, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(QUEUED_TRANSACTIONS);
    let worker = tokio::spawn(handle_events(receiver, handler));
    let api = Arc::new(ApiState {
        hs_token,
        recent: Mutex::new(RecentTransactions::new(REMEMBERED_TRANSACTIONS)),
        events: sender,
    });
    let router = Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(push_events))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user_id}", get(query_user))
        .route("/_matrix/app/v1/rooms/{room_alias}", get(query_room))
        .fallback(unknown_endpoint)
        .with_state(api);
    (router, worker)
}

/// `PUT /_matrix/app/v1/transactions/{txnId}`: queues the events; a repeated `txnId` is
/// answered 200 again without queueing them twice.
async fn push_events(
    State(api): State<Arc<ApiState>>,
    _: FromHomeserver,
    Ruma(request): Ruma<push_events::v1::Request>,
) -> Result<RumaResponse<push_events::v1::Response>, MatrixError> {
    let txn_id = request.txn_id.as_str();
    let is_new = api.recent.lock().map_err(|_| internal_error())?.insert(txn_id);
    if !is_new {
        tracing::debug!(txn_id, "repeated transaction; already taken");
        return Ok(RumaResponse(push_events::v1::Response::new()));
    }
    tracing::debug!(txn_id, events = request.events.len(), "transaction");
    if api.events.send(request.events).await.is_err() {
        // The worker is gone: we are shutting down. Not taken, so the retry must count.
        if let Ok(mut recent) = api.recent.lock() {
            recent.remove(txn_id);
        }
        return Err(MatrixError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "Shutting down",
        ));
    }
    Ok(RumaResponse(push_events::v1::Response::new()))
}

/// `POST /_matrix/app/v1/ping`: the homeserver checking that it reaches us with the right
/// token (it calls this when we call its `/_matrix/client/v1/appservice/{id}/ping`).
async fn ping(_: FromHomeserver, Ruma(request): Ruma<send_ping::v1::Request>) -> RumaResponse<send_ping::v1::Response> {
    tracing::debug!(transaction_id = ?request.transaction_id, "pinged by the homeserver");
    RumaResponse(send_ping::v1::Response::new())
}

/// `GET /_matrix/app/v1/users/{userId}`: the homeserver asks whether a user in our namespace
/// exists. These examples create users only when they need them, so: no.
async fn query_user(_: FromHomeserver, Ruma(request): Ruma<query_user_id::v1::Request>) -> MatrixError {
    tracing::debug!(user_id = %request.user_id, "user query");
    MatrixError::not_found("No such user")
}

/// `GET /_matrix/app/v1/rooms/{roomAlias}`: the same for aliases; these examples have none.
async fn query_room(_: FromHomeserver, Ruma(request): Ruma<query_room_alias::v1::Request>) -> MatrixError {
    tracing::debug!(room_alias = %request.room_alias, "room alias query");
    MatrixError::not_found("No such room alias")
}

fn internal_error() -> MatrixError {
    MatrixError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Internal error")
}

/// Any other path: 404 `M_UNRECOGNIZED`, as the spec answers an unknown endpoint (a
/// homeserver that gets it for `/_matrix/app/v1/...` may fall back to the legacy paths).
async fn unknown_endpoint() -> MatrixError {
    MatrixError::unrecognized()
}

/// The worker: parses each event and hands it to the handler, one at a time.
async fn handle_events<H: EventHandler>(mut receiver: mpsc::Receiver<Vec<Raw<AnyTimelineEvent>>>, handler: Arc<H>) {
    while let Some(events) = receiver.recv().await {
        for raw in events {
            match raw.deserialize() {
                Ok(event) => handler.handle_event(event).await,
                // Events of a shape ruma does not know (or redacted beyond use) are skipped.
                Err(error) => tracing::debug!(%error, "skipping an event that does not parse"),
            }
        }
    }
}
