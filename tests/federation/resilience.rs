//! Federation through failures: a server that was down gets what it missed, in order, once;
//! servers cut off from each other that changed the same state settle on the same state
//! when they meet again.

use std::net::SocketAddr;

use hearth::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    history::{bodies, page_back},
    say, wait_for_membership, wait_for_message,
};
use crate::common::{
    TestServer,
    federation::{NAMES, TestCa, start_federated},
};

/// Destinations retried within a second, so a test does not wait out a long backoff.
fn quick_retries(_: usize, config: &mut Config) {
    config.federation.max_retry_interval_secs = 1;
    // These tests are about forks and outages, not fast joins: a join brings the whole state,
    // so nothing waits on a background state fetch (which a loaded machine can slow past the
    // waits below).
    config.federation.partial_state_joins = false;
}

async fn join(server: &TestServer, token: &str, room_id: &str) {
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{room_id}?via={}", NAMES[0]),
            Some(token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_server_that_was_down_gets_everything_it_missed_in_order_and_once() {
    let ca = TestCa::new();
    let mut servers = start_federated(3, &ca, &[], quick_retries).await;
    let c = servers.pop().unwrap();
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    join(&b, &bob.access_token, &room_id).await;
    join(&c, &carol.access_token, &room_id).await;
    wait_for_membership(&b, &bob.access_token, &room_id, &carol.user_id, "join").await;

    let c = c.stop_for_now().await;
    // Alice and bob talk in turns, each message after the other's.
    let mut sent = Vec::new();
    for i in 0..10 {
        let body = format!("m-{i:02}");
        let (speaker, token, listener, listener_token) = if i % 2 == 0 {
            (&a, &alice.access_token, &b, &bob.access_token)
        } else {
            (&b, &bob.access_token, &a, &alice.access_token)
        };
        say(speaker, token, &room_id, &body).await;
        wait_for_message(listener, listener_token, &room_id, &body).await;
        sent.push(body);
    }
    let c = c.start().await;
    wait_for_message(&c, &carol.access_token, &room_id, "m-09").await;
    let (events, _) = page_back(&c, &carol.access_token, &room_id, 100).await;
    let expected: Vec<&str> = sent.iter().rev().map(String::as_str).collect();
    assert_eq!(bodies(&events), expected, "every message once, in order");
    let ids: Vec<&Value> = events.iter().map(|e| &e["event_id"]).collect();
    let mut unique = ids.clone();
    unique.sort_by_key(|id| id.to_string());
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    // And carol talks again, seen on both other servers.
    say(&c, &carol.access_token, &room_id, "back").await;
    wait_for_message(&a, &alice.access_token, &room_id, "back").await;
    wait_for_message(&b, &bob.access_token, &room_id, "back").await;
}

/// The room's full state as `(type, state_key, event_id)`, sorted.
async fn state_ids(server: &TestServer, token: &str, room_id: &str) -> Vec<(String, String, String)> {
    let (status, state) = server
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let mut ids: Vec<(String, String, String)> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["state_key"].as_str().unwrap().to_owned(),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ids.sort();
    ids
}

async fn state_content(server: &TestServer, token: &str, room_id: &str, kind: &str, key: &str) -> Value {
    let (status, content) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/{kind}/{key}"),
            Some(token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{content}");
    content
}

async fn put_state(server: &TestServer, token: &str, room_id: &str, kind: &str, content: Value) {
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/{kind}/"),
            Some(token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn servers_cut_off_from_each_other_settle_on_the_same_state() {
    let ca = TestCa::new();
    let mut servers = start_federated(2, &ca, &[], quick_retries).await;
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let peers: Vec<(String, SocketAddr)> = vec![
        (NAMES[0].to_owned(), a.federation_addr.unwrap()),
        (NAMES[1].to_owned(), b.federation_addr.unwrap()),
    ];
    let alice = a.register("alice").await;
    let xavier = a.register("xavier").await;
    let bob = b.register("bob").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "name": "Before" }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    join(&b, &bob.access_token, &room_id).await;
    join(&a, &xavier.access_token, &room_id).await;
    let mut levels = state_content(&a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    levels["users"][&bob.user_id] = json!(100);
    put_state(&a, &alice.access_token, &room_id, "m.room.power_levels", levels).await;
    wait_for_membership(&b, &bob.access_token, &room_id, &xavier.user_id, "join").await;
    let mut promoted = false;
    for _ in 0..300 {
        let levels = state_content(&b, &bob.access_token, &room_id, "m.room.power_levels", "").await;
        promoted = levels["users"][&bob.user_id] == 100;
        if promoted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(promoted, "bob's power level reached B within 30 s");

    // The cut: each server's way to the other leads nowhere.
    let cut = |config: &mut Config| {
        for address in config.federation.destination_overrides.values_mut() {
            *address = "127.0.0.1:9".to_owned();
        }
    };
    let a = a.restart_with(cut).await;
    let b = b.restart_with(cut).await;

    // Both sides change the name, the power levels and xavier's membership.
    put_state(
        &a,
        &alice.access_token,
        &room_id,
        "m.room.name",
        json!({ "name": "From A" }),
    )
    .await;
    let mut levels = state_content(&a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    levels["users"]["@dave:hearth-a.test"] = json!(50);
    put_state(&a, &alice.access_token, &room_id, "m.room.power_levels", levels).await;
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/kick"),
            Some(&alice.access_token),
            json!({ "user_id": xavier.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    put_state(
        &b,
        &bob.access_token,
        &room_id,
        "m.room.name",
        json!({ "name": "From B" }),
    )
    .await;
    let mut levels = state_content(&b, &bob.access_token, &room_id, "m.room.power_levels", "").await;
    levels["users"]["@erin:hearth-b.test"] = json!(50);
    put_state(&b, &bob.access_token, &room_id, "m.room.power_levels", levels).await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/ban"),
            Some(&bob.access_token),
            json!({ "user_id": xavier.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(
        state_ids(&a, &alice.access_token, &room_id).await,
        state_ids(&b, &bob.access_token, &room_id).await
    );

    // The cut heals: the queued events cross, and each server resolves the fork.
    let heal = |config: &mut Config| {
        config.federation.destination_overrides = peers
            .iter()
            .map(|(name, address)| (name.clone(), address.to_string()))
            .collect();
    };
    let a = a.restart_with(heal).await;
    let b = b.restart_with(heal).await;
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..300 {
        last = (
            state_ids(&a, &alice.access_token, &room_id).await,
            state_ids(&b, &bob.access_token, &room_id).await,
        );
        if last.0 == last.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, last.1, "both servers report the same current state");
    let name = state_content(&a, &alice.access_token, &room_id, "m.room.name", "").await;
    assert!(name["name"] == "From A" || name["name"] == "From B", "{name}");
    let member = state_content(&b, &bob.access_token, &room_id, "m.room.member", &xavier.user_id).await;
    assert!(
        member["membership"] == "leave" || member["membership"] == "ban",
        "{member}"
    );

    // The room goes on from the merged state: a message from each side reaches the other.
    say(&a, &alice.access_token, &room_id, "merged-a").await;
    say(&b, &bob.access_token, &room_id, "merged-b").await;
    wait_for_message(&b, &bob.access_token, &room_id, "merged-a").await;
    wait_for_message(&a, &alice.access_token, &room_id, "merged-b").await;
    assert_eq!(
        state_ids(&a, &alice.access_token, &room_id).await,
        state_ids(&b, &bob.access_token, &room_id).await
    );
}
