//! Rooms: creation, sending, state, history, redaction, and the rules that must hold.

mod common;

use common::{Session, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (status, body) = server.post(&format!("{V3}/createRoom"), who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "createRoom: {body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn send_text(server: &TestServer, who: &Session, room: &str, txn: &str, text: &str) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            who.token(),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await
}

/// Percent-encodes an ID for a URL path (v3 event IDs may hold `/` and `+`).
fn enc(id: &str) -> String {
    id.replace('%', "%25")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('#', "%23")
        .replace('?', "%3F")
}

async fn join(server: &TestServer, who: &Session, room: &str) -> (StatusCode, Value) {
    server
        .post(&format!("{V3}/rooms/{room}/join"), who.token(), json!({}))
        .await
}

async fn messages(server: &TestServer, who: &Session, room: &str, query: &str) -> (StatusCode, Value) {
    server
        .get(&format!("{V3}/rooms/{room}/messages?{query}"), who.token())
        .await
}

#[tokio::test]
async fn a_new_room_has_the_state_the_spec_lists() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "name": "Lobby", "topic": "Say hi", "preset": "public_chat" }),
    )
    .await;
    // Room version 12 by default: the room ID is the create event's hash, with no server name.
    assert!(!room.contains(':'), "{room}");
    let (status, state) = server.get(&format!("{V3}/rooms/{room}/state"), alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    let types: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for expected in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(types.contains(&expected), "{expected} missing from {types:?}");
    }
    let (_, name) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.name/"), alice.token())
        .await;
    assert_eq!(name, json!({ "name": "Lobby" }));
    let (_, create) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.create/"), alice.token())
        .await;
    assert_eq!(create["room_version"], "12");
    let (_, rules) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.join_rules/"), alice.token())
        .await;
    assert_eq!(rules["join_rule"], "public");
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(joined["joined_rooms"], json!([room]));
}

#[tokio::test]
async fn create_room_rejects_what_it_cannot_do() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = format!("{V3}/createRoom");
    let create = |body: Value| server.post(&path, alice.token(), body);
    assert_error(
        &create(json!({ "room_version": "99" })).await,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_error(&create(json!({ "invite_3pid": [{ "id_server": "x", "id_access_token": "t", "medium": "email", "address": "a@b.c" }] })).await, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    assert_error(
        &create(json!({ "name": 5 })).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server.post(&format!("{V3}/createRoom"), None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(joined["joined_rooms"], json!([]));
}

#[tokio::test]
async fn sends_are_idempotent_per_transaction_and_show_the_txn_to_the_sender_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, StatusCode::OK);
    let (status, first) = send_text(&server, &alice, &room, "txn1", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = send_text(&server, &alice, &room, "txn1", "hello").await;
    assert_eq!(first["event_id"], again["event_id"]);
    let event_path = format!("{V3}/rooms/{room}/event/{}", first["event_id"].as_str().unwrap());
    let (_, mine) = server.get(&event_path, alice.token()).await;
    assert_eq!(mine["unsigned"]["transaction_id"], "txn1");
    assert_eq!(
        mine["unsigned"]["membership"], "join",
        "the viewer's membership at the event"
    );
    assert_eq!(mine["content"]["body"], "hello");
    let (_, theirs) = server.get(&event_path, bob.token()).await;
    assert!(theirs["unsigned"].get("transaction_id").is_none(), "{theirs}");
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=5").await;
    let bodies: Vec<_> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert_eq!(bodies.len(), 1, "one event for two sends");
}

#[tokio::test]
async fn outsiders_cannot_send_read_or_join_invite_only_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    assert_error(
        &send_text(&server, &eve, &room, "t", "hi").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &messages(&server, &eve, &room, "dir=b").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&format!("{V3}/rooms/{room}/state"), eve.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(&join(&server, &eve, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Invited, she may join.
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": "@eve:localhost" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(join(&server, &eve, &room).await.0, StatusCode::OK);
    assert_eq!(send_text(&server, &eve, &room, "t", "hi").await.0, StatusCode::OK);
    let (_, members) = server
        .get(&format!("{V3}/rooms/{room}/joined_members"), alice.token())
        .await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_rooms_and_malformed_ids_get_the_right_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    assert_error(
        &send_text(&server, &alice, "!nope:localhost", "t", "x").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &join(&server, &alice, "!nope:localhost").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let bad = send_text(&server, &alice, "not-a-room-id", "t", "x").await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    let room = create_room(&server, &alice, json!({})).await;
    let not_object = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t2"),
            alice.token(),
            json!([1]),
        )
        .await;
    assert_error(&not_object, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let missing = server
        .get(&format!("{V3}/rooms/{room}/event/$nothere"), alice.token())
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn power_levels_guard_state_kicks_bans_and_redactions() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;

    // Bob (level 0) may not rename the room, kick, ban or redact others.
    let rename = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.name/"),
            bob.token(),
            json!({ "name": "mine" }),
        )
        .await;
    assert_error(&rename, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let kick = server
        .post(
            &format!("{V3}/rooms/{room}/kick"),
            bob.token(),
            json!({ "user_id": "@carol:localhost" }),
        )
        .await;
    assert_error(&kick, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let ban = server
        .post(
            &format!("{V3}/rooms/{room}/ban"),
            bob.token(),
            json!({ "user_id": "@carol:localhost" }),
        )
        .await;
    assert_error(&ban, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (_, sent) = send_text(&server, &carol, &room, "c1", "carol's words").await;
    let carol_event = sent["event_id"].as_str().unwrap();
    let redact = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{carol_event}/r1"),
            bob.token(),
            json!({}),
        )
        .await;
    assert_error(&redact, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Someone else's user-scoped state is off limits.
    let scoped = server
        .put(
            &format!("{V3}/rooms/{room}/state/org.example.status/@carol:localhost"),
            bob.token(),
            json!({ "x": 1 }),
        )
        .await;
    assert_error(&scoped, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Alice, the creator, may do all of it.
    let (status, _) = server
        .put(
            &format!("{V3}/rooms/{room}/redact/{carol_event}/r2"),
            alice.token(),
            json!({ "reason": "spam" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, redacted) = server
        .get(&format!("{V3}/rooms/{room}/event/{carol_event}"), alice.token())
        .await;
    assert_eq!(redacted["content"], json!({}));
    assert_eq!(redacted["unsigned"]["redacted_because"]["content"]["reason"], "spam");
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/ban"),
            alice.token(),
            json!({ "user_id": "@bob:localhost", "reason": "rude" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Banned users cannot come back.
    assert_error(&join(&server, &bob, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/kick"),
            alice.token(),
            json!({ "user_id": "@carol:localhost" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, members) = server
        .get(&format!("{V3}/rooms/{room}/members?membership=ban"), alice.token())
        .await;
    let banned: Vec<_> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(banned, ["@bob:localhost"]);
    // Unbanned, Bob may join again.
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/unban"),
            alice.token(),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(join(&server, &bob, &room).await.0, StatusCode::OK);
}

#[tokio::test]
async fn own_events_can_be_redacted_by_their_sender() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (_, sent) = send_text(&server, &alice, &room, "t1", "oops").await;
    let id = sent["event_id"].as_str().unwrap();
    let (status, _) = server
        .put(&format!("{V3}/rooms/{room}/redact/{id}/r1"), alice.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=2").await;
    let redacted = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap();
    assert_eq!(redacted["content"], json!({}));
}

#[tokio::test]
async fn events_over_64_kib_are_refused_and_not_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let big = "x".repeat(70_000);
    assert_error(
        &send_text(&server, &alice, &room, "big", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=50").await;
    assert!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "m.room.message")
    );
}

#[tokio::test]
async fn former_members_read_history_only_up_to_their_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "a1", "before").await;
    let (status, _) = server
        .post(&format!("{V3}/rooms/{room}/leave"), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    send_text(&server, &alice, &room, "a2", "after").await;
    let (status, page) = messages(&server, &bob, &room, "dir=b&limit=50").await;
    assert_eq!(status, StatusCode::OK);
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["before"]);
    let (_, rooms) = server.get(&format!("{V3}/joined_rooms"), bob.token()).await;
    assert_eq!(rooms["joined_rooms"], json!([]));
    assert_error(
        &server
            .post(&format!("{V3}/rooms/{room}/leave"), bob.token(), json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn every_room_version_works_with_its_own_id_formats() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({ "room_version": version, "preset": "public_chat" }),
        )
        .await;
        assert_eq!(join(&server, &bob, &room).await.0, StatusCode::OK, "v{version}");
        let (status, sent) = send_text(&server, &bob, &room, &format!("t{version}"), "hi").await;
        assert_eq!(status, StatusCode::OK, "v{version}: {sent}");
        let event_id = sent["event_id"].as_str().unwrap();
        match version {
            "1" | "2" => assert!(event_id.ends_with(":localhost"), "v{version}: {event_id}"),
            "3" => assert!(!event_id.contains(':'), "v{version}: {event_id}"),
            _ => assert!(
                !event_id.contains(':') && !event_id.contains('/') && !event_id.contains('+'),
                "v{version}: {event_id}"
            ),
        }
        assert_eq!(room.contains(':'), version != "12", "v{version}: {room}");
        let (status, _) = server
            .put(
                &format!("{V3}/rooms/{room}/redact/{}/r{version}", enc(event_id)),
                alice.token(),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "redaction in v{version}");
        let (_, event) = server
            .get(&format!("{V3}/rooms/{room}/event/{}", enc(event_id)), bob.token())
            .await;
        assert_eq!(event["content"], json!({}), "v{version}");
    }
}

#[tokio::test]
async fn concurrent_sends_are_served_in_one_order_and_paginate_back_exactly() {
    let server = TestServer::start().await;
    let users = [
        server.register("u1").await,
        server.register("u2").await,
        server.register("u3").await,
        server.register("u4").await,
    ];
    let room = create_room(&server, &users[0], json!({ "preset": "public_chat" })).await;
    for user in &users[1..] {
        join(&server, user, &room).await;
    }
    let per_user = 250;
    let mut tasks = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for i in 0..per_user {
            let (http, base, token, room) = (
                server.http.clone(),
                server.base.clone(),
                user.access_token.clone(),
                room.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let url = format!("{base}{V3}/rooms/{room}/send/m.room.message/t{i}");
                let response = http
                    .put(url)
                    .bearer_auth(token)
                    .json(&json!({ "msgtype": "m.text", "body": format!("{u}-{i}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total = users.len() * per_user;
    // Read forwards once (the order), then page backwards in small pages and compare.
    let (_, forward) = messages(&server, &users[1], &room, "dir=f&limit=1000").await;
    let forward: Vec<String> = forward["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let (_, tail) = messages(&server, &users[1], &room, "dir=f&limit=1000&from=s0").await;
    assert!(tail["chunk"].as_array().unwrap().len() >= 1000);
    let mut all_forward = Vec::new();
    let mut from = String::from("s0");
    loop {
        let (_, page) = messages(&server, &users[2], &room, &format!("dir=f&limit=97&from={from}")).await;
        all_forward.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(all_forward.len(), total, "no gaps or duplicates forwards");
    assert_eq!(&all_forward[..forward.len()], &forward[..]);
    let mut backward = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = match &from {
            Some(token) => format!("dir=b&limit=53&from={token}"),
            None => "dir=b&limit=53".to_owned(),
        };
        let (_, page) = messages(&server, &users[3], &room, &query).await;
        backward.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    backward.reverse();
    assert_eq!(backward, all_forward, "back-pagination is the exact reverse");
}

#[tokio::test]
async fn the_server_publishes_its_signing_key() {
    let server = TestServer::start().await;
    let (status, keys) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys["server_name"], "localhost");
    let key_id = keys["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    assert!(key_id.starts_with("ed25519:"));
    assert!(keys["signatures"]["localhost"][&key_id].is_string());
    assert!(keys["valid_until_ts"].as_u64().unwrap() > 0);
    // The key survives a restart of the server on the same database: here, a second fetch.
    let (_, again) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(again["verify_keys"], keys["verify_keys"]);
}

#[tokio::test]
async fn knocking_works_where_the_join_rules_allow_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let knock_rules = json!([{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }]);
    let room = create_room(
        &server,
        &alice,
        json!({ "room_version": "10", "initial_state": knock_rules }),
    )
    .await;
    // Knocking is not joining.
    assert_error(&join(&server, &bob, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, knocked) = server
        .post(
            &format!("{V3}/knock/{room}"),
            bob.token(),
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{knocked}");
    assert_eq!(knocked["room_id"], room);
    let (_, member) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.member/@bob:localhost"),
            alice.token(),
        )
        .await;
    assert_eq!(member["membership"], "knock");
    // The knock is accepted with an invite.
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": "@bob:localhost" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(join(&server, &bob, &room).await.0, StatusCode::OK);

    // Rooms that are invite-only, or too old to know knocking, refuse knocks.
    let carol = server.register("carol").await;
    let invite_only = create_room(&server, &alice, json!({})).await;
    let refused = server
        .post(&format!("{V3}/knock/{invite_only}"), carol.token(), json!({}))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let old = create_room(&server, &alice, json!({ "room_version": "6", "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }] })).await;
    let refused = server
        .post(&format!("{V3}/knock/{old}"), carol.token(), json!({}))
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &server
            .post(&format!("{V3}/knock/!nope:localhost"), carol.token(), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_the_allowed_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    let space = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &space).await;
    let rules = json!([{ "type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }]
    } }]);
    for version in ["9", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({ "room_version": version, "initial_state": rules }),
        )
        .await;
        let (status, body) = join(&server, &bob, &room).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        let (_, member) = server
            .get(
                &format!("{V3}/rooms/{room}/state/m.room.member/@bob:localhost"),
                bob.token(),
            )
            .await;
        assert_eq!(member["join_authorised_via_users_server"], "@alice:localhost");
        assert_error(&join(&server, &eve, &room).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn upgrading_a_room_carries_state_and_tombstones_the_old_one() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = create_room(
        &server,
        &alice,
        json!({ "room_version": "10", "preset": "public_chat", "name": "Old name", "room_alias_name": "club" }),
    )
    .await;
    join(&server, &bob, &old).await;
    let path = format!("{V3}/rooms/{old}/upgrade");
    assert_error(
        &server.post(&path, bob.token(), json!({ "new_version": "12" })).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.post(&path, alice.token(), json!({ "new_version": "77" })).await,
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    let (status, upgraded) = server.post(&path, alice.token(), json!({ "new_version": "12" })).await;
    assert_eq!(status, StatusCode::OK, "{upgraded}");
    let new = upgraded["replacement_room"].as_str().unwrap();
    let (_, tombstone) = server
        .get(&format!("{V3}/rooms/{old}/state/m.room.tombstone"), bob.token())
        .await;
    assert_eq!(tombstone["replacement_room"], new);
    let (_, create) = server
        .get(&format!("{V3}/rooms/{new}/state/m.room.create"), alice.token())
        .await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old);
    let (_, name) = server
        .get(&format!("{V3}/rooms/{new}/state/m.room.name"), alice.token())
        .await;
    assert_eq!(name["name"], "Old name");
    let (_, alias) = server
        .get(&format!("{V3}/directory/room/%23club:localhost"), None)
        .await;
    assert_eq!(alias["room_id"], new);
    // Bob can follow into the new (public) room, and can no longer talk in the old one.
    assert_eq!(join(&server, &bob, new).await.0, StatusCode::OK);
    assert_error(
        &send_text(&server, &bob, &old, "late", "hello?").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn history_visibility_decides_what_members_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    let bodies = |page: &Value| -> Vec<String> {
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .rev()
            .collect()
    };
    for (visibility, expected) in [
        ("shared", vec!["before invite", "while invited", "after join"]),
        ("invited", vec!["while invited", "after join"]),
        ("joined", vec!["after join"]),
        ("world_readable", vec!["before invite", "while invited", "after join"]),
    ] {
        let state = json!([{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": visibility } }]);
        let room = create_room(&server, &alice, json!({ "initial_state": state })).await;
        send_text(&server, &alice, &room, &format!("{visibility}1"), "before invite").await;
        server
            .post(
                &format!("{V3}/rooms/{room}/invite"),
                alice.token(),
                json!({ "user_id": "@bob:localhost" }),
            )
            .await;
        send_text(&server, &alice, &room, &format!("{visibility}2"), "while invited").await;
        join(&server, &bob, &room).await;
        send_text(&server, &alice, &room, &format!("{visibility}3"), "after join").await;
        let (status, page) = messages(&server, &bob, &room, "dir=b&limit=50").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bodies(&page), expected, "{visibility}");
        // The current state is there for members whatever the visibility.
        let (status, _) = server
            .get(&format!("{V3}/rooms/{room}/state/m.room.create"), bob.token())
            .await;
        assert_eq!(status, StatusCode::OK, "{visibility}");
        let outsider = messages(&server, &eve, &room, "dir=b&limit=50").await;
        if visibility == "world_readable" {
            assert_eq!(bodies(&outsider.1), expected);
        } else {
            assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        }
    }
}

#[tokio::test]
async fn state_events_carry_prev_content_and_members_can_be_read_as_of_a_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "name": "First" })).await;
    let (_, renamed) = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.name/"),
            alice.token(),
            json!({ "name": "Second" }),
        )
        .await;
    let id = renamed["event_id"].as_str().unwrap();
    let (_, event) = server
        .get(&format!("{V3}/rooms/{room}/event/{id}"), alice.token())
        .await;
    assert_eq!(event["unsigned"]["prev_content"], json!({ "name": "First" }), "{event}");
    assert_eq!(event["unsigned"]["prev_sender"], "@alice:localhost");

    let (_, before) = messages(&server, &alice, &room, "dir=b&limit=1").await;
    let token = before["start"].as_str().unwrap().to_owned();
    join(&server, &bob, &room).await;
    let (status, then) = server
        .get(&format!("{V3}/rooms/{room}/members?at={token}"), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    let members: Vec<&str> = then["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["@alice:localhost"]);
    let (_, now) = server.get(&format!("{V3}/rooms/{room}/members"), alice.token()).await;
    assert_eq!(now["chunk"].as_array().unwrap().len(), 2);
    let bad = server
        .get(&format!("{V3}/rooms/{room}/members?at=xyz"), alice.token())
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

#[tokio::test]
async fn messages_filters_select_events_and_lazy_load_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "f1", "plain").await;
    server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/f2"),
            bob.token(),
            json!({ "msgtype": "m.image", "body": "cat.png", "url": "mxc://localhost/cat" }),
        )
        .await;
    send_text(&server, &bob, &room, "f3", "bob says").await;
    let filter = |f: Value| format!("dir=b&limit=20&filter={}", urlencode(&f.to_string()));
    let (_, with_url) = messages(&server, &alice, &room, &filter(json!({ "contains_url": true }))).await;
    let bodies: Vec<&str> = with_url["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["cat.png"]);
    let (_, from_bob) = messages(
        &server,
        &alice,
        &room,
        &filter(json!({ "senders": ["@bob:localhost"], "types": ["m.room.message"] })),
    )
    .await;
    assert_eq!(from_bob["chunk"].as_array().unwrap().len(), 2);
    let (_, lazy) = messages(
        &server,
        &alice,
        &room,
        &filter(json!({ "lazy_load_members": true, "types": ["m.room.message"], "limit": 1 })),
    )
    .await;
    let members: Vec<&str> = lazy["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["@bob:localhost"]);
    let bad = messages(&server, &alice, &room, "dir=b&filter=notjson").await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn membership_and_redaction_cannot_be_forged_through_generic_endpoints() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let space = create_room(&server, &alice, json!({})).await;
    let rules = json!([{ "type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }]
    } }]);
    let restricted = create_room(&server, &alice, json!({ "room_version": "10", "initial_state": rules })).await;
    let forged = json!({ "membership": "join", "join_authorised_via_users_server": "@alice:localhost" });
    let member_path = format!("{V3}/rooms/{restricted}/state/m.room.member/@bob:localhost");
    assert_error(
        &server.put(&member_path, bob.token(), forged).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let plain_join = server
        .put(&member_path, bob.token(), json!({ "membership": "join" }))
        .await;
    assert_error(&plain_join, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (_, members) = server
        .get(&format!("{V3}/rooms/{restricted}/joined_members"), alice.token())
        .await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 1);

    // A member may set a per-room display name on their own join event.
    let public = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &public).await;
    let own = format!("{V3}/rooms/{public}/state/m.room.member/@bob:localhost");
    assert_eq!(
        server
            .put(
                &own,
                bob.token(),
                json!({ "membership": "join", "displayname": "Bobby here" })
            )
            .await
            .0,
        StatusCode::OK
    );
    let (_, joined) = server
        .get(&format!("{V3}/rooms/{public}/joined_members"), alice.token())
        .await;
    assert_eq!(joined["joined"]["@bob:localhost"]["display_name"], "Bobby here");

    // Redactions sent as plain events obey the same rules as /redact.
    let (_, sent) = send_text(&server, &alice, &public, "a1", "alice's").await;
    let target = sent["event_id"].as_str().unwrap();
    let forged_redaction = server
        .put(
            &format!("{V3}/rooms/{public}/send/m.room.redaction/x1"),
            bob.token(),
            json!({ "redacts": target }),
        )
        .await;
    assert_error(&forged_redaction, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (_, event) = server
        .get(&format!("{V3}/rooms/{public}/event/{target}"), bob.token())
        .await;
    assert_eq!(event["content"]["body"], "alice's");
    // An event of another room cannot be redacted through this one.
    let (_, elsewhere) = send_text(&server, &alice, &space, "s1", "in the space").await;
    let other = elsewhere["event_id"].as_str().unwrap();
    let cross = server
        .put(
            &format!("{V3}/rooms/{public}/redact/{other}/x2"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_error(&cross, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let cross = server
        .put(
            &format!("{V3}/rooms/{public}/send/m.room.redaction/x3"),
            alice.token(),
            json!({ "redacts": other }),
        )
        .await;
    assert_error(&cross, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, still) = server
        .get(&format!("{V3}/rooms/{space}/event/{other}"), alice.token())
        .await;
    assert_eq!(still["content"]["body"], "in the space");
}

#[tokio::test]
async fn relations_from_other_rooms_are_ignored_and_transaction_ids_are_per_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = create_room(&server, &alice, json!({})).await;
    let second = create_room(&server, &alice, json!({})).await;
    let (_, a) = send_text(&server, &alice, &first, "same-txn", "one").await;
    let (_, b) = send_text(&server, &alice, &second, "same-txn", "two").await;
    assert_ne!(
        a["event_id"], b["event_id"],
        "the same transaction ID in two rooms makes two events"
    );
    let target = a["event_id"].as_str().unwrap();
    let edit = json!({ "msgtype": "m.text", "body": "* x", "m.new_content": { "msgtype": "m.text", "body": "x" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": target } });
    server
        .put(
            &format!("{V3}/rooms/{second}/send/m.room.message/e1"),
            alice.token(),
            edit,
        )
        .await;
    let (_, event) = server
        .get(&format!("{V3}/rooms/{first}/event/{target}"), alice.token())
        .await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
    let (_, relations) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{first}/relations/{target}"),
            alice.token(),
        )
        .await;
    assert_eq!(relations["chunk"], json!([]));
}

#[tokio::test]
async fn visibility_is_judged_with_the_setting_in_force_when_each_event_was_sent() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let state = json!([{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }]);
    let room = create_room(&server, &alice, json!({ "initial_state": state })).await;
    send_text(&server, &alice, &room, "p1", "private past").await;
    let public = json!({ "history_visibility": "world_readable" });
    server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.history_visibility/"),
            alice.token(),
            public,
        )
        .await;
    send_text(&server, &alice, &room, "p2", "public now").await;
    // Opening the room does not open its past.
    let (status, page) = messages(&server, &eve, &room, "dir=b&limit=50").await;
    assert_eq!(status, StatusCode::OK);
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["public now"]);
}
