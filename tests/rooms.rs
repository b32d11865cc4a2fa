//! Rooms: creation, sending, state, history, redaction, ordering.

use crate::common::{
    TestServer, assert_error,
    rooms::{V3, create_room, enc, join, messages, send_text},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

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
        // Forwards, `end` is always there (more may come later): an empty page ends the walk.
        if page["chunk"].as_array().unwrap().is_empty() {
            break;
        }
        all_forward.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        from = page["end"]
            .as_str()
            .expect("a forward page always has an end")
            .to_owned();
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
