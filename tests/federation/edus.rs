//! What travels between servers beside room events: typing notices, receipts, presence,
//! to-device messages and device lists, between two Hearths; and EDUs a hostile server
//! forges, refused.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{say, wait_for_message};
use crate::common::{
    Session, TestServer,
    federation::{FakeServer, NAMES, TestCa, start_federated},
    keys::{CrossSigning, Device},
};

/// Syncs (incrementally, up to 20 s) until `found` holds for a response; returns it.
async fn wait_sync(server: &TestServer, token: &str, what: &str, found: impl Fn(&Value) -> bool) -> Value {
    wait_sync_from(server, token, &mut None, what, found).await
}

/// [`wait_sync`] from the token `since` (none: an initial sync first), which it moves on.
async fn wait_sync_from(
    server: &TestServer,
    token: &str,
    since: &mut Option<String>,
    what: &str,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let path = match since.as_ref() {
            Some(since) => format!("/_matrix/client/v3/sync?timeout=1000&since={since}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let (status, sync) = server.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{sync}");
        *since = sync["next_batch"].as_str().map(str::to_owned);
        if found(&sync) {
            return sync;
        }
        seen.push(sync.clone());
    }
    panic!("{what} never showed on {}: {seen:?}", server.server_name());
}

/// The room's ephemeral events of `kind` in a sync response.
fn ephemeral<'a>(sync: &'a Value, room_id: &str, kind: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room_id]["ephemeral"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == kind).collect())
        .unwrap_or_default()
}

/// A public room on A with alice, joined by bob of B; returns its ID.
async fn shared_room(a: &TestServer, alice: &Session, b: &TestServer, bob: &Session, alias: &str) -> String {
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_alias_name": alias }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let (status, joined) = b
        .post(
            &format!("/_matrix/client/v3/join/%23{alias}:{}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    super::wait_for_membership(a, &alice.access_token, &room_id, &bob.user_id, "join").await;
    room_id
}

#[tokio::test]
async fn typing_receipts_and_presence_reach_the_other_server() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room_id = shared_room(a, &alice, b, &bob, "edus").await;

    // Typing, started and stopped on A, seen by bob on B.
    let typing = format!("/_matrix/client/v3/rooms/{room_id}/typing/{}", alice.user_id);
    let (status, body) = a
        .put(
            &typing,
            Some(&alice.access_token),
            json!({ "typing": true, "timeout": 30000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One token throughout: the stop may arrive before a fresh initial sync would look.
    let mut since = None;
    wait_sync_from(b, &bob.access_token, &mut since, "alice typing", |sync| {
        ephemeral(sync, &room_id, "m.typing")
            .iter()
            .any(|e| e["content"]["user_ids"] == json!([alice.user_id]))
    })
    .await;
    let (status, _) = a
        .put(&typing, Some(&alice.access_token), json!({ "typing": false }))
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_sync_from(b, &bob.access_token, &mut since, "alice stopping", |sync| {
        ephemeral(sync, &room_id, "m.typing")
            .iter()
            .any(|e| e["content"]["user_ids"] == json!([]))
    })
    .await;

    // Three messages from alice; bob's server tells A each was delivered once bob synced.
    for body in ["one", "two", "three"] {
        say(a, &alice.access_token, &room_id, body).await;
    }
    let one = wait_for_message(b, &bob.access_token, &room_id, "one").await;
    let two = wait_for_message(b, &bob.access_token, &room_id, "two").await;
    let three = wait_for_message(b, &bob.access_token, &room_id, "three").await;
    let (one, two, three) = (
        one["event_id"].as_str().unwrap(),
        two["event_id"].as_str().unwrap(),
        three["event_id"].as_str().unwrap(),
    );
    // A sync hands bob the messages: that is what counts as delivered.
    wait_sync(b, &bob.access_token, "the messages", |sync| {
        sync["rooms"]["join"][&room_id]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == three))
    })
    .await;
    wait_sync(a, &alice.access_token, "bob's delivery receipt", |sync| {
        ephemeral(sync, &room_id, "m.receipt")
            .iter()
            .any(|r| r["content"][three]["io.hearth.delivered"][&bob.user_id].is_object())
    })
    .await;

    // A private receipt stays on B; the public one after it reaches A.
    let receipt = |kind: &str, event_id: &str| format!("/_matrix/client/v3/rooms/{room_id}/receipt/{kind}/{event_id}");
    let (status, body) = b
        .post(&receipt("m.read.private", two), Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = b
        .post(&receipt("m.read", one), Some(&bob.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = b
        .post(
            &receipt("m.read", three),
            Some(&bob.access_token),
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_sync(a, &alice.access_token, "bob's read receipt", |sync| {
        ephemeral(sync, &room_id, "m.receipt")
            .iter()
            .any(|r| r["content"][one]["m.read"][&bob.user_id].is_object())
    })
    .await;
    wait_sync(a, &alice.access_token, "bob's threaded read receipt", |sync| {
        ephemeral(sync, &room_id, "m.receipt")
            .iter()
            .any(|r| r["content"][three]["m.read"][&bob.user_id]["thread_id"] == "main")
    })
    .await;
    let (_, everything) = a
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice.access_token))
        .await;
    assert!(
        !everything.to_string().contains("m.read.private"),
        "a private receipt left its server: {everything}"
    );

    // Presence set on B shows on A, to a user sharing a room with bob.
    let (status, body) = b
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", bob.user_id),
            Some(&bob.access_token),
            json!({ "presence": "online", "status_msg": "on a train" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_sync(a, &alice.access_token, "bob's presence", |sync| {
        sync["presence"]["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["status_msg"] == "on a train")
        })
    })
    .await;
    let (status, presence) = a
        .get(
            &format!("/_matrix/client/v3/presence/{}/status", bob.user_id),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{presence}");
    assert_eq!(presence["presence"], "online");
    assert_eq!(presence["status_msg"], "on a train");
}

/// Uploads a device's keys and `count` one-time keys.
async fn upload_keys(server: &TestServer, session: &Session, device: &Device, count: usize) {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/upload",
            Some(&session.access_token),
            json!({
                "device_keys": device.device_keys(),
                "one_time_keys": device.one_time_keys(&session.device_id, count),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn query_keys(server: &TestServer, session: &Session, users: Value) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&session.access_token),
            json!({ "device_keys": users, "timeout": 5000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn keys_and_to_device_messages_cross_servers_and_device_lists_follow_changes() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let alice_device = Device::new(&alice);
    upload_keys(a, &alice, &alice_device, 2).await;
    let bob_device = Device::new(&bob);
    upload_keys(b, &bob, &bob_device, 3).await;
    let cross_signing = CrossSigning::new(&bob.user_id);
    let (status, body) = b
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&bob.access_token),
            cross_signing.upload_body(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room_id = shared_room(a, &alice, b, &bob, "keys").await;

    // Alice's server fetches bob's keys from B: the device keys as bob signed them, and his
    // master key; never his user-signing key.
    let found = query_keys(a, &alice, json!({ bob.user_id.clone(): [] })).await;
    assert_eq!(found["failures"], json!({}), "{found}");
    assert_eq!(
        found["device_keys"][&bob.user_id][&bob.device_id]["keys"],
        bob_device.device_keys()["keys"],
        "{found}"
    );
    assert_eq!(
        found["device_keys"][&bob.user_id][&bob.device_id]["signatures"],
        bob_device.device_keys()["signatures"]
    );
    assert_eq!(
        found["master_keys"][&bob.user_id]["keys"],
        cross_signing.master_json()["keys"]
    );
    assert!(found["self_signing_keys"][&bob.user_id].is_object(), "{found}");
    assert!(found["user_signing_keys"].get(&bob.user_id).is_none(), "{found}");
    // And bob's server fetches alice's.
    let found = query_keys(b, &bob, json!({ alice.user_id.clone(): [alice.device_id.clone()] })).await;
    assert!(
        found["device_keys"][&alice.user_id][&alice.device_id].is_object(),
        "{found}"
    );

    // One-time keys are claimed across servers, each once.
    let claim = json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" } } });
    let mut claimed = Vec::new();
    for _ in 0..2 {
        let (status, body) = a
            .post(
                "/_matrix/client/v3/keys/claim",
                Some(&alice.access_token),
                claim.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let keys = body["one_time_keys"][&bob.user_id][&bob.device_id]
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(keys.len(), 1, "{body}");
        claimed.push(keys.keys().next().unwrap().clone());
    }
    assert_ne!(claimed[0], claimed[1]);

    // A to-device message to bob's device, through the outbound queue; a retried request
    // (same transaction ID) delivers nothing twice.
    let send = "/_matrix/client/v3/sendToDevice/m.room_key_request/txn1";
    let message = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "ping": 1 } } } });
    for _ in 0..2 {
        let (status, body) = a.put(send, Some(&alice.access_token), message.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let sync = wait_sync(b, &bob.access_token, "alice's to-device message", |sync| {
        sync["to_device"]["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty())
    })
    .await;
    let events = sync["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{sync}");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["type"], "m.room_key_request");
    assert_eq!(events[0]["content"]["ping"], 1);
    let since = sync["next_batch"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, later) = b
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
            Some(&bob.access_token),
        )
        .await;
    assert!(
        later["to_device"]["events"].as_array().is_none_or(Vec::is_empty),
        "{later}"
    );

    // Bob logs in on a second device: alice's sync says his devices changed, and a new
    // query shows both.
    let (_, before) = a
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice.access_token))
        .await;
    let since = before["next_batch"].as_str().unwrap().to_owned();
    let (status, login) = b.login("bob", crate::common::PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let phone = Session::from_json(&login);
    let phone_device = Device::new(&phone);
    upload_keys(b, &phone, &phone_device, 1).await;
    let mut since = since;
    let mut changed = false;
    for _ in 0..20 {
        let (_, sync) = a
            .get(
                &format!("/_matrix/client/v3/sync?timeout=1000&since={since}"),
                Some(&alice.access_token),
            )
            .await;
        if sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u == bob.user_id.as_str()))
        {
            changed = true;
        }
        let found = query_keys(a, &alice, json!({ bob.user_id.clone(): [] })).await;
        if changed && found["device_keys"][&bob.user_id][&phone.device_id]["keys"] == phone_device.device_keys()["keys"]
        {
            break;
        }
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    assert!(changed, "alice was never told bob's devices changed");
    let found = query_keys(a, &alice, json!({ bob.user_id.clone(): [] })).await;
    let devices = found["device_keys"][&bob.user_id].as_object().unwrap();
    assert_eq!(devices.len(), 2, "{found}");

    // Bob deletes the phone: alice's server drops it.
    let (status, body) = b
        .post("/_matrix/client/v3/logout", Some(&phone.access_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut gone = false;
    for _ in 0..100 {
        let found = query_keys(a, &alice, json!({ bob.user_id.clone(): [] })).await;
        if found["device_keys"][&bob.user_id].get(&phone.device_id).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "bob's deleted device stayed on A");

    // The list kept on A is served while B is down; a server nobody can reach is a failure.
    let _ = room_id;
    let mut servers = servers;
    let stopped = servers.pop().unwrap().stop_for_now().await;
    let a = &servers[0];
    let found = query_keys(
        a,
        &alice,
        json!({ bob.user_id.clone(): [], "@nobody:nowhere.invalid": [] }),
    )
    .await;
    assert!(
        found["device_keys"][&bob.user_id][&bob.device_id].is_object(),
        "{found}"
    );
    assert!(found["failures"]["nowhere.invalid"].is_object(), "{found}");
    drop(stopped);
}

#[tokio::test]
async fn edus_a_server_forges_are_refused() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let alice_device = Device::new(&alice);
    upload_keys(a, &alice, &alice_device, 1).await;
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_version": "10" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let (_, other) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat" }),
        )
        .await;
    let other_room = other["room_id"].as_str().unwrap().to_owned();
    let mallory = "@mallory:evil.test";
    let (join_id, _) = evil.join(a, &room_id, mallory, "10").await;
    let (_, first) = a
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice.access_token))
        .await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let event_id = first["rooms"]["join"][&room_id]["timeline"]["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let typing = |room: &str, user: &str| json!({ "edu_type": "m.typing", "content": { "room_id": room, "user_id": user, "typing": true } });
    let (status, body) = evil
        .send_edus(
            a,
            "forged-1",
            vec![
                // Alice is not evil's to speak for.
                typing(&room_id, &alice.user_id),
                // Mallory is not in the other room.
                typing(&other_room, "@mallory:evil.test"),
                // Not even a typing notice.
                json!({ "edu_type": "m.typing", "content": { "room_id": 7 } }),
                // Alice's devices are her server's to announce.
                json!({ "edu_type": "m.device_list_update", "content": {
                    "user_id": alice.user_id, "device_id": "EVIL", "stream_id": 99, "prev_id": [],
                    "keys": { "user_id": alice.user_id, "device_id": "EVIL", "algorithms": [], "keys": {} },
                } }),
                // A to-device message in alice's name.
                json!({ "edu_type": "m.direct_to_device", "content": {
                    "sender": alice.user_id, "type": "m.room_key_request", "message_id": "m1",
                    "messages": { alice.user_id.clone(): { "*": { "forged": true } } },
                } }),
                // A read receipt in alice's name.
                json!({ "edu_type": "m.receipt", "content": { room_id.clone(): { "m.read": {
                    alice.user_id.clone(): { "event_ids": [event_id], "data": { "ts": 1 } },
                } } } }),
                // Then one that is fine: mallory typing in her room.
                typing(&room_id, "@mallory:evil.test"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sync = wait_sync(a, &alice.access_token, "mallory typing", |sync| {
        ephemeral(sync, &room_id, "m.typing")
            .iter()
            .any(|e| e["content"]["user_ids"] == json!(["@mallory:evil.test"]))
    })
    .await;
    let (_, since_forged) = a
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
            Some(&alice.access_token),
        )
        .await;
    for seen in [&sync, &since_forged] {
        assert!(ephemeral(seen, &other_room, "m.typing").is_empty(), "{seen}");
        assert!(ephemeral(seen, &room_id, "m.receipt").is_empty(), "{seen}");
        assert!(
            seen["to_device"]["events"].as_array().is_none_or(Vec::is_empty),
            "{seen}"
        );
        assert!(
            ephemeral(seen, &room_id, "m.typing")
                .iter()
                .all(|e| !e["content"]["user_ids"].to_string().contains(&alice.user_id)),
            "{seen}"
        );
    }
    let found = query_keys(a, &alice, json!({ alice.user_id.clone(): [] })).await;
    let devices = found["device_keys"][&alice.user_id].as_object().unwrap();
    assert_eq!(devices.keys().collect::<Vec<_>>(), vec![&alice.device_id], "{found}");

    // What A sends evil (not a Hearth): no delivery receipts (alice's sync hands her
    // mallory's message), never a private receipt.
    let create = super::state_event_id(a, &alice.access_token, &room_id, "m.room.create", "").await;
    let power = super::state_event_id(a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    let (message_id, message) = evil.sign_event(
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": mallory,
            "content": { "msgtype": "m.text", "body": "from mallory" },
            "prev_events": [join_id], "auth_events": [create, power, join_id],
            "depth": 100, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "10",
    );
    let (status, body) = evil.send_transaction(a, "message-1", vec![message]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_sync(a, &alice.access_token, "mallory's message", |sync| {
        sync["rooms"]["join"][&room_id]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == message_id.as_str()))
    })
    .await;
    let last = message_id;
    for kind in ["m.read.private", "m.read"] {
        let (status, body) = a
            .post(
                &format!("/_matrix/client/v3/rooms/{room_id}/receipt/{kind}/{last}"),
                Some(&alice.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for _ in 0..100 {
        if evil
            .received_edus
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["edu_type"] == "m.receipt")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let edus = evil.received_edus.lock().unwrap().clone();
    let receipt = edus
        .iter()
        .find(|e| e["edu_type"] == "m.receipt")
        .expect("alice's read receipt");
    assert!(
        receipt["content"][&room_id]["m.read"][&alice.user_id].is_object(),
        "{receipt}"
    );
    let text = serde_json::to_string(&edus).unwrap();
    assert!(!text.contains("m.read.private"), "{text}");
    assert!(!text.contains("io.hearth.delivered"), "{text}");
}
