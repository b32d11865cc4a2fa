//! The WebSocket transport (`/_matrix/client/unstable/io.hearth.websocket/stream`), after the
//! draft in the spec's attic: the server pushes sync-shaped updates the moment a stream moves;
//! the client sends requests (`ping`, `send`, `state`, `typing`, `receipt`) and gets responses
//! by `id`. See docs/websocket.md.
//!
//! Two tasks serve a socket. The pusher runs the same computation as `/sync` in a loop,
//! waking on the notifier, and queues each non-empty update; the writer drains the queue into
//! the socket. The queue is bounded: a client that cannot keep up is closed with a reason
//! (and reconnects with its last `next_batch`, losing nothing), so it never holds back others
//! or grows the server's memory.

use std::{sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::{SinkExt, StreamExt};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use super::v3::{SyncRequest, compute};
use crate::{
    accounts::{sessions::Sender, tokens::hash_token},
    ephemeral::{
        presence::SyncGuard,
        receipts::{set_fully_read, set_receipt},
    },
    error::{ApiError, ApiResult},
    rooms::{access::require_member, send},
    services::Services,
    storage::now_ms,
};

/// How long one wait for news lasts before the pusher checks the session is still valid.
const WAIT: Duration = Duration::from_secs(30);
/// How often a busy socket re-checks its session at most.
const SESSION_CHECK: Duration = Duration::from_secs(5);
const SESSION_ENDED: &str = "Access token no longer valid";

/// Whether the socket's access token still works (not logged out, deleted, or expired),
/// without touching the device's last-seen record.
async fn session_valid(state: &Services, access_token: &str) -> bool {
    match state.storage.access_token(&hash_token(access_token)).await {
        Ok(Some(info)) => info.expires_ts.is_none_or(|expires| expires > now_ms()),
        Ok(None) => false,
        // A database hiccup is not a logout.
        Err(_) => true,
    }
}

/// A client's request frame.
#[derive(Debug, Deserialize)]
struct Request {
    id: Value,
    method: String,
    #[serde(default, alias = "param")]
    params: Value,
}

/// What leaves the server on one socket.
enum Outgoing {
    Frame(String),
    Close(u16, &'static str),
}

/// Serves one upgraded socket until either side closes.
pub async fn serve(
    state: Services,
    sender: Sender,
    access_token: String,
    request: SyncRequest,
    presence: Option<SyncGuard>,
    socket: WebSocket,
) {
    state.metrics.websockets.inc();
    let (mut sink, mut stream) = socket.split();
    let (queue, mut outgoing) = mpsc::channel::<Outgoing>(state.config.sync.websocket_buffer.max(1));
    let slow = Arc::new(Notify::new());
    let queue = Queue {
        sender: queue,
        slow: Arc::clone(&slow),
    };

    let writer = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                biased;
                () = slow.notified() => Outgoing::Close(close_code::POLICY, TOO_SLOW),
                message = outgoing.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            match message {
                Outgoing::Frame(text) => {
                    // A send blocked on a full network buffer gives way to the close: the
                    // frame stays buffered whole, and the close frame follows it.
                    let sent = tokio::select! {
                        result = sink.send(Message::Text(Utf8Bytes::from(text))) => result.is_ok(),
                        () = slow.notified() => {
                            close(&mut sink, close_code::POLICY, TOO_SLOW).await;
                            break;
                        }
                    };
                    if !sent {
                        break;
                    }
                }
                Outgoing::Close(code, reason) => {
                    close(&mut sink, code, reason).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    let pusher = {
        let state = state.clone();
        let sender = sender.clone();
        let queue = queue.clone();
        let access_token = access_token.clone();
        tokio::spawn(async move { push_updates(state, sender, access_token, request, queue).await })
    };

    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            // The writer gave up (client too slow, socket gone, server stopping).
            () = queue.sender.closed() => break,
        };
        let Some(Ok(message)) = message else {
            break;
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            // Pings are answered by the WebSocket layer; binary frames mean nothing here.
            Message::Binary(_) => {
                let error = error_response(Value::Null, &ApiError::not_json("Frames must be JSON text"));
                if !queue.push(error) {
                    break;
                }
                continue;
            }
            _ => continue,
        };
        // Every request acts as the user: the session must still be valid.
        if !session_valid(&state, &access_token).await {
            queue.close(close_code::POLICY, SESSION_ENDED).await;
            break;
        }
        let response = handle(&state, &sender, text.as_str()).await;
        if !queue.push(response) {
            break;
        }
    }
    pusher.abort();
    drop(queue);
    let _ = writer.await;
    drop(presence);
    state.metrics.websockets.dec();
}

/// The reason a client that does not keep up is closed with.
const TOO_SLOW: &str = "Too slow: updates piled up. Reconnect with the last next_batch.";

/// The bounded queue to the writer, and the alarm that closes a slow client.
#[derive(Clone)]
struct Queue {
    sender: mpsc::Sender<Outgoing>,
    slow: Arc<Notify>,
}

impl Queue {
    /// Queues a frame; a full queue means the client is not reading: it is closed.
    fn push(&self, frame: String) -> bool {
        match self.sender.try_send(Outgoing::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!("closing a WebSocket whose client does not keep up");
                self.slow.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    async fn close(&self, code: u16, reason: &'static str) {
        let _ = self.sender.send(Outgoing::Close(code, reason)).await;
    }
}

/// Sends a close frame, waiting a while for a slow client to read what is ahead of it.
async fn close(sink: &mut (impl SinkExt<Message> + Unpin), code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), sink.send(Message::Close(Some(frame)))).await;
}

/// Pushes every update as it happens, from `request.since` on.
async fn push_updates(state: Services, sender: Sender, access_token: String, mut request: SyncRequest, queue: Queue) {
    let mut keys = match state.listen_keys(&sender.user_id).await {
        Ok(keys) => keys,
        Err(_) => return queue.close(close_code::ERROR, "Server error").await,
    };
    let mut checked = tokio::time::Instant::now();
    loop {
        let listener = state.notifier.listen(keys);
        // Boxed: an idle socket's task then holds a pointer, not the whole computation's state.
        let result = match Box::pin(compute(&state, &sender, &request)).await {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(?error, "WebSocket sync failed");
                return queue.close(close_code::ERROR, "Server error").await;
            }
        };
        if state.notifier.is_closing() {
            return queue.close(close_code::AWAY, "Server shutting down").await;
        }
        // The session is re-checked when a wake brings nothing (ending a session wakes its
        // user), when the user's own devices changed (a logout deletes a device), and every
        // few seconds in a busy stream, so a revoked session stops receiving.
        let own_devices_changed = result.body["device_lists"]["changed"]
            .as_array()
            .is_some_and(|changed| changed.iter().any(|user| user == sender.user_id.as_str()));
        if (result.empty || own_devices_changed || checked.elapsed() >= SESSION_CHECK) && request.since.is_some() {
            if !session_valid(&state, &access_token).await {
                return queue.close(close_code::POLICY, SESSION_ENDED).await;
            }
            checked = tokio::time::Instant::now();
        }
        if (!result.empty || request.since.is_none()) && !queue.push(result.body.to_string()) {
            return;
        }
        // A to-device backlog larger than one batch: send the next batch at once.
        let backlog = result.more_to_device;
        request.since = Some(result.next);
        request.full_state = false;
        keys = result.keys;
        if backlog {
            continue;
        }
        tokio::select! {
            () = listener.changed() => {}
            () = tokio::time::sleep(WAIT) => {}
        }
    }
}

/// Answers one request frame.
async fn handle(state: &Services, sender: &Sender, text: &str) -> String {
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(error) => {
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            let error = match error.classify() {
                serde_json::error::Category::Data => ApiError::bad_json("A request needs an id, a method and params"),
                _ => ApiError::not_json("Request frames must be JSON"),
            };
            return error_response(id, &error);
        }
    };
    // As over HTTP: no NUL in any string (identifiers reach the database as text), no deep
    // nesting.
    if let Err(error) = crate::json::check_json_body(text.as_bytes()) {
        return error_response(request.id, &error.into());
    }
    match run(state, sender, &request).await {
        Ok(result) => json!({ "id": request.id, "result": result }).to_string(),
        Err(error) => error_response(request.id, &error),
    }
}

fn error_response(id: Value, error: &ApiError) -> String {
    let (errcode, message) = error.errcode_and_message();
    json!({ "id": id, "error": { "errcode": errcode, "error": message } }).to_string()
}

fn param<'a>(params: &'a Value, name: &str) -> ApiResult<&'a Value> {
    params
        .get(name)
        .ok_or_else(|| ApiError::missing_param(format!("Missing parameter: {name}")))
}

fn string_param<'a>(params: &'a Value, name: &str) -> ApiResult<&'a str> {
    param(params, name)?
        .as_str()
        .ok_or_else(|| ApiError::bad_json(format!("{name} must be a string")))
}

fn room_param(params: &Value) -> ApiResult<OwnedRoomId> {
    OwnedRoomId::try_from(string_param(params, "room_id")?)
        .map_err(|_| ApiError::invalid_param("room_id is not a valid room ID"))
}

fn content_param(params: &Value) -> ApiResult<Map<String, Value>> {
    param(params, "content")?
        .as_object()
        .cloned()
        .ok_or_else(|| ApiError::bad_json("content must be a JSON object"))
}

async fn run(state: &Services, sender: &Sender, request: &Request) -> ApiResult<Value> {
    let params = &request.params;
    match request.method.as_str() {
        "ping" => Ok(json!({})),
        "send" => {
            // The request ID is the transaction ID: a resent request sends nothing twice.
            let txn_id = match &request.id {
                Value::String(id) if !id.is_empty() => id.clone(),
                _ => return Err(ApiError::bad_json("send needs a string id (its transaction ID)")),
            };
            let room_id = room_param(params)?;
            let event_type = string_param(params, "event_type")?;
            let sent = send::send_message(
                state,
                sender,
                &room_id,
                event_type,
                content_param(params)?,
                crate::rooms::pipeline::Transaction {
                    device_id: sender.device_id.as_str(),
                    endpoint: "ws_send",
                    txn_id: &txn_id,
                },
                None,
            )
            .await?;
            if sent.appended {
                state.presence.active(state, &sender.user_id).await?;
            }
            Ok(json!({ "event_id": sent.event_id }))
        }
        "state" => {
            let room_id = room_param(params)?;
            let event_type = string_param(params, "event_type")?;
            let state_key = string_param(params, "state_key")?;
            let event_id = send::send_state(
                state,
                sender,
                &room_id,
                event_type,
                state_key,
                content_param(params)?,
                None,
            )
            .await?;
            Ok(json!({ "event_id": event_id }))
        }
        "typing" => {
            let room_id = room_param(params)?;
            let typing = param(params, "typing")?
                .as_bool()
                .ok_or_else(|| ApiError::bad_json("typing must be true or false"))?;
            let timeout = match params.get("timeout") {
                None => Duration::from_secs(30),
                Some(value) => Duration::from_millis(
                    value
                        .as_u64()
                        .ok_or_else(|| ApiError::bad_json("timeout must be milliseconds"))?,
                ),
            };
            require_member(state, &room_id, &sender.user_id).await?;
            state
                .typing
                .set(&state.notifier, &room_id, &sender.user_id, typing.then_some(timeout));
            if typing {
                state.presence.active(state, &sender.user_id).await?;
            }
            Ok(json!({}))
        }
        "receipt" => {
            let room_id = room_param(params)?;
            let event_id = string_param(params, "event_id")?;
            let receipt_type = match params.get("receipt_type") {
                None => "m.read",
                Some(value) => value
                    .as_str()
                    .ok_or_else(|| ApiError::bad_json("receipt_type must be a string"))?,
            };
            let thread_id = match params.get("thread_id") {
                None => "",
                Some(value) => value
                    .as_str()
                    .ok_or_else(|| ApiError::bad_json("thread_id must be a string"))?,
            };
            match receipt_type {
                "m.read" | "m.read.private" => {
                    set_receipt(state, &room_id, &sender.user_id, receipt_type, event_id, thread_id).await?;
                    state.presence.active(state, &sender.user_id).await?;
                }
                "m.fully_read" => set_fully_read(state, &room_id, &sender.user_id, event_id).await?,
                other => return Err(ApiError::invalid_param(format!("Unknown receipt type {other}"))),
            }
            Ok(json!({}))
        }
        other => Err(ApiError::unrecognized(
            http::StatusCode::BAD_REQUEST,
            format!("Unknown method {other}"),
        )),
    }
}
