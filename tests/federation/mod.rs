//! Federation between servers on loopback, over TLS from a test CA: keys, the notary,
//! request signatures, and the queries other servers make.

mod directory;
mod edus;
mod history;
mod media;
mod membership;
mod partial;
mod resilience;
mod spaces;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    TestServer,
    federation::{FakeServer, NAMES, TestCa, start_federated},
};

#[tokio::test]
async fn federation_is_off_unless_enabled() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    assert!(server.federation_addr.is_none());
}

#[tokio::test]
async fn a_server_fetches_another_servers_keys_over_tls_and_vouches_for_them() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (_, own) = a.get("/_matrix/key/v2/server", None).await;

    // B, asked as a notary about A, fetches A's keys from A's TLS listener.
    let (status, body) = b
        .post(
            "/_matrix/key/v2/query",
            None,
            json!({ "server_keys": { NAMES[0]: {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let documents = body["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 1, "{body}");
    let document = &documents[0];
    assert_eq!(document["server_name"], NAMES[0]);
    assert_eq!(document["verify_keys"], own["verify_keys"]);
    assert!(
        document["signatures"][NAMES[0]].is_object(),
        "A's own signature is kept: {document}"
    );
    assert!(
        document["signatures"][NAMES[1]].is_object(),
        "B signs as notary: {document}"
    );

    // The GET form, and a notary asked about itself.
    let (status, body) = b.get(&format!("/_matrix/key/v2/query/{}", NAMES[0]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_keys"][0]["server_name"], NAMES[0]);
    let (_, body) = b.get(&format!("/_matrix/key/v2/query/{}", NAMES[1]), None).await;
    assert_eq!(body["server_keys"][0]["server_name"], NAMES[1]);

    // A server nobody can reach: no documents, no error.
    let (status, body) = b.get("/_matrix/key/v2/query/nowhere.invalid", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_keys"], json!([]));

    let (status, body) = b.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server"]["name"], "Hearth");
}

#[tokio::test]
async fn signed_requests_are_verified_before_anything_else() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (status, _) = a
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.access_token),
            json!({ "displayname": "Alice" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", alice.user_id);

    let (status, body) = evil.signed(a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "Alice");

    // No signature at all.
    let (status, body) = evil.send(a, Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    // Signed for another destination, or for another path than the one requested.
    let elsewhere = evil.authorization(&evil.name, "hearth-b.test", &Method::GET, &path, None);
    let (status, body) = evil.send(a, Method::GET, &path, Some(elsewhere), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let other_path = evil.authorization(
        &evil.name,
        NAMES[0],
        &Method::GET,
        "/_matrix/federation/v1/version",
        None,
    );
    let (status, body) = evil.send(a, Method::GET, &path, Some(other_path), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Claiming to be another server: its key is not ours.
    let forged = evil.authorization("hearth-b.test", NAMES[0], &Method::GET, &path, None);
    let (status, body) = evil.send(a, Method::GET, &path, Some(forged), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let as_a = evil.authorization(NAMES[0], NAMES[0], &Method::GET, &path, None);
    let (status, _) = evil.send(a, Method::GET, &path, Some(as_a), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Garbage in the header.
    let (status, body) = evil
        .send(a, Method::GET, &path, Some("X-Matrix origin=\"".to_owned()), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn blocked_servers_are_refused() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, config| {
        config.federation.blocked_servers = vec!["evil.test".to_owned()];
    })
    .await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", alice.user_id);
    let (status, body) = evil.signed(a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn queries_answer_for_local_users_and_aliases_only() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "room_alias_name": "lounge" }),
        )
        .await;
    let alias = format!("%23lounge:{}", NAMES[0]);
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/query/directory?room_alias={alias}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room["room_id"]);
    assert_eq!(body["servers"], json!([NAMES[0]]));

    let missing = format!("%23nothing:{}", NAMES[0]);
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/query/directory?room_alias={missing}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=@nobody:hearth-a.test",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=@someone:elsewhere.test",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=not-a-user",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// The event ID of a state event, as the room's members see it.
pub(super) async fn state_event_id(
    server: &TestServer,
    token: &str,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> String {
    let (status, state) = server
        .get(&format!("/_matrix/client/v3/rooms/{room_id}/state"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    state
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == event_type && event["state_key"] == state_key)
        .unwrap_or_else(|| panic!("no {event_type} in {state}"))["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_remote_server_joins_a_room_and_its_messages_reach_local_users() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_version": "11" }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap();
    let mallory = "@mallory:remote.test";

    // A version the joining server does not support.
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/make_join/{room_id}/{mallory}?ver=1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION");
    assert_eq!(body["room_version"], "11");
    // A join for a user of another server.
    let (status, _) = evil
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/make_join/{room_id}/@bob:hearth-a.test?ver=11"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (join_id, joined) = evil.join(a, room_id, mallory, "11").await;
    let state_types: Vec<&str> = joined["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert!(
        state_types.contains(&"m.room.create") && state_types.contains(&"m.room.power_levels"),
        "{joined}"
    );
    assert!(!joined["auth_chain"].as_array().unwrap().is_empty());
    assert_eq!(joined["servers_in_room"], json!([NAMES[0], "remote.test"]));
    let (_, members) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&alice.access_token),
        )
        .await;
    assert!(members["joined"][mallory].is_object(), "{members}");

    let create = state_event_id(a, &alice.access_token, room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, room_id, "m.room.power_levels", "").await;
    let message = |body: &str, prev: &str, depth: u64| {
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": mallory,
            "content": { "msgtype": "m.text", "body": body },
            "prev_events": [prev], "auth_events": [create, power, join_id],
            "depth": depth, "origin_server_ts": hearth::storage::now_ms(),
        })
    };
    let (good_id, good) = evil.sign_event(message("hello from afar", &join_id, 100), "11");
    // Signed, then changed: the signature no longer matches.
    let (tampered_id, mut tampered) = evil.sign_event(message("original", &good_id, 101), "11");
    tampered["signatures"]["remote.test"] = json!({ evil.key.key_id(): "AAAA" });
    // Claims a sender of another server, which never signed it.
    let (forged_id, forged) = evil.sign_event(
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": alice.user_id,
            "content": { "msgtype": "m.text", "body": "I am alice" },
            "prev_events": [good_id], "auth_events": [create, power],
            "depth": 101, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    // Mallory has no power to change power levels.
    let (takeover_id, takeover) = evil.sign_event(
        json!({
            "type": "m.room.power_levels", "state_key": "", "room_id": room_id, "sender": mallory,
            "content": { "users": { mallory: 100 } },
            "prev_events": [good_id], "auth_events": [create, power, join_id],
            "depth": 101, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    let (status, answer) = evil
        .send_transaction(a, "txn1", vec![good, tampered, forged, takeover.clone()])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][&good_id], json!({}), "{answer}");
    for refused in [&tampered_id, &forged_id, &takeover_id] {
        assert!(answer["pdus"][refused]["error"].is_string(), "{refused}: {answer}");
    }

    // The same transaction again: the same answer, nothing twice.
    let (status, again) = evil.send_transaction(a, "txn1", vec![takeover]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, answer);

    let (_, messages) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20"),
            Some(&alice.access_token),
        )
        .await;
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["hello from afar"], "{messages}");
    let (_, levels) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/"),
            Some(&alice.access_token),
        )
        .await;
    assert!(levels["users"].get(mallory).is_none(), "{levels}");

    // Over the spec's limit of 50 PDUs.
    let (status, body) = evil.send_transaction(a, "txn2", vec![json!({}); 51]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// A room on `server` created by a new user, joined by `user` of the fake server.
pub(super) async fn room_with_remote_member(
    server: &TestServer,
    remote: &FakeServer,
    user: &str,
) -> (crate::common::Session, String) {
    let alice = server.register("alice").await;
    let (_, room) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_version": "11" }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    remote.join(server, &room_id, user, "11").await;
    (alice, room_id)
}

pub(super) async fn say(server: &TestServer, token: &str, room_id: &str, body: &str) {
    let (status, answer) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{body}"),
            Some(token),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn local_events_go_out_to_servers_in_the_room_in_order() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let (alice, room_id) = room_with_remote_member(a, &remote, "@mallory:remote.test").await;
    for body in ["one", "two", "three"] {
        say(a, &alice.access_token, &room_id, body).await;
    }
    let received = remote
        .wait_for(|pdus| crate::common::federation::message_bodies(pdus).len() >= 3)
        .await;
    assert_eq!(
        crate::common::federation::message_bodies(&received),
        ["one", "two", "three"]
    );
    // Its own join is not sent back to it; nothing is sent twice.
    assert!(
        received.iter().all(|pdu| pdu["sender"] != "@mallory:remote.test"),
        "{received:?}"
    );
    for pdu in &received {
        assert_eq!(pdu["room_id"], room_id.as_str());
        assert!(pdu["signatures"][NAMES[0]].is_object(), "signed by us: {pdu}");
    }
}

#[tokio::test]
async fn a_destination_that_was_down_gets_everything_in_order_even_across_a_restart() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let mut servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = servers.remove(0);
    let (alice, room_id) = room_with_remote_member(&a, &remote, "@mallory:remote.test").await;
    say(&a, &alice.access_token, &room_id, "before").await;
    remote
        .wait_for(|pdus| crate::common::federation::message_bodies(pdus).len() == 1)
        .await;

    remote.accepting.store(false, std::sync::atomic::Ordering::SeqCst);
    for body in ["while-down-1", "while-down-2"] {
        say(&a, &alice.access_token, &room_id, body).await;
    }
    // Hearth stops with these still owed, and starts again on the same database.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let a = a.restart().await;
    say(&a, &alice.access_token, &room_id, "after-restart").await;
    remote.accepting.store(true, std::sync::atomic::Ordering::SeqCst);
    // The remote server calling us ends the backoff at once.
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", alice.user_id);
    let (status, _) = remote.signed(&a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let received = remote
        .wait_for(|pdus| crate::common::federation::message_bodies(pdus).len() >= 4)
        .await;
    assert_eq!(
        crate::common::federation::message_bodies(&received),
        ["before", "while-down-1", "while-down-2", "after-restart"]
    );
}

/// Waits (up to 15 s) until `body` is among the room's recent messages as `user` sees them.
pub(super) async fn wait_for_message(server: &TestServer, token: &str, room_id: &str, body: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..150 {
        let (status, messages) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50"),
                Some(token),
            )
            .await;
        last = messages.clone();
        if status == StatusCode::OK
            && let Some(event) = messages["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .find(|event| event["content"]["body"] == body)
        {
            return event.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{body} never reached {}: {last}", server.server_name());
}

#[tokio::test]
async fn users_on_two_servers_chat_in_a_room_joined_by_alias() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_alias_name": "lounge", "name": "Lounge" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap();

    // Bob joins by alias: B asks A for the alias, then joins through A.
    let (status, joined) = b
        .post(
            &format!("/_matrix/client/v3/join/%23lounge:{}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["room_id"], room_id);

    // Bob's server knows the room's state: its name, and both members.
    let (status, name) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{name}");
    assert_eq!(name["name"], "Lounge");
    let (_, members) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&bob.access_token),
        )
        .await;
    assert!(
        members["joined"][&alice.user_id].is_object() && members["joined"][&bob.user_id].is_object(),
        "{members}"
    );
    // And alice's server saw bob join.
    let (_, members) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&alice.access_token),
        )
        .await;
    assert!(members["joined"][&bob.user_id].is_object(), "{members}");

    say(a, &alice.access_token, room_id, "hi-bob").await;
    let seen = wait_for_message(b, &bob.access_token, room_id, "hi-bob").await;
    assert_eq!(seen["sender"], alice.user_id.as_str());
    say(b, &bob.access_token, room_id, "hi-alice").await;
    let seen = wait_for_message(a, &alice.access_token, room_id, "hi-alice").await;
    assert_eq!(seen["sender"], bob.user_id.as_str());

    // Bob's /sync lists the room as joined, with the message in it.
    let (_, sync) = b.get("/_matrix/client/v3/sync", Some(&bob.access_token)).await;
    assert!(sync["rooms"]["join"][room_id].is_object(), "{sync}");
}

#[tokio::test]
async fn joining_an_unknown_room_without_a_server_to_ask_is_a_clear_error() {
    let ca = TestCa::new();
    let servers = start_federated(1, &ca, &[], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (status, body) = a
        .post(
            "/_matrix/client/v3/join/!nowhere:unreachable.invalid",
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let (status, body) = a
        .post(
            "/_matrix/client/v3/join/%23nothing:unreachable.invalid",
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// Waits (up to 15 s) until `user`'s membership in the room, as `server` sees it, is `want`.
pub(super) async fn wait_for_membership(server: &TestServer, token: &str, room_id: &str, user: &str, want: &str) {
    for _ in 0..150 {
        let (status, member) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{user}"),
                Some(token),
            )
            .await;
        if status == StatusCode::OK && member["membership"] == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{user} never became {want} on {}", server.server_name());
}

/// Waits (up to 15 s) for an invite to the room in the user's /sync; returns its stripped state.
pub(super) async fn wait_for_invite(server: &TestServer, token: &str, room_id: &str) -> Vec<serde_json::Value> {
    for _ in 0..150 {
        let (_, sync) = server.get("/_matrix/client/v3/sync?timeout=0", Some(token)).await;
        if let Some(events) = sync["rooms"]["invite"][room_id]["invite_state"]["events"].as_array() {
            return events.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no invite to {room_id} on {}", server.server_name());
}

#[tokio::test]
async fn a_direct_chat_with_a_user_of_another_server_from_invite_to_kick() {
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
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id], "name": "DM" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap();

    // Bob's server signed the invite; bob's client sees it, with what the room is.
    let invite_state = wait_for_invite(b, &bob.access_token, room_id).await;
    let own = invite_state
        .iter()
        .find(|event| event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str())
        .expect("the invite itself");
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["content"]["is_direct"], true);
    assert!(
        invite_state
            .iter()
            .any(|event| event["type"] == "m.room.name" && event["content"]["name"] == "DM"),
        "{invite_state:?}"
    );
    let (_, member) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}", bob.user_id),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(member["membership"], "invite", "{member}");

    // Bob accepts: his server joins through alice's.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, room_id, &bob.user_id, "join").await;
    say(b, &bob.access_token, room_id, "thanks-for-the-invite").await;
    wait_for_message(a, &alice.access_token, room_id, "thanks-for-the-invite").await;

    // Carol is invited and declines: her server leaves through alice's.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
            Some(&alice.access_token),
            json!({ "user_id": carol.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_invite(b, &carol.access_token, room_id).await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, room_id, &carol.user_id, "leave").await;

    // Alice kicks bob: bob's server hears of it.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/kick"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id, "reason": "bye" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, sync) = b
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob.access_token))
        .await;
    let next = sync["next_batch"].as_str().unwrap().to_owned();
    for _ in 0..150 {
        let (_, sync) = b
            .get(
                &format!("/_matrix/client/v3/sync?timeout=0&since={next}"),
                Some(&bob.access_token),
            )
            .await;
        if sync["rooms"]["leave"][room_id].is_object() {
            return;
        }
        let (_, all) = b
            .get("/_matrix/client/v3/sync?timeout=0", Some(&bob.access_token))
            .await;
        if all["rooms"]["join"][room_id].is_null() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("bob's server never saw the kick");
}

/// The event IDs of the room's messages with these bodies, as its member sees them.
pub(super) async fn message_ids(server: &TestServer, token: &str, room_id: &str) -> Vec<(String, String)> {
    let (_, messages) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=f&limit=100"),
            Some(token),
        )
        .await;
    messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| {
            (
                event["content"]["body"].as_str().unwrap().to_owned(),
                event["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn servers_in_a_room_read_its_events_state_and_history_as_visibility_allows() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let outsider = FakeServer::start(&ca, "outsider.test", "127.0.0.10".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer(), outsider.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_version": "11",
                    "initial_state": [{ "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } }] }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap();
    say(a, &alice.access_token, room_id, "before-anyone-came").await;
    let (join_id, _) = remote.join(a, room_id, "@mallory:remote.test", "11").await;
    for body in ["m1", "m2", "m3"] {
        say(a, &alice.access_token, room_id, body).await;
    }
    let ids = message_ids(a, &alice.access_token, room_id).await;
    let id_of = |body: &str| ids.iter().find(|(b, _)| b == body).unwrap().1.clone();

    // One event.
    let (status, body) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/event/{}", id_of("m2")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pdus"][0]["content"]["body"], "m2");
    assert_eq!(body["origin"], NAMES[0]);
    // A server with nobody in the room reads nothing.
    let (status, body) = outsider
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/event/{}", id_of("m2")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = remote
        .signed(a, Method::GET, "/_matrix/federation/v1/event/$nothing", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The state before m3: the room's state events, with mallory joined, and their auth chain.
    let (status, body) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/state_ids/{room_id}?event_id={}", id_of("m3")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["pdu_ids"].as_array().unwrap().contains(&json!(join_id)), "{body}");
    assert!(!body["auth_chain_ids"].as_array().unwrap().is_empty());
    let (status, body) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/state/{room_id}?event_id={}", id_of("m3")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["pdus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|pdu| pdu["type"] == "m.room.create")
    );
    let (status, body) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/event_auth/{room_id}/{}", id_of("m3")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["auth_chain"]
            .as_array()
            .unwrap()
            .iter()
            .any(|pdu| pdu["type"] == "m.room.power_levels")
    );

    // The events between mallory's join and m3.
    let (status, body) = remote
        .signed(
            a,
            Method::POST,
            &format!("/_matrix/federation/v1/get_missing_events/{room_id}"),
            Some(json!({ "earliest_events": [join_id], "latest_events": [id_of("m3")], "limit": 10 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bodies: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pdu| pdu["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["m1", "m2"], "{body}");

    // Backfill from m3: everything back to the room's creation, oldest first; the message
    // from before mallory's server joined a `joined` room comes redacted.
    let (status, body) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/backfill/{room_id}?v={}&limit=50", id_of("m3")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pdus = body["pdus"].as_array().unwrap();
    assert_eq!(pdus[0]["type"], "m.room.create", "{body}");
    let bodies: Vec<&str> = pdus.iter().filter_map(|pdu| pdu["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["m1", "m2", "m3"], "the earlier message is redacted: {body}");
    assert_eq!(
        pdus.iter().filter(|pdu| pdu["type"] == "m.room.message").count(),
        4,
        "{body}"
    );
}

#[tokio::test]
async fn a_pdu_after_a_gap_brings_the_missing_events_with_it() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let create = state_event_id(a, &alice.access_token, &room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, &room_id, "m.room.member", mallory).await;
    let mut prev = join.clone();
    let mut chain = Vec::new();
    for (depth, body) in ["gap-1", "gap-2", "after-gap"].iter().enumerate() {
        let (id, pdu) = remote.sign_event(
            json!({
                "type": "m.room.message", "room_id": room_id, "sender": mallory,
                "content": { "msgtype": "m.text", "body": body },
                "prev_events": [prev], "auth_events": [create, power, join],
                "depth": 100 + depth, "origin_server_ts": hearth::storage::now_ms(),
            }),
            "11",
        );
        prev = id;
        chain.push(pdu);
    }
    let last = chain.pop().unwrap();
    // Newest first, as a server might answer; Hearth orders them itself.
    *remote.missing.lock().unwrap() = chain.into_iter().rev().collect();
    let (status, answer) = remote.send_transaction(a, "gap", vec![last]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][&prev], json!({}), "{answer}");
    let bodies: Vec<String> = message_ids(a, &alice.access_token, &room_id)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect();
    assert_eq!(bodies, ["gap-1", "gap-2", "after-gap"]);
}

#[tokio::test]
async fn a_pdu_after_a_gap_longer_than_missing_events_fetch_goes_in_on_the_state_its_server_gives() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let create = state_event_id(a, &alice.access_token, &room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, &room_id, "m.room.member", mallory).await;
    let mut prev = join.clone();
    let mut chain = Vec::new();
    for depth in 0..30 {
        let body = if depth == 29 {
            "after-gap".to_owned()
        } else {
            format!("gap-{depth:02}")
        };
        let (id, pdu) = remote.sign_event(
            json!({
                "type": "m.room.message", "room_id": room_id, "sender": mallory,
                "content": { "msgtype": "m.text", "body": body },
                "prev_events": [prev], "auth_events": [create, power, join],
                "depth": 100 + depth, "origin_server_ts": hearth::storage::now_ms(),
            }),
            "11",
        );
        remote.events.lock().unwrap().insert(id.clone(), pdu.clone());
        prev = id;
        chain.push(pdu);
    }
    // The state at every event of the gap is the state after mallory's join: what A serves
    // as the state at (before) the join, and the join.
    let path = format!("/_matrix/federation/v1/state/{room_id}?event_id={join}");
    let (status, mut state) = remote.signed(a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let (status, join_event) = remote
        .signed(a, Method::GET, &format!("/_matrix/federation/v1/event/{join}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{join_event}");
    state["pdus"]
        .as_array_mut()
        .unwrap()
        .push(join_event["pdus"][0].clone());
    *remote.state.lock().unwrap() = state;
    let last = chain.pop().unwrap();
    // get_missing_events answers only the newest 20 (newest first, as Synapse bounds it).
    *remote.missing.lock().unwrap() = chain.iter().rev().take(20).cloned().collect();
    let (status, answer) = remote.send_transaction(a, "long-gap", vec![last]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][&prev], json!({}), "{answer}");
    let bodies: Vec<String> = message_ids(a, &alice.access_token, &room_id)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect();
    let mut expected: Vec<String> = (9..29).map(|depth| format!("gap-{depth:02}")).collect();
    expected.push("after-gap".to_owned());
    assert_eq!(bodies, expected, "the 20 fetched and the new one, after the gap");
    // The room goes on: alice's next message builds on the new head and reaches mallory.
    say(a, &alice.access_token, &room_id, "still-here").await;
    let received = remote
        .wait_for(|pdus| crate::common::federation::message_bodies(pdus).contains(&"still-here".to_owned()))
        .await;
    let mine = received
        .iter()
        .find(|pdu| pdu["content"]["body"] == "still-here")
        .unwrap();
    assert!(
        mine["prev_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|id| id == &json!(prev)),
        "{mine}"
    );
}

#[tokio::test]
async fn a_fork_in_the_room_state_resolves_to_the_same_state_on_every_server() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(2, &ca, &[remote.peer()], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let room_id = room_id.as_str();
    let bob = b.register("bob").await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{room_id}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Mallory may name the room.
    let (_, mut levels) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/"),
            Some(&alice.access_token),
        )
        .await;
    levels["users"][mallory] = json!(50);
    levels["events"]["m.room.name"] = json!(50);
    let (status, body) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/"),
            Some(&alice.access_token),
            levels,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    say(a, &alice.access_token, room_id, "before-fork").await;
    wait_for_message(b, &bob.access_token, room_id, "before-fork").await;
    let fork_point = message_ids(a, &alice.access_token, room_id)
        .await
        .into_iter()
        .find(|(body, _)| body == "before-fork")
        .unwrap()
        .1;

    // Alice names the room; concurrently mallory names it too, from before alice's change.
    let (status, _) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
            Some(&alice.access_token),
            json!({ "name": "alice's name" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let create = state_event_id(a, &alice.access_token, room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, room_id, "m.room.member", mallory).await;
    let (fork_id, fork) = remote.sign_event(
        json!({
            "type": "m.room.name", "state_key": "", "room_id": room_id, "sender": mallory,
            "content": { "name": "mallory's name" },
            "prev_events": [fork_point], "auth_events": [create, power, join],
            "depth": 1000, "origin_server_ts": hearth::storage::now_ms() + 1,
        }),
        "11",
    );
    let (status, answer) = remote.send_transaction(a, "fork", vec![fork]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][&fork_id], json!({}), "the fork is accepted: {answer}");

    // Alice's next message joins both branches; bob's server fetches the branch it missed.
    say(a, &alice.access_token, room_id, "after-fork").await;
    wait_for_message(b, &bob.access_token, room_id, "after-fork").await;
    let (_, name_a) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
            Some(&alice.access_token),
        )
        .await;
    let (_, name_b) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(name_a, name_b, "both servers resolve the fork alike");
    // The later of two equally powerful changes wins (state resolution v2 orders them by
    // power, then timestamp).
    assert_eq!(name_a["name"], "mallory's name");
    // And the room goes on: bob's next message reaches alice.
    say(b, &bob.access_token, room_id, "after-merge").await;
    wait_for_message(a, &alice.access_token, room_id, "after-merge").await;
}

#[tokio::test]
async fn a_server_the_room_acl_denies_can_neither_send_nor_read() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let room_id = room_id.as_str();
    let (status, body) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/"),
            Some(&alice.access_token),
            json!({ "allow": ["*"], "deny": ["remote.test"], "allow_ip_literals": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let create = state_event_id(a, &alice.access_token, room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, room_id, "m.room.member", mallory).await;
    let acl = state_event_id(a, &alice.access_token, room_id, "m.room.server_acl", "").await;
    let (id, pdu) = remote.sign_event(
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": mallory,
            "content": { "msgtype": "m.text", "body": "let me in" },
            "prev_events": [acl], "auth_events": [create, power, join],
            "depth": 100, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    let (status, answer) = remote.send_transaction(a, "acl", vec![pdu]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["pdus"][&id]["error"].is_string(), "{answer}");
    let bodies: Vec<String> = message_ids(a, &alice.access_token, room_id)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect();
    assert!(bodies.is_empty(), "{bodies:?}");
    let (status, body) = remote
        .signed(a, Method::GET, &format!("/_matrix/federation/v1/event/{create}"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/make_join/{room_id}/@other:remote.test?ver=11"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_remote_redaction_reaches_clients_in_both_shapes() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let create = state_event_id(a, &alice.access_token, &room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, &room_id, "m.room.member", mallory).await;
    let (message_id, message) = remote.sign_event(
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": mallory,
            "content": { "msgtype": "m.text", "body": "regrettable" },
            "prev_events": [join], "auth_events": [create, power, join],
            "depth": 100, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    // Room version 11: `redacts` only in the content, as Synapse sends it.
    let (redaction_id, redaction) = remote.sign_event(
        json!({
            "type": "m.room.redaction", "room_id": room_id, "sender": mallory,
            "content": { "redacts": message_id },
            "prev_events": [message_id], "auth_events": [create, power, join],
            "depth": 101, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    let (status, answer) = remote.send_transaction(a, "redact", vec![message, redaction]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["pdus"][&redaction_id], json!({}), "{answer}");
    let (_, messages) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=10"),
            Some(&alice.access_token),
        )
        .await;
    let events = messages["chunk"].as_array().unwrap();
    let shown = events.iter().find(|event| event["event_id"] == redaction_id).unwrap();
    assert_eq!(shown["redacts"], message_id.as_str(), "{shown}");
    assert_eq!(shown["content"]["redacts"], message_id.as_str());
    let redacted = events.iter().find(|event| event["event_id"] == message_id).unwrap();
    assert_eq!(redacted["content"], json!({}), "the message is redacted: {redacted}");
}

#[tokio::test]
async fn a_pdu_whose_content_was_changed_is_kept_redacted_and_one_from_outside_the_room_is_refused() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let create = state_event_id(a, &alice.access_token, &room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, &room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, &room_id, "m.room.member", mallory).await;
    // Signed, then its content changed: the signature covers only the redacted form, so it
    // verifies, but the content hash does not match: the event is kept, redacted.
    let (changed_id, mut changed) = remote.sign_event(
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": mallory,
            "content": { "msgtype": "m.text", "body": "as signed" },
            "prev_events": [join], "auth_events": [create, power, join],
            "depth": 100, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    changed["content"]["body"] = json!("changed on the way");
    // A user of the same server who never joined.
    let (outsider_id, outsider) = remote.sign_event(
        json!({
            "type": "m.room.message", "room_id": room_id, "sender": "@stranger:remote.test",
            "content": { "msgtype": "m.text", "body": "never joined" },
            "prev_events": [changed_id], "auth_events": [create, power],
            "depth": 101, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    // A room this server has never heard of: dropped without a result.
    let (unknown_id, unknown) = remote.sign_event(
        json!({
            "type": "m.room.message", "room_id": "!unknown:remote.test", "sender": mallory,
            "content": { "msgtype": "m.text", "body": "elsewhere" },
            "prev_events": [], "auth_events": [], "depth": 5, "origin_server_ts": hearth::storage::now_ms(),
        }),
        "11",
    );
    let (status, answer) = remote
        .send_transaction(a, "hostile-2", vec![changed, outsider, unknown])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][&changed_id], json!({}), "{answer}");
    assert!(answer["pdus"][&outsider_id]["error"].is_string(), "{answer}");
    assert!(answer["pdus"].get(&unknown_id).is_none(), "{answer}");
    let (_, messages) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20"),
            Some(&alice.access_token),
        )
        .await;
    let chunk = messages["chunk"].as_array().unwrap();
    let kept = chunk
        .iter()
        .find(|event| event["event_id"] == changed_id)
        .expect("kept");
    assert_eq!(kept["content"], json!({}), "kept redacted: {kept}");
    assert!(
        chunk
            .iter()
            .all(|event| event["event_id"] != outsider_id && event["event_id"] != unknown_id)
    );
}

#[tokio::test]
async fn a_remote_server_cannot_redact_others_events_or_post_past_a_ban() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let mallory = "@mallory:remote.test";
    let (alice, room_id) = room_with_remote_member(a, &remote, mallory).await;
    let room_id = room_id.as_str();
    say(a, &alice.access_token, room_id, "alice's words").await;
    let alices = message_ids(a, &alice.access_token, room_id).await[0].1.clone();
    let create = state_event_id(a, &alice.access_token, room_id, "m.room.create", "").await;
    let power = state_event_id(a, &alice.access_token, room_id, "m.room.power_levels", "").await;
    let join = state_event_id(a, &alice.access_token, room_id, "m.room.member", mallory).await;
    let event = |kind: &str, content: serde_json::Value, prev: &str, depth: u64| {
        json!({
            "type": kind, "room_id": room_id, "sender": mallory, "content": content,
            "prev_events": [prev], "auth_events": [create, power, join],
            "depth": depth, "origin_server_ts": hearth::storage::now_ms(),
        })
    };
    // A message claiming to redact, and a redaction without the power to redact alice.
    let (sneaky_id, sneaky) = remote.sign_event(
        event(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "x", "redacts": alices }),
            &alices,
            100,
        ),
        "11",
    );
    let (redaction_id, redaction) = remote.sign_event(
        event("m.room.redaction", json!({ "redacts": alices }), &sneaky_id, 101),
        "11",
    );
    let (status, answer) = remote
        .send_transaction(a, "redact-others", vec![sneaky, redaction])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["pdus"][&redaction_id], json!({}), "{answer}");
    let (_, kept) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/event/{alices}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(kept["content"]["body"], "alice's words", "not redacted: {kept}");

    // Mallory is banned; her server then posts from before the ban.
    let (status, _) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/ban"),
            Some(&alice.access_token),
            json!({ "user_id": mallory }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (late_id, late) = remote.sign_event(
        event(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "from before the ban" }),
            &redaction_id,
            102,
        ),
        "11",
    );
    let (status, answer) = remote.send_transaction(a, "after-ban", vec![late]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer["pdus"][&late_id],
        json!({}),
        "soft-failed, as far as the sender knows: {answer}"
    );
    let bodies: Vec<String> = message_ids(a, &alice.access_token, room_id)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect();
    assert!(!bodies.iter().any(|body| body == "from before the ban"), "{bodies:?}");
    let (status, _) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/event/{late_id}"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a soft-failed event is never served");
    // The room goes on.
    say(a, &alice.access_token, room_id, "still here").await;
}
