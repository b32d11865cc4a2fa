//! Joining with partial state (MSC3706): the resident server leaves the members out of
//! `send_join`; the joiner reads and sends at once, its server fetches the members in the
//! background, and events by members it did not know yet wait for them.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{say, wait_for_message};
use crate::common::federation::{FakeServer, NAMES, TestCa, start_federated};

#[tokio::test]
async fn a_big_room_is_joined_at_once_and_its_members_follow() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_alias_name": "big", "name": "Big room" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let mut members = Vec::new();
    for index in 0..40 {
        let member = a.register(&format!("member{index}")).await;
        let (status, body) = a
            .post(
                &format!("/_matrix/client/v3/join/{room_id}"),
                Some(&member.access_token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        members.push(member);
    }

    // Bob joins through A: his server asks for partial state and has the room at once.
    let (status, joined) = b
        .post(
            &format!("/_matrix/client/v3/join/%23big:{}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let (_, first) = b
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob.access_token))
        .await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    say(b, &bob.access_token, &room_id, "hello big room").await;
    // A member B did not know of at the join speaks; B takes it in once the members are there.
    say(a, &members[17].access_token, &room_id, "welcome, bob").await;
    let seen = wait_for_message(a, &alice.access_token, &room_id, "hello big room").await;
    assert_eq!(seen["sender"], bob.user_id.as_str());
    let seen = wait_for_message(b, &bob.access_token, &room_id, "welcome, bob").await;
    assert_eq!(seen["sender"], members[17].user_id.as_str());

    // The member list, once whole: everyone.
    let (status, listed) = b
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let joined = listed["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 42, "{listed}");
    assert!(joined.contains_key(&members[39].user_id));
    let (status, state) = b
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}",
                members[3].user_id
            ),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["membership"], "join");
    // Bob's client, which synced right after the join, learns every member: from that first
    // sync, or (the members having come later) from the next one, which gives the room whole.
    let (_, next) = b
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
            Some(&bob.access_token),
        )
        .await;
    let members_in = |sync: &serde_json::Value| -> std::collections::HashSet<String> {
        let room = &sync["rooms"]["join"][&room_id];
        room["state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(room["timeline"]["events"].as_array().into_iter().flatten())
            .filter(|e| e["type"] == "m.room.member")
            .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
            .collect()
    };
    let known: std::collections::HashSet<String> = members_in(&first).union(&members_in(&next)).cloned().collect();
    assert!(
        members.iter().all(|member| known.contains(&member.user_id)),
        "{} of 40 members reached bob's client",
        members.iter().filter(|m| known.contains(&m.user_id)).count()
    );
    // And the room carries on both ways.
    say(b, &bob.access_token, &room_id, "thanks all").await;
    wait_for_message(a, &members[3].access_token, &room_id, "thanks all").await;
    say(a, &members[39].access_token, &room_id, "last word").await;
    wait_for_message(b, &bob.access_token, &room_id, "last word").await;
}

#[tokio::test]
async fn send_join_leaves_the_members_out_when_asked() {
    let ca = TestCa::new();
    let remote = FakeServer::start(&ca, "remote.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[remote.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let carol = a.register("carol").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_version": "11", "name": "Named" }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap();
    a.post(
        &format!("/_matrix/client/v3/join/{room_id}"),
        Some(&carol.access_token),
        json!({}),
    )
    .await;
    let mallory = "@mallory:remote.test";
    let (status, made) = remote
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/make_join/{room_id}/{mallory}?ver=11"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let mut event = made["event"].clone();
    event["origin_server_ts"] = json!(hearth::storage::now_ms());
    let (event_id, pdu) = remote.sign_event(event, "11");
    let (status, joined) = remote
        .signed(
            a,
            Method::PUT,
            &format!("/_matrix/federation/v2/send_join/{room_id}/{event_id}?omit_members=true"),
            Some(pdu),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["members_omitted"], true);
    assert!(
        joined["servers_in_room"].as_array().unwrap().contains(&json!(NAMES[0])),
        "{joined}"
    );
    let state = joined["state"].as_array().unwrap();
    assert!(state.iter().all(|e| e["type"] != "m.room.member"), "{joined}");
    assert!(state.iter().any(|e| e["type"] == "m.room.power_levels"));
    let auth_chain = joined["auth_chain"].as_array().unwrap();
    // Nothing comes twice: what is in the state is not repeated in the auth chain.
    let in_state: Vec<&serde_json::Value> = state.iter().collect();
    assert!(auth_chain.iter().all(|e| !in_state.contains(&e)), "{joined}");
    // The creator's membership authorises the state: it comes in the auth chain.
    assert!(
        auth_chain
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()),
        "{joined}"
    );
}
