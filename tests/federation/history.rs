//! History across servers: a user who joins a room of another server late pages back past
//! their join, and their server fetches the older history (`/backfill`) as visibility allows.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{say, wait_for_message};
use crate::common::{
    TestServer,
    federation::{NAMES, TestCa, start_federated},
};

/// Pages `/messages` backwards from the newest event to the start; returns every event, newest
/// first, and the number of pages.
pub(super) async fn page_back(server: &TestServer, token: &str, room_id: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for page in 1..=100 {
        let query = match &from {
            Some(from) => format!("dir=b&limit={limit}&from={from}"),
            None => format!("dir=b&limit={limit}"),
        };
        let (status, body) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room_id}/messages?{query}"),
                Some(token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        events.extend(body["chunk"].as_array().unwrap().iter().cloned());
        match body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return (events, page),
        }
    }
    panic!("pagination never ended");
}

pub(super) fn bodies(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect()
}

#[tokio::test]
async fn a_late_joiner_pages_back_through_history_fetched_from_the_rooms_server() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "name": "Old times" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    for i in 0..25 {
        say(a, &alice.access_token, &room_id, &format!("old-{i:02}")).await;
    }
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{room_id}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    say(a, &alice.access_token, &room_id, "new-00").await;
    wait_for_message(b, &bob.access_token, &room_id, "new-00").await;

    // Shared history: bob sees everything, newest first, in pages of 7, down to the room's
    // creation; the same as alice on the room's own server.
    let (events, pages) = page_back(b, &bob.access_token, &room_id, 7).await;
    let mut expected: Vec<String> = (0..25).rev().map(|i| format!("old-{i:02}")).collect();
    expected.insert(0, "new-00".to_owned());
    assert_eq!(bodies(&events), expected, "{events:#?}");
    assert!(pages > 4, "{pages} pages");
    assert_eq!(events.last().unwrap()["type"], "m.room.create", "{:#?}", events.last());
    let (on_a, _) = page_back(a, &alice.access_token, &room_id, 50).await;
    let ids = |events: &[Value]| events.iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&events),
        ids(&on_a),
        "both servers show the same history in the same order"
    );

    // Paging again reads what is now held, without asking A.
    let (again, _) = page_back(b, &bob.access_token, &room_id, 100).await;
    assert_eq!(ids(&again), ids(&events));
    // A page of history that names a malformed token is a clear 400.
    let (status, body) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&from=s-x"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_late_joiner_of_a_joined_only_room_sees_nothing_from_before_the_join() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = b.register("carol").await;
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({
                "preset": "public_chat",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        say(a, &alice.access_token, &room_id, &format!("secret-{i}")).await;
    }
    for user in [&bob, &carol] {
        let (status, body) = b
            .post(
                &format!("/_matrix/client/v3/join/{room_id}?via={}", NAMES[0]),
                Some(&user.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    say(a, &alice.access_token, &room_id, "after-join").await;
    wait_for_message(b, &bob.access_token, &room_id, "after-join").await;
    let (events, _) = page_back(b, &bob.access_token, &room_id, 10).await;
    assert_eq!(bodies(&events), vec!["after-join"], "{events:#?}");
    // Nor can B's server read the secrets from A: it gets them redacted.
    let (on_a, _) = page_back(a, &alice.access_token, &room_id, 50).await;
    let secret = on_a.iter().find(|e| e["content"]["body"] == "secret-0").unwrap();
    let (status, body) = b
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room_id}/event/{}",
                secret["event_id"].as_str().unwrap()
            ),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
