//! Memberships between two Hearths beyond plain joins and invites: knocking on a room of
//! another server, and restricted joins that the resident server authorises.

use reqwest::StatusCode;
use serde_json::json;

use super::{wait_for_invite, wait_for_membership};
use crate::common::{
    TestServer,
    federation::{NAMES, TestCa, start_federated},
};

/// Waits (up to 15 s) for the user's /sync to show a knock on the room; returns its state.
async fn wait_for_knock(server: &TestServer, token: &str, room_id: &str) -> Vec<serde_json::Value> {
    for _ in 0..150 {
        let (_, sync) = server.get("/_matrix/client/v3/sync?timeout=0", Some(token)).await;
        if let Some(events) = sync["rooms"]["knock"][room_id]["knock_state"]["events"].as_array() {
            return events.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no knock on {room_id} on {}", server.server_name());
}

async fn create_room(server: &TestServer, token: &str, body: serde_json::Value) -> String {
    let (status, room) = server.post("/_matrix/client/v3/createRoom", Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "{room}");
    room["room_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_user_of_another_server_knocks_is_let_in_and_can_withdraw_a_knock() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = b.register("carol").await;
    let room_id = create_room(
        a,
        &alice.access_token,
        json!({
            "preset": "private_chat",
            "room_version": "10",
            "name": "Knock knock",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
        }),
    )
    .await;
    let invite_only = create_room(a, &alice.access_token, json!({ "preset": "private_chat" })).await;

    // Bob knocks through A: his server keeps the knock and the room's description.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/knock/{room_id}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room_id.as_str());
    let described = wait_for_knock(b, &bob.access_token, &room_id).await;
    let kinds: Vec<&str> = described.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"m.room.create"), "{described:?}");
    assert!(
        described
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock knock"),
        "{described:?}"
    );
    assert!(
        described
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock"),
        "{described:?}"
    );
    // Knocking again while knocking is refused on the knocker's server.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/knock/{room_id}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Alice sees the knock, with its reason, and lets bob in.
    wait_for_membership(a, &alice.access_token, &room_id, &bob.user_id, "knock").await;
    let (_, knock) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}", bob.user_id),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(knock["reason"], "let me in", "{knock}");
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
            Some(&alice.access_token),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_invite(b, &bob.access_token, &room_id).await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, &room_id, &bob.user_id, "join").await;

    // Carol knocks, then thinks better of it: her leave goes through A.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/knock/{room_id}?via={}", NAMES[0]),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, &room_id, &carol.user_id, "knock").await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, &room_id, &carol.user_id, "leave").await;

    // A room that takes no knocks refuses one, and nothing is kept on either side.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/knock/{invite_only}?via={}", NAMES[0]),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (_, sync) = b
        .get("/_matrix/client/v3/sync?timeout=0", Some(&carol.access_token))
        .await;
    assert!(sync["rooms"]["knock"][&invite_only].is_null(), "{sync}");
    let (status, _) = a
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{invite_only}/state/m.room.member/{}",
                carol.user_id
            ),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // No server to ask: a clear 404.
    let (status, body) = b
        .post(
            "/_matrix/client/v3/knock/!nowhere:unreachable.invalid",
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_restricted_room_lets_in_members_of_an_allowed_room_on_the_residents_word() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = b.register("carol").await;
    let lobby = create_room(
        a,
        &alice.access_token,
        json!({ "preset": "public_chat", "room_version": "10" }),
    )
    .await;
    let inner = create_room(
        a,
        &alice.access_token,
        json!({
            "preset": "private_chat",
            "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules",
                "state_key": "",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": lobby }] },
            }],
        }),
    )
    .await;
    // Bob is in no allowed room yet: A refuses to authorise him.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{inner}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // In the lobby, he may: A names alice as the authoriser and signs the join.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{lobby}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, &lobby, &bob.user_id, "join").await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{inner}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (server, token) in [(a, &alice.access_token), (b, &bob.access_token)] {
        wait_for_membership(server, token, &inner, &bob.user_id, "join").await;
        let (_, member) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{inner}/state/m.room.member/{}", bob.user_id),
                Some(token),
            )
            .await;
        assert_eq!(
            member["join_authorised_via_users_server"],
            alice.user_id.as_str(),
            "{member}"
        );
    }

    // Carol, in no allowed room, still cannot; and nothing of hers is in the room.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{inner}?via={}", NAMES[0]),
            Some(&carol.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{inner}/state/m.room.member/{}", carol.user_id),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_room_upgraded_on_one_server_is_followed_from_another() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let mut room_id = create_room(
        a,
        &alice.access_token,
        json!({ "preset": "public_chat", "room_version": "10", "name": "Evolving" }),
    )
    .await;
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{room_id}?via={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_membership(a, &alice.access_token, &room_id, &bob.user_id, "join").await;

    // 10 → 11 → 12: each time bob's server sees the tombstone, and bob follows it to the
    // new room through the server that sent it.
    for version in ["11", "12"] {
        // Bob, a member without power, cannot upgrade it.
        let (status, body) = b
            .post(
                &format!("/_matrix/client/v3/rooms/{room_id}/upgrade"),
                Some(&bob.access_token),
                json!({ "new_version": version }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, body) = a
            .post(
                &format!("/_matrix/client/v3/rooms/{room_id}/upgrade"),
                Some(&alice.access_token),
                json!({ "new_version": version }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let new_room = body["replacement_room"].as_str().unwrap().to_owned();
        let mut tombstone = serde_json::Value::Null;
        for _ in 0..150 {
            let (status, content) = b
                .get(
                    &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.tombstone/"),
                    Some(&bob.access_token),
                )
                .await;
            if status == StatusCode::OK {
                tombstone = content;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(tombstone["replacement_room"], new_room.as_str(), "{tombstone}");
        let (status, body) = b
            .post(
                &format!("/_matrix/client/v3/join/{new_room}?via={}", NAMES[0]),
                Some(&bob.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, create) = b
            .get(
                &format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.create/"),
                Some(&bob.access_token),
            )
            .await;
        assert_eq!(create["room_version"], version, "{create}");
        assert_eq!(create["predecessor"]["room_id"], room_id.as_str(), "{create}");
        let (_, name) = b
            .get(
                &format!("/_matrix/client/v3/rooms/{new_room}/state/m.room.name/"),
                Some(&bob.access_token),
            )
            .await;
        assert_eq!(name["name"], "Evolving", "the name moves with the room: {name}");
        super::say(b, &bob.access_token, &new_room, &format!("hello-v{version}")).await;
        super::wait_for_message(a, &alice.access_token, &new_room, &format!("hello-v{version}")).await;
        room_id = new_room;
    }
}
