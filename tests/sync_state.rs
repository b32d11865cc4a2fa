//! `/sync` state and membership correctness: state hidden from a filtered timeline, state
//! changes in a gap or made while the user was away, lazy-loaded members of a gapped sync,
//! `limited` under type filters, `timeline.limit: 0`, presence of new room-mates, the
//! federation event format and when a summary names heroes.

use crate::common::{
    Session, TestServer,
    rooms::{V3, create_room, join, query_value, room_events, send_text, sync},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn filter(value: Value) -> String {
    query_value(&value.to_string())
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

/// (type, state_key) of every event in a room section.
fn keys(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["state_key"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

async fn put_state(server: &TestServer, who: &Session, room: &str, kind: &str, key: &str, content: Value) -> String {
    let (status, body) = server
        .put(&format!("{V3}/rooms/{room}/state/{kind}/{key}"), who.token(), content)
        .await;
    assert_eq!(status, StatusCode::OK, "state {kind}: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn leave(server: &TestServer, who: &Session, room: &str) {
    let (status, body) = server
        .post(&format!("{V3}/rooms/{room}/leave"), who.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "leave: {body}");
}

#[tokio::test]
async fn state_the_timeline_filter_hides_arrives_in_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    let first = put_state(&server, &alice, &room, "org.example.x", "", json!({ "n": 1 })).await;
    let only_x = filter(json!({ "room": { "timeline": { "types": [] }, "state": { "types": ["org.example.x"] } } }));

    // Initial: the event lies in what would have been the timeline; it must be in `state`.
    let body = sync(&server, &alice, &format!("filter={only_x}")).await;
    let state = room_events(&body, &room, "state");
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0]["event_id"], first.as_str());
    assert!(room_events(&body, &room, "timeline").is_empty());
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], false);

    // Incremental: the new value arrives in `state`.
    let since = next_batch(&body);
    let second = put_state(&server, &alice, &room, "org.example.x", "", json!({ "n": 2 })).await;
    let body = sync(&server, &alice, &format!("filter={only_x}&since={since}&timeout=0")).await;
    let state = room_events(&body, &room, "state");
    assert_eq!(state.len(), 1, "{body}");
    assert_eq!(state[0]["event_id"], second.as_str());
}

#[tokio::test]
async fn a_gapped_incremental_sync_has_every_state_change_of_the_gap() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    let body = sync(&server, &alice, "").await;
    let since = next_batch(&body);
    put_state(&server, &alice, &room, "m.room.topic", "", json!({ "topic": "one" })).await;
    put_state(&server, &alice, &room, "m.room.name", "", json!({ "name": "Gap" })).await;
    let topic = put_state(&server, &alice, &room, "m.room.topic", "", json!({ "topic": "two" })).await;
    for i in 0..5 {
        send_text(&server, &alice, &room, &format!("t{i}"), "filler").await;
    }
    let limit2 = filter(json!({ "room": { "timeline": { "limit": 2 } } }));
    let body = sync(&server, &alice, &format!("filter={limit2}&since={since}&timeout=0")).await;
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], true);
    let state = room_events(&body, &room, "state");
    let ids: Vec<&str> = state.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&topic.as_str()), "latest topic missing: {state:?}");
    assert!(
        keys(state).contains(&("m.room.name".into(), String::new())),
        "{state:?}"
    );
    // Only the latest topic: the state section is a state, not a history.
    assert_eq!(state.iter().filter(|e| e["type"] == "m.room.topic").count(), 1);
}

/// Alice leaves, Bob joins while she is away, Alice rejoins: her next sync must tell her Bob
/// is in the room, whatever the history visibility and however many messages surround it.
async fn rejoin_case(visibility: &str, messages_before: usize, messages_after: usize) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &carol, json!({ "preset": "public_chat" })).await;
    put_state(
        &server,
        &carol,
        &room,
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": visibility }),
    )
    .await;
    join(&server, &alice, &room).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    leave(&server, &alice, &room).await;
    for i in 0..messages_before {
        send_text(&server, &carol, &room, &format!("b{i}"), "while away").await;
    }
    join(&server, &bob, &room).await;
    put_state(
        &server,
        &carol,
        &room,
        "m.room.topic",
        "",
        json!({ "topic": "set while away" }),
    )
    .await;
    join(&server, &alice, &room).await;
    for i in 0..messages_after {
        send_text(&server, &carol, &room, &format!("a{i}"), "after").await;
    }
    let body = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    let joined = &body["rooms"]["join"][&room];
    let all: Vec<(String, String)> = keys(room_events(&body, &room, "state"))
        .into_iter()
        .chain(keys(room_events(&body, &room, "timeline")))
        .collect();
    let case = format!("{visibility}, {messages_before} before, {messages_after} after: {joined}");
    assert!(
        all.contains(&("m.room.member".into(), bob.user_id.clone())),
        "Bob's join lost; {case}"
    );
    assert!(
        all.contains(&("m.room.topic".into(), String::new())),
        "topic lost; {case}"
    );
    // Nothing from while she was away leaks through the timeline when history is hidden.
    if visibility == "joined" {
        let leaked = room_events(&body, &room, "timeline")
            .iter()
            .any(|e| e["content"]["body"] == "while away");
        assert!(!leaked, "{case}");
    }
}

#[tokio::test]
async fn membership_changes_made_while_away_arrive_on_rejoin() {
    rejoin_case("shared", 0, 0).await;
    rejoin_case("joined", 0, 0).await;
    rejoin_case("invited", 3, 0).await;
    rejoin_case("joined", 30, 0).await;
    rejoin_case("shared", 0, 30).await;
    rejoin_case("joined", 30, 30).await;
}

#[tokio::test]
async fn joining_gives_full_state_and_joining_then_leaving_in_one_batch_too() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "name": "Full" })).await;
    for i in 0..15 {
        send_text(&server, &alice, &room, &format!("t{i}"), "history").await;
    }
    let since = next_batch(&sync(&server, &bob, "").await);
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, &format!("since={since}&timeout=0")).await;
    let all: Vec<(String, String)> = keys(room_events(&body, &room, "state"))
        .into_iter()
        .chain(keys(room_events(&body, &room, "timeline")))
        .collect();
    for kind in [
        "m.room.create",
        "m.room.name",
        "m.room.power_levels",
        "m.room.join_rules",
    ] {
        assert!(all.contains(&(kind.into(), String::new())), "{kind} missing: {body}");
    }

    // Joined and left between two syncs: the leave section holds the room's state.
    let carol = server.register("carol").await;
    let since = next_batch(&sync(&server, &carol, "").await);
    join(&server, &carol, &room).await;
    leave(&server, &carol, &room).await;
    let body = sync(&server, &carol, &format!("since={since}&timeout=0")).await;
    let left = &body["rooms"]["leave"][&room];
    let all: Vec<(String, String)> = [&left["state"]["events"], &left["timeline"]["events"]]
        .into_iter()
        .flat_map(|events| keys(events.as_array().map_or(&[][..], Vec::as_slice)))
        .collect();
    for kind in ["m.room.create", "m.room.name", "m.room.power_levels"] {
        assert!(all.contains(&(kind.into(), String::new())), "{kind} missing: {left}");
    }
    assert!(all.contains(&("m.room.member".into(), carol.user_id.clone())), "{left}");
}

#[tokio::test]
async fn a_display_name_change_sends_only_itself_and_ignoring_keeps_member_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{}/displayname", alice.user_id),
            alice.token(),
            json!({ "displayname": "Alice B." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    assert!(room_events(&body, &room, "state").is_empty(), "{body}");
    let timeline = room_events(&body, &room, "timeline");
    assert_eq!(keys(timeline), [("m.room.member".to_owned(), alice.user_id.clone())]);

    // Alice ignores Bob: his messages go, his membership stays.
    send_text(&server, &bob, &room, "b1", "ignored").await;
    let (status, _) = server
        .put(
            &format!("{V3}/user/{}/account_data/m.ignored_user_list", alice.user_id),
            alice.token(),
            json!({ "ignored_users": { bob.user_id.clone(): {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &alice, "").await;
    let all: Vec<(String, String)> = keys(room_events(&body, &room, "state"))
        .into_iter()
        .chain(keys(room_events(&body, &room, "timeline")))
        .collect();
    assert!(all.contains(&("m.room.member".into(), bob.user_id.clone())), "{body}");
    let texts = room_events(&body, &room, "timeline")
        .iter()
        .any(|e| e["content"]["body"] == "ignored");
    assert!(!texts);
}

#[tokio::test]
async fn limit_zero_and_limited_follow_what_the_filter_wants() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    send_text(&server, &alice, &room, "t1", "one").await;
    send_text(&server, &alice, &room, "t2", "two").await;
    for i in 0..6 {
        put_state(&server, &alice, &room, "org.example.s", &format!("k{i}"), json!({})).await;
    }

    // limit 0: no events; the timeline left some out, and state still comes.
    let zero = filter(json!({ "room": { "timeline": { "limit": 0 } } }));
    let body = sync(&server, &alice, &format!("filter={zero}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["events"], json!([]), "{joined}");
    assert_eq!(joined["timeline"]["limited"], true);
    assert!(keys(room_events(&body, &room, "state")).contains(&("m.room.create".into(), String::new())));

    // Two messages wanted, two exist: not limited, however many other events are in between.
    let messages = filter(json!({ "room": { "timeline": { "limit": 2, "types": ["m.room.message"] } } }));
    let body = sync(&server, &alice, &format!("filter={messages}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(room_events(&body, &room, "timeline").len(), 2, "{joined}");
    assert_eq!(joined["timeline"]["limited"], false, "{joined}");
    // One wanted of two: limited.
    let one = filter(json!({ "room": { "timeline": { "limit": 1, "types": ["m.room.message"] } } }));
    let body = sync(&server, &alice, &format!("filter={one}")).await;
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], true);
    // The custom state events, hidden from that timeline, are all in `state`.
    let custom = keys(room_events(&body, &room, "state"))
        .into_iter()
        .filter(|(kind, _)| kind == "org.example.s")
        .count();
    assert_eq!(custom, 6);
}

#[tokio::test]
async fn lazy_members_of_a_gapped_sync_include_senders_and_the_gap_changes() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dan = server.register("dan").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    join(&server, &dan, &room).await;
    // The first sync's timeline holds only Alice's messages: no member of Bob's is sent.
    send_text(&server, &alice, &room, "s1", "before").await;
    send_text(&server, &alice, &room, "s2", "before").await;
    let lazy = |redundant: bool| {
        filter(json!({ "room": { "timeline": { "limit": 2 },
            "state": { "lazy_load_members": true, "include_redundant_members": redundant } } }))
    };
    let body = sync(&server, &alice, &format!("filter={}", lazy(false))).await;
    let since = next_batch(&body);
    // In the gap: Carol joins and Dan leaves (neither speaks at the end); then Bob speaks.
    join(&server, &carol, &room).await;
    leave(&server, &dan, &room).await;
    for i in 0..4 {
        send_text(&server, &alice, &room, &format!("a{i}"), "filler").await;
    }
    send_text(&server, &bob, &room, "b1", "bob at the end").await;
    let body = sync(
        &server,
        &alice,
        &format!("filter={}&since={since}&timeout=0", lazy(false)),
    )
    .await;
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], true);
    let members: Vec<String> = keys(room_events(&body, &room, "state"))
        .into_iter()
        .filter(|(kind, _)| kind == "m.room.member")
        .map(|(_, key)| key)
        .collect();
    for who in [&bob, &carol, &dan] {
        assert!(
            members.contains(&who.user_id),
            "{} missing from {members:?}",
            who.user_id
        );
    }
    let dan_event = room_events(&body, &room, "state")
        .iter()
        .find(|e| e["state_key"] == dan.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(dan_event["content"]["membership"], "leave");

    // Bob's member event is now held by this device: not resent without
    // include_redundant_members, resent with it.
    let since = next_batch(&body);
    send_text(&server, &bob, &room, "b2", "again").await;
    let body = sync(
        &server,
        &alice,
        &format!("filter={}&since={since}&timeout=0", lazy(false)),
    )
    .await;
    assert!(room_events(&body, &room, "state").is_empty(), "{body}");
    let body = sync(
        &server,
        &alice,
        &format!("filter={}&since={since}&timeout=0", lazy(true)),
    )
    .await;
    let members: Vec<(String, String)> = keys(room_events(&body, &room, "state"));
    assert!(
        members.contains(&("m.room.member".into(), bob.user_id.clone())),
        "{body}"
    );
}

#[tokio::test]
async fn presence_of_new_room_mates_arrives_in_the_next_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, _) = server
        .put(
            &format!("{V3}/presence/{}/status", bob.user_id),
            bob.token(),
            json!({ "presence": "online", "status_msg": "here" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let since = next_batch(&sync(&server, &alice, "").await);
    // Bob's presence did not change; he newly shares a room with Alice.
    join(&server, &bob, &room).await;
    let body = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    let presence: Vec<&Value> = body["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == bob.user_id.as_str())
        .collect();
    assert_eq!(presence.len(), 1, "{body}");
    assert_eq!(presence[0]["content"]["presence"], "online");
    assert_eq!(presence[0]["content"]["status_msg"], "here");

    // The same the other way round: Alice joins a room where Bob already is.
    let carol = server.register("carol").await;
    let since = next_batch(&sync(&server, &carol, "").await);
    join(&server, &carol, &room).await;
    let body = sync(&server, &carol, &format!("since={since}&timeout=0")).await;
    let senders: Vec<&Value> = body["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["sender"])
        .collect();
    assert!(senders.contains(&&json!(bob.user_id)), "{body}");
}

#[tokio::test]
async fn federation_event_format_returns_pdus() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    send_text(&server, &alice, &room, "t1", "pdu").await;
    let federation = filter(json!({ "event_format": "federation" }));
    let body = sync(&server, &alice, &format!("filter={federation}")).await;
    let timeline = room_events(&body, &room, "timeline");
    let message = timeline.iter().find(|e| e["type"] == "m.room.message").unwrap();
    for field in ["auth_events", "prev_events", "depth", "hashes", "signatures"] {
        assert!(message.get(field).is_some(), "{field} missing from {message}");
    }
    assert_eq!(message["content"]["body"], "pdu");
    // Client format (the default) has none of those.
    let body = sync(&server, &alice, "").await;
    let message = room_events(&body, &room, "timeline")
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap()
        .clone();
    assert!(message.get("auth_events").is_none() && message.get("hashes").is_none());
}

#[tokio::test]
async fn heroes_only_for_rooms_without_a_name_or_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let unnamed = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let named = create_room(&server, &alice, json!({ "preset": "public_chat", "name": "Named" })).await;
    let aliased = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "room_alias_name": "heroes" }),
    )
    .await;
    for room in [&unnamed, &named, &aliased] {
        join(&server, &bob, room).await;
    }
    let body = sync(&server, &bob, "").await;
    let summary = |room: &str| body["rooms"]["join"][room]["summary"].clone();
    assert_eq!(summary(&unnamed)["m.heroes"], json!([alice.user_id]));
    assert!(summary(&named).get("m.heroes").is_none(), "{}", summary(&named));
    assert!(summary(&aliased).get("m.heroes").is_none(), "{}", summary(&aliased));
    assert_eq!(summary(&named)["m.joined_member_count"], 2);
}
