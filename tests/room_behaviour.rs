//! Room behaviour clients rely on: canonical aliases that are checked and follow deleted
//! aliases, typing without a timeout, identical state sent twice, `/join` bodies, room upgrades
//! with guest access, and the shape of `/joined_members`.

use crate::common;

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, join, query_value},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn state_event(server: &TestServer, who: &Session, room: &str, kind: &str) -> (StatusCode, Value) {
    server
        .get(&format!("{V3}/rooms/{room}/state/{kind}/"), who.token())
        .await
}

async fn put_alias(server: &TestServer, who: &Session, alias: &str, room: &str) {
    let (status, body) = server
        .put(
            &format!("{V3}/directory/room/{}", query_value(alias)),
            who.token(),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn canonical_aliases_are_checked_and_follow_deleted_aliases() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let other = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    put_alias(&server, &alice, "#main:localhost", &room).await;
    put_alias(&server, &alice, "#alt:localhost", &room).await;
    put_alias(&server, &alice, "#elsewhere:localhost", &other).await;
    let path = format!("{V3}/rooms/{room}/state/m.room.canonical_alias/");
    for bad in [
        json!({ "alias": "not an alias" }),
        json!({ "alias": "#missing:localhost" }),
        json!({ "alias": "#elsewhere:localhost" }),
        json!({ "alias": "#main:localhost", "alt_aliases": ["#missing:localhost"] }),
        json!({ "alt_aliases": ["#remote:other.example"] }),
    ] {
        assert_error(
            &server.put(&path, alice.token(), bad.clone()).await,
            StatusCode::BAD_REQUEST,
            "M_BAD_ALIAS",
        );
    }
    let (status, _) = server
        .put(&path, alice.token(), json!({ "alt_aliases": "#main:localhost" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing of that was stored.
    assert_eq!(
        state_event(&server, &alice, &room, "m.room.canonical_alias").await.0,
        StatusCode::NOT_FOUND
    );
    // Valid aliases pointing here are accepted; a non-member may not set them.
    let good = json!({ "alias": "#main:localhost", "alt_aliases": ["#alt:localhost"] });
    let (status, body) = server.put(&path, alice.token(), good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let carol = server.register("carol").await;
    assert_error(
        &server.put(&path, carol.token(), good).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Deleting an alias takes it out of the canonical alias event.
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{V3}/directory/room/{}", query_value("#alt:localhost")),
            alice.token(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, content) = state_event(&server, &alice, &room, "m.room.canonical_alias").await;
    assert_eq!(content, json!({ "alias": "#main:localhost", "alt_aliases": [] }));
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{V3}/directory/room/{}", query_value("#main:localhost")),
            alice.token(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, content) = state_event(&server, &alice, &room, "m.room.canonical_alias").await;
    assert_eq!(content, json!({ "alt_aliases": [] }));

    // Bob made an alias that Alice listed; Bob deletes it but may not edit the canonical
    // alias event: the deletion still succeeds, and the stale alias does not block Alice's
    // later edits (only new aliases are checked).
    put_alias(&server, &bob, "#bobs:localhost", &room).await;
    let (status, body) = server
        .put(&path, alice.token(), json!({ "alt_aliases": ["#bobs:localhost"] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .request(
            Method::DELETE,
            &format!("{V3}/directory/room/{}", query_value("#bobs:localhost")),
            bob.token(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, content) = state_event(&server, &alice, &room, "m.room.canonical_alias").await;
    assert_eq!(content["alt_aliases"], json!(["#bobs:localhost"]));
    put_alias(&server, &alice, "#again:localhost", &room).await;
    let (status, body) = server
        .put(
            &path,
            alice.token(),
            json!({ "alias": "#again:localhost", "alt_aliases": ["#bobs:localhost"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn typing_without_a_timeout_is_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = format!("{V3}/rooms/{room}/typing/{}", alice.user_id);
    let (status, body) = server.put(&path, alice.token(), json!({ "typing": true })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = common::rooms::sync(&server, &alice, "").await;
    let typing = common::rooms::room_events(&body, &room, "ephemeral");
    assert_eq!(typing[0]["content"]["user_ids"], json!([alice.user_id]), "{body}");
    let (status, _) = server.put(&path, alice.token(), json!({ "typing": false })).await;
    assert_eq!(status, StatusCode::OK);
    // Still a 400 for nonsense.
    let (status, _) = server.put(&path, alice.token(), json!({ "typing": "yes" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .put(&path, alice.token(), json!({ "typing": true, "timeout": "x" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn identical_state_sent_twice_is_one_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let path = format!("{V3}/rooms/{room}/state/m.room.topic/");
    let (_, first) = server.put(&path, alice.token(), json!({ "topic": "same" })).await;
    let (_, second) = server.put(&path, alice.token(), json!({ "topic": "same" })).await;
    assert_eq!(first["event_id"], second["event_id"]);
    // Different content, or another sender, is a new event.
    let (_, third) = server.put(&path, alice.token(), json!({ "topic": "changed" })).await;
    assert_ne!(third["event_id"], first["event_id"]);
    let (_, messages) = server
        .get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50"), alice.token())
        .await;
    let topics = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.topic")
        .count();
    assert_eq!(topics, 2);
    // Bob may not set the topic: still refused, even with identical content.
    let levels = format!("{V3}/rooms/{room}/state/m.room.power_levels/");
    let (_, mut power) = server.get(&levels, alice.token()).await;
    power["events"]["m.room.topic"] = json!(50);
    server.put(&levels, alice.token(), power).await;
    assert_error(
        &server.put(&path, bob.token(), json!({ "topic": "changed" })).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn join_body_fields_go_into_the_member_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (status, body) = server
        .post(
            &format!("{V3}/join/{room}"),
            bob.token(),
            json!({ "displayname": "Bobby here", "reason": "hello", "org.example.extra": 1,
                    "membership": "leave" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, member) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.member/{}", bob.user_id),
            bob.token(),
        )
        .await;
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(member["displayname"], "Bobby here");
    assert_eq!(member["reason"], "hello");
    assert_eq!(member["org.example.extra"], 1);
    // Fields with a meaning must have their type; the join does not happen.
    let dan = server.register("dan").await;
    let (status, body) = server
        .post(&format!("{V3}/join/{room}"), dan.token(), json!({ "displayname": 5 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A join with a body that is not an object is refused and changes nothing.
    let carol = server.register("carol").await;
    let (status, _) = server
        .raw(
            Method::POST,
            &format!("{V3}/rooms/{room}/join"),
            carol.token(),
            b"[1]".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, members) = server
        .get(&format!("{V3}/rooms/{room}/joined_members"), alice.token())
        .await;
    assert!(members["joined"].get(&carol.user_id).is_none());
    assert!(members["joined"].get(&dan.user_id).is_none());
}

#[tokio::test]
async fn an_upgraded_room_has_guest_access_and_joined_members_have_both_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for preset in ["public_chat", "private_chat"] {
        let room = create_room(&server, &alice, json!({ "preset": preset })).await;
        let (status, body) = server
            .post(
                &format!("{V3}/rooms/{room}/upgrade"),
                alice.token(),
                json!({ "new_version": "11" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let new_room = body["replacement_room"].as_str().unwrap();
        let (status, access) = state_event(&server, &alice, new_room, "m.room.guest_access").await;
        assert_eq!(status, StatusCode::OK, "{preset}: {access}");
        assert!(access["guest_access"].is_string());
        let (_, rules) = state_event(&server, &alice, new_room, "m.room.join_rules").await;
        let expected = if preset == "public_chat" { "public" } else { "invite" };
        assert_eq!(rules["join_rule"], expected, "{preset}");
    }

    let room = create_room(&server, &alice, json!({})).await;
    let (status, body) = server
        .get(&format!("{V3}/rooms/{room}/joined_members"), alice.token())
        .await;
    assert_eq!(status, StatusCode::OK);
    let me = &body["joined"][&alice.user_id];
    assert_eq!(me["display_name"], "alice");
    assert!(me.as_object().unwrap().contains_key("avatar_url"), "{me}");
    let eve = server.register("eve").await;
    assert_error(
        &server
            .get(&format!("{V3}/rooms/{room}/joined_members"), eve.token())
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn concurrent_identical_room_creations_make_distinct_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    // Room version 12: the room ID is the create event's hash, so identical creations in one
    // millisecond would share it.
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (http, base, token) = (server.http.clone(), server.base.clone(), alice.access_token.clone());
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(format!("{base}{V3}/createRoom"))
                .bearer_auth(token)
                .json(&json!({ "room_version": "12" }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }));
    }
    let mut rooms = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        rooms.insert(body["room_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(rooms.len(), 60);
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 60);
}

#[tokio::test]
async fn event_types_and_state_keys_over_255_bytes_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let long = "x".repeat(256);
    let just = "x".repeat(255);
    for path in [
        format!("{V3}/rooms/{room}/send/{long}/t1"),
        format!("{V3}/rooms/{room}/state/org.example.s/{long}"),
        format!("{V3}/rooms/{room}/state/{long}/"),
    ] {
        assert_error(
            &server.put(&path, alice.token(), json!({})).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/state/org.example.s/{just}"),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put(&format!("{V3}/rooms/{room}/send/{just}/t2"), alice.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_alias_needs_a_localpart_and_a_send_needs_a_body() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    assert_error(
        &server
            .put(
                &format!("{V3}/directory/room/{}", query_value("#:localhost")),
                alice.token(),
                json!({ "room_id": room }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let (status, _) = server
        .get(
            &format!("{V3}/directory/room/{}", query_value("#:localhost")),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An empty body is no event content (Synapse: M_NOT_JSON).
    let (status, body) = server
        .raw(
            Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/t1"),
            alice.token(),
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_NOT_JSON", "{body}");
}

#[tokio::test]
async fn a_refused_creation_leaves_no_room_behind() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let refused = [
        json!({ "power_level_content_override": { "users": { alice.user_id.clone(): "a lot" } } }),
        json!({ "power_level_content_override": { "ban": [] } }),
        json!({ "initial_state": [
            { "type": "m.room.member", "state_key": bob.user_id, "content": { "membership": "join" } }
        ] }),
        json!({ "initial_state": [
            { "type": "org.example.s", "state_key": "k".repeat(256), "content": {} }
        ] }),
    ];
    for body in refused {
        let (status, response) = server
            .post(&format!("{V3}/createRoom"), alice.token(), body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
    }
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(joined["joined_rooms"], json!([]), "no half-built room");
    // Numeric strings are levels in older room versions, and are accepted.
    let (status, body) = server
        .post(
            &format!("{V3}/createRoom"),
            alice.token(),
            json!({ "room_version": "9", "power_level_content_override": { "events_default": "10" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_creation_the_auth_rules_refuse_midway_makes_nothing_at_all() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // In a v10 room the creator may lower her own level in the power levels event; the next
    // event (the join rules, state_default 50) is then refused by the auth rules, after the
    // create event, her join and the power levels were built: none of them may be kept, nor
    // the alias, the directory entry or the invite that came with the request.
    let body = json!({
        "room_version": "10",
        "preset": "public_chat",
        "visibility": "public",
        "room_alias_name": "halfbuilt",
        "invite": [bob.user_id],
        "power_level_content_override": { "users": { alice.user_id.clone(): 0 } },
    });
    let (status, response) = server.post(&format!("{V3}/createRoom"), alice.token(), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{response}");
    assert_eq!(response["errcode"], "M_FORBIDDEN");
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(joined["joined_rooms"], json!([]), "no half-built room");
    let (status, _) = server
        .get(
            &format!("{V3}/directory/room/{}", query_value("#halfbuilt:localhost")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no alias");
    let (_, public) = server.get(&format!("{V3}/publicRooms"), alice.token()).await;
    assert_eq!(public["chunk"], json!([]), "no directory entry");
    let synced = server.get(&format!("{V3}/sync"), bob.token()).await.1;
    assert!(
        synced["rooms"]["invite"]
            .as_object()
            .is_none_or(|rooms| rooms.is_empty()),
        "no invite: {synced}"
    );
    // An invitee who does not exist is refused before anything is made, too.
    let (status, _) = server
        .post(
            &format!("{V3}/createRoom"),
            alice.token(),
            json!({ "invite": ["@nobody:localhost"] }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(joined["joined_rooms"], json!([]));

    // The same request without the bad override makes the whole room, alias and all.
    let body = json!({
        "room_version": "10",
        "preset": "public_chat",
        "visibility": "public",
        "room_alias_name": "wholebuilt",
        "invite": [bob.user_id],
        "name": "Whole",
    });
    let (status, response) = server.post(&format!("{V3}/createRoom"), alice.token(), body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let room = response["room_id"].as_str().unwrap();
    let (_, alias) = server
        .get(
            &format!("{V3}/directory/room/{}", query_value("#wholebuilt:localhost")),
            None,
        )
        .await;
    assert_eq!(alias["room_id"], room);
    let (_, public) = server.get(&format!("{V3}/publicRooms"), alice.token()).await;
    assert_eq!(public["chunk"][0]["room_id"], room);
    assert_eq!(public["chunk"][0]["canonical_alias"], "#wholebuilt:localhost");
    let synced = server.get(&format!("{V3}/sync"), bob.token()).await.1;
    assert!(synced["rooms"]["invite"][room].is_object(), "{synced}");
}
