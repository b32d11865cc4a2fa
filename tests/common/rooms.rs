//! Room helpers shared by the room test files.

#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Session, TestServer};

pub const V3: &str = "/_matrix/client/v3";

pub async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (status, body) = server.post(&format!("{V3}/createRoom"), who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "createRoom: {body}");
    body["room_id"].as_str().unwrap().to_owned()
}

pub async fn send_text(server: &TestServer, who: &Session, room: &str, txn: &str, text: &str) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            who.token(),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await
}

/// Percent-encodes an ID for a URL path (v3 event IDs may hold `/` and `+`).
pub fn enc(id: &str) -> String {
    id.replace('%', "%25")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('#', "%23")
        .replace('?', "%3F")
}

pub async fn join(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    server
        .post(&format!("{V3}/rooms/{room}/join"), who.token(), json!({}))
        .await
}

pub async fn messages(server: &TestServer, who: &Session, room: &str, query: &str) -> (StatusCode, Value) {
    server
        .get(&format!("{V3}/rooms/{room}/messages?{query}"), who.token())
        .await
}

/// `GET /sync` with a query string (`since=...&timeout=...`); asserts success.
pub async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server.get(&format!("{V3}/sync?{query}"), who.token()).await;
    assert_eq!(status, StatusCode::OK, "sync: {body}");
    body
}

/// The events of one section of a joined room in a sync response (`timeline`, `state`,
/// `ephemeral`, `account_data`).
pub fn room_events<'a>(body: &'a Value, room: &str, section: &str) -> &'a [Value] {
    body["rooms"]["join"][room][section]["events"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// Percent-encodes a query parameter value.
pub fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
