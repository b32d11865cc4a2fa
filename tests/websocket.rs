//! The WebSocket transport: updates pushed as they happen, requests answered by `id`,
//! reconnecting with `since`, slow clients closed, bad requests refused.

use std::time::Duration;

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, enc, join, send_text},
};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue, protocol::frame::coding::CloseCode},
};

const PATH: &str = "/_matrix/client/unstable/io.hearth.websocket/stream";

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(server: &TestServer, who: &Session, query: &str) -> Socket {
    let url = format!("ws://{}{PATH}?access_token={}&{query}", server.addr, who.access_token);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("m.json"));
    let (socket, response) = connect_async(request).await.expect("WebSocket connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], "m.json");
    socket
}

/// The next JSON frame (within a few seconds).
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Reads frames until one satisfies `wanted`.
async fn until(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let frame = next_json(socket).await;
        if wanted(&frame) {
            return frame;
        }
    }
}

pub(crate) async fn request(socket: &mut Socket, id: &str, method: &str, params: Value) -> Value {
    let frame = json!({ "id": id, "method": method, "params": params });
    socket.send(Message::text(frame.to_string())).await.unwrap();
    until(socket, |frame| frame["id"] == id).await
}

fn messages_in(frame: &Value, room: &str) -> Vec<String> {
    frame["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn updates_are_pushed_as_they_happen() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let mut socket = connect(&server, &bob, "").await;
    // First the initial sync.
    let initial = next_json(&mut socket).await;
    assert!(initial["next_batch"].is_string());
    assert!(initial["rooms"]["join"].get(&room).is_some());

    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hearth_websockets_open 1"), "{metrics}");
    assert!(metrics.contains("hearth_sync_waiters"), "{metrics}");
    send_text(&server, &alice, &room, "t1", "pushed").await;
    let update = until(&mut socket, |f| !messages_in(f, &room).is_empty()).await;
    assert_eq!(messages_in(&update, &room), ["pushed"]);
    server
        .put(
            &format!("{V3}/rooms/{room}/typing/{}", alice.user_id),
            alice.token(),
            json!({ "typing": true, "timeout": 5000 }),
        )
        .await;
    let typing = until(&mut socket, |f| {
        f["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.typing"))
    })
    .await;
    assert!(typing.to_string().contains(&alice.user_id));
}

#[tokio::test]
async fn requests_are_answered_by_id() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let mut socket = connect(&server, &alice, "").await;
    next_json(&mut socket).await;

    assert_eq!(request(&mut socket, "p", "ping", json!({})).await["result"], json!({}));
    let content = json!({ "msgtype": "m.text", "body": "over the socket" });
    let sent = request(
        &mut socket,
        "txn-1",
        "send",
        json!({ "room_id": room, "event_type": "m.room.message", "content": content }),
    )
    .await;
    let event_id = sent["result"]["event_id"].as_str().expect("event_id").to_owned();
    // The id is the transaction ID: a resend does not send twice.
    let again = request(
        &mut socket,
        "txn-1",
        "send",
        json!({ "room_id": room, "event_type": "m.room.message", "content": content }),
    )
    .await;
    assert_eq!(again["result"]["event_id"], event_id.as_str());
    let (_, page) = server
        .get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5"), bob.token())
        .await;
    let copies = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["body"] == "over the socket")
        .count();
    assert_eq!(copies, 1);

    let topic = request(
        &mut socket,
        "s",
        "state",
        json!({ "room_id": room, "event_type": "m.room.topic", "state_key": "", "content": { "topic": "ws" } }),
    )
    .await;
    assert!(topic["result"]["event_id"].is_string(), "{topic}");
    let typing = request(
        &mut socket,
        "t",
        "typing",
        json!({ "room_id": room, "typing": true, "timeout": 1000 }),
    )
    .await;
    assert_eq!(typing["result"], json!({}));
    let receipt = request(
        &mut socket,
        "r",
        "receipt",
        json!({ "room_id": room, "event_id": event_id, "receipt_type": "m.read" }),
    )
    .await;
    assert_eq!(receipt["result"], json!({}), "{receipt}");
    let (_, state) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.topic/"), bob.token())
        .await;
    assert_eq!(state["topic"], "ws");
    let (_, event) = server
        .get(&format!("{V3}/rooms/{room}/event/{}", enc(&event_id)), bob.token())
        .await;
    assert_eq!(event["content"]["body"], "over the socket");
}

#[tokio::test]
async fn bad_requests_get_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut socket = connect(&server, &bob, "").await;
    next_json(&mut socket).await;
    let errcode = |frame: &Value| frame["error"]["errcode"].as_str().unwrap_or_default().to_owned();

    let unknown = request(&mut socket, "1", "dance", json!({})).await;
    assert_eq!(errcode(&unknown), "M_UNRECOGNIZED");
    let missing = request(&mut socket, "2", "send", json!({ "room_id": room })).await;
    assert_eq!(errcode(&missing), "M_MISSING_PARAM");
    let content = json!({ "msgtype": "m.text", "body": "intruder" });
    let forbidden = request(
        &mut socket,
        "3",
        "send",
        json!({ "room_id": room, "event_type": "m.room.message", "content": content }),
    )
    .await;
    assert_eq!(errcode(&forbidden), "M_FORBIDDEN");
    let typing = request(&mut socket, "4", "typing", json!({ "room_id": room, "typing": true })).await;
    assert_eq!(errcode(&typing), "M_FORBIDDEN");
    let bad_room = request(
        &mut socket,
        "5",
        "send",
        json!({ "room_id": "nope", "event_type": "m", "content": {} }),
    )
    .await;
    assert_eq!(errcode(&bad_room), "M_INVALID_PARAM");
    socket.send(Message::text("{not json")).await.unwrap();
    let not_json = until(&mut socket, |f| f.get("error").is_some()).await;
    assert_eq!(errcode(&not_json), "M_NOT_JSON");
    let (_, page) = server
        .get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50"), alice.token())
        .await;
    assert!(!page.to_string().contains("intruder"));
}

#[tokio::test]
async fn a_reconnect_with_since_loses_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut socket = connect(&server, &alice, "").await;
    let since = next_json(&mut socket).await["next_batch"].as_str().unwrap().to_owned();
    socket.close(None).await.unwrap();
    drop(socket);
    for i in 0..5 {
        send_text(&server, &alice, &room, &format!("t{i}"), &format!("while away {i}")).await;
    }
    let mut socket = connect(&server, &alice, &format!("since={since}")).await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.extend(messages_in(&next_json(&mut socket).await, &room));
    }
    let expected: Vec<String> = (0..5).map(|i| format!("while away {i}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_with_a_reason() {
    let server = TestServer::start_with(|config| config.sync.websocket_buffer = 1).await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut socket = connect(&server, &alice, "").await;
    next_json(&mut socket).await;
    // Flood the socket without reading it: large messages fill the network buffers, then
    // the server's bounded queue.
    let filler = "x".repeat(60_000);
    for i in 0..400 {
        let (status, body) = send_text(&server, &alice, &room, &format!("f{i}"), &filler).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut close = None;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        match message {
            Ok(Message::Close(frame)) => {
                close = frame;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("Too slow"), "{}", close.reason);
}

#[tokio::test]
async fn logging_out_closes_the_socket() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut socket = connect(&server, &alice, "").await;
    next_json(&mut socket).await;
    server.post(&format!("{V3}/logout"), alice.token(), json!({})).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("closed within 10 s");
    assert!(closed.unwrap_or_default().contains("no longer valid"));
}

#[tokio::test]
async fn handshakes_without_a_session_or_the_protocol_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // Not a WebSocket request at all.
    let plain = server.get(PATH, alice.token()).await;
    assert_error(&plain, StatusCode::BAD_REQUEST, "M_UNRECOGNIZED");
    // No token.
    let url = format!("ws://{}{PATH}", server.addr);
    let refused = connect_async(url).await.expect_err("refused");
    assert!(refused.to_string().contains("401"), "{refused}");
    // A token, but a subprotocol we do not speak.
    let url = format!("ws://{}{PATH}?access_token={}", server.addr, alice.access_token);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("m.cbor"));
    let refused = connect_async(request).await.expect_err("refused");
    assert!(refused.to_string().contains("400"), "{refused}");
    // A bad since token.
    let url = format!(
        "ws://{}{PATH}?access_token={}&since=garbage",
        server.addr, alice.access_token
    );
    assert!(connect_async(url).await.is_err());
}

#[tokio::test]
async fn send_needs_a_string_id_and_does_not_share_rest_transaction_ids() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (_, rest) = send_text(&server, &alice, &room, "shared", "over REST").await;
    let mut socket = connect(&server, &alice, "").await;
    next_json(&mut socket).await;
    let content = json!({ "msgtype": "m.text", "body": "over the socket" });
    let params = json!({ "room_id": room, "event_type": "m.room.message", "content": content });
    let frame = json!({ "id": 7, "method": "send", "params": params });
    socket.send(Message::text(frame.to_string())).await.unwrap();
    let numeric = until(&mut socket, |f| f["id"] == 7).await;
    assert_eq!(numeric["error"]["errcode"], "M_BAD_JSON");
    let sent = request(&mut socket, "shared", "send", params).await;
    assert_ne!(
        sent["result"]["event_id"], rest["event_id"],
        "a REST transaction ID swallowed a WebSocket send"
    );
}

#[tokio::test]
async fn to_device_messages_are_pushed_and_kept_until_a_reconnect_acknowledges_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut socket = connect(&server, &bob, "").await;
    let first = next_json(&mut socket).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = server
        .put(
            &format!("{V3}/sendToDevice/m.dummy/t1"),
            alice.token(),
            json!({ "messages": { &bob.user_id: { &bob.device_id: { "n": 1 } } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let pushed = next_json(&mut socket).await;
    assert_eq!(pushed["to_device"]["events"][0]["content"]["n"], 1, "{pushed}");
    drop(socket);
    // The push proved nothing: reconnecting from the earlier token gets the message again;
    // reconnecting from the pushed token acknowledges it.
    let mut socket = connect(&server, &bob, &format!("since={since}")).await;
    let again = next_json(&mut socket).await;
    assert_eq!(again["to_device"]["events"][0]["content"]["n"], 1, "{again}");
    drop(socket);
    let next = pushed["next_batch"].as_str().unwrap();
    let mut socket = connect(&server, &bob, &format!("since={next}")).await;
    socket
        .send(Message::text(json!({ "id": "p", "method": "ping" }).to_string()))
        .await
        .unwrap();
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["id"], "p", "nothing pushed before the ping's reply: {reply}");
    // The acknowledgement is the socket's first computation; wait for it.
    let mut body = Value::Null;
    for _ in 0..50 {
        body = server.get(&format!("{V3}/sync?since={since}"), bob.token()).await.1;
        if body["to_device"]["events"] == json!([]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("acknowledged messages are deleted: {body}");
}
