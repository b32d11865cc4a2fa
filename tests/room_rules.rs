//! Room rules: knocking, restricted joins, upgrades, history visibility, filters, and what
//! generic endpoints must not let through.

use crate::common::{
    TestServer, assert_error,
    rooms::{V3, create_room, join, messages, send_text},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

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

#[tokio::test]
async fn former_members_see_the_state_as_it_was_when_they_left() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "name": "Before" })).await;
    join(&server, &bob, &room).await;
    server
        .post(&format!("{V3}/rooms/{room}/leave"), bob.token(), json!({}))
        .await;
    server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.name/"),
            alice.token(),
            json!({ "name": "After" }),
        )
        .await;
    join(&server, &carol, &room).await;
    let (status, name) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.name/"), bob.token())
        .await;
    assert_eq!((status, name), (StatusCode::OK, json!({ "name": "Before" })));
    let (_, members) = server.get(&format!("{V3}/rooms/{room}/members"), bob.token()).await;
    let users: Vec<&str> = members["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["@alice:localhost", "@bob:localhost"],
        "carol joined after bob left"
    );
    let (_, now) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.name/"), alice.token())
        .await;
    assert_eq!(now, json!({ "name": "After" }));
}
