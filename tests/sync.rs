//! `/sync`: initial and incremental, long-poll, limited timelines, filters, membership
//! sections, account data, ignored users and tokens across a restart.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::{
    TestServer, assert_error,
    rooms::{V3, create_room, join, messages, query_value, room_events, send_text, sync},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn bodies(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn initial_sync_shows_joined_rooms_with_state_timeline_and_summary() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "name": "Hearth", "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "t1", "hello").await;

    let body = sync(&server, &bob, "").await;
    assert!(body["next_batch"].as_str().unwrap().starts_with('s'));
    let timeline = room_events(&body, &room, "timeline");
    assert_eq!(bodies(timeline), ["hello"]);
    let joined = &body["rooms"]["join"][&room];
    assert!(joined["timeline"]["prev_batch"].is_string());
    assert_eq!(joined["summary"]["m.joined_member_count"], 2);
    // Named rooms have no heroes (spec: only rooms without a name or canonical alias).
    assert!(joined["summary"].get("m.heroes").is_none());
    // State holds what came before the timeline; the two never overlap.
    let state = room_events(&body, &room, "state");
    let timeline_ids: Vec<&Value> = timeline.iter().map(|e| &e["event_id"]).collect();
    assert!(state.iter().all(|e| !timeline_ids.contains(&&e["event_id"])));
    let all: Vec<&str> = state
        .iter()
        .chain(timeline)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in ["m.room.create", "m.room.name", "m.room.power_levels", "m.room.member"] {
        assert!(all.contains(&kind), "{kind} missing from {all:?}");
    }
}

#[tokio::test]
async fn incremental_sync_returns_only_new_events_and_long_polls() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "t1", "before").await;
    let first = sync(&server, &bob, "").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // Nothing new: an immediate empty answer with the same position.
    let empty = sync(&server, &bob, &format!("since={since}&timeout=0")).await;
    assert_eq!(empty["rooms"]["join"], json!({}));

    // A long-poll returns as soon as the message lands, not at its timeout.
    let waiting = {
        let http = server.http.clone();
        let url = format!("{}{V3}/sync?since={since}&timeout=20000", server.base);
        let token = bob.access_token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_text(&server, &alice, &room, "t2", "after").await;
    let (body, elapsed) = waiting.await.unwrap();
    assert!(elapsed < Duration::from_secs(10), "long-poll took {elapsed:?}");
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["after"]);
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert!(body["rooms"]["join"][&room].get("summary").is_none());

    // The sending device sees its transaction ID.
    let own = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    let event = &room_events(&own, &room, "timeline")[0];
    assert_eq!(event["unsigned"]["transaction_id"], "t2");
}

#[tokio::test]
async fn limited_timeline_gap_is_filled_by_messages_without_duplicates() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..15 {
        send_text(&server, &alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let filter = query_value(&json!({ "room": { "timeline": { "limit": 5 } } }).to_string());
    let body = sync(&server, &alice, &format!("since={since}&filter={filter}&timeout=0")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true);
    assert_eq!(
        bodies(room_events(&body, &room, "timeline")),
        ["m10", "m11", "m12", "m13", "m14"]
    );
    let prev_batch = joined["timeline"]["prev_batch"].as_str().unwrap();
    let (status, page) = messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=20&from={prev_batch}&to={since}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut earlier = bodies(page["chunk"].as_array().unwrap());
    earlier.reverse();
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(earlier, expected);
}

#[tokio::test]
async fn bad_tokens_and_filters_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    assert_error(
        &server.get(&format!("{V3}/sync"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    for bad in ["nonsense", "s1_x", "s-1"] {
        let result = server.get(&format!("{V3}/sync?since={bad}"), alice.token()).await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let result = server.get(&format!("{V3}/sync?filter=9999"), alice.token()).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let result = server
        .get(&format!("{V3}/sync?filter=%7Bnot%20json"), alice.token())
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let result = server
        .get(&format!("{V3}/sync?set_presence=dancing"), alice.token())
        .await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);
}

#[tokio::test]
async fn filters_are_stored_per_user_and_applied() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("{V3}/user/{}/filter", alice.user_id);
    let definition = json!({
        "room": {
            "timeline": { "limit": 2, "not_types": ["m.room.topic"] },
            "state": { "types": ["m.room.*"], "not_types": ["m.room.power_levels"] },
        },
        "presence": { "not_types": ["*"] },
    });
    let (status, created) = server.post(&path, alice.token(), definition.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["filter_id"].as_str().unwrap();
    let (status, stored) = server.get(&format!("{path}/{id}"), alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["room"]["timeline"]["limit"], 2);
    // Another user's filters are theirs alone.
    assert_error(
        &server.get(&format!("{path}/{id}"), bob.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.post(&path, bob.token(), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&format!("{path}/404"), alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let bad = server
        .post(
            &path,
            alice.token(),
            json!({ "room": { "timeline": { "limit": "ten" } } }),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_BAD_JSON");

    let room = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "t1", "one").await;
    server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.topic/"),
            alice.token(),
            json!({ "topic": "t" }),
        )
        .await;
    send_text(&server, &alice, &room, "t2", "two").await;
    let body = sync(&server, &alice, &format!("filter={id}")).await;
    let timeline = room_events(&body, &room, "timeline");
    assert_eq!(timeline.len(), 2);
    assert!(timeline.iter().all(|e| e["type"] != "m.room.topic"));
    let state = room_events(&body, &room, "state");
    assert!(state.iter().all(|e| e["type"] != "m.room.power_levels"));
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));

    // A rooms filter narrows the rooms.
    let only = query_value(&json!({ "room": { "rooms": [other] } }).to_string());
    let body = sync(&server, &alice, &format!("filter={only}")).await;
    let rooms: Vec<&String> = body["rooms"]["join"].as_object().unwrap().keys().collect();
    assert_eq!(rooms, [&other]);
}

#[tokio::test]
async fn lazy_loading_sends_only_the_members_the_timeline_needs() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dan"] {
        let user = server.register(name).await;
        join(&server, &user, &room).await;
        others.push(user);
    }
    send_text(&server, &others[0], &room, "t1", "from bob").await;
    let filter = query_value(
        &json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } }).to_string(),
    );
    let body = sync(&server, &alice, &format!("filter={filter}")).await;
    let members: Vec<&str> = room_events(&body, &room, "state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    let mut members = members;
    members.sort_unstable();
    assert_eq!(members, [alice.user_id.as_str(), others[0].user_id.as_str()]);
    // The summary still counts everyone.
    assert_eq!(body["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 4);

    // Incrementally, a new sender's member event arrives with their first message.
    let since = body["next_batch"].as_str().unwrap();
    send_text(&server, &others[1], &room, "t2", "from carol").await;
    let body = sync(&server, &alice, &format!("filter={filter}&since={since}&timeout=0")).await;
    let state = room_events(&body, &room, "state");
    assert!(
        state.iter().any(|e| e["state_key"] == others[1].user_id.as_str()),
        "{state:?}"
    );
}

fn member_keys(body: &Value, room: &str) -> Vec<String> {
    let mut keys: Vec<String> = room_events(body, room, "state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort_unstable();
    keys
}

/// Alice, Bob and Carol in a public room Alice made.
async fn three_in_a_room() -> (TestServer, [common::Session; 3], String) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    (server, [alice, bob, carol], room)
}

/// A filter for the last event only, with lazy-loaded members.
fn lazy_last_one() -> String {
    query_value(&json!({ "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } } }).to_string())
}

#[tokio::test]
async fn lazy_loaded_members_are_not_resent_once_acknowledged_but_are_after_a_lost_response() {
    let (server, [alice, bob, carol], room) = three_in_a_room().await;
    let lazy = lazy_last_one();
    send_text(&server, &bob, &room, "t1", "one").await;
    let body = sync(&server, &alice, &format!("filter={lazy}")).await;
    assert_eq!(member_keys(&body, &room), [alice.user_id.clone(), bob.user_id.clone()]);
    let first = body["next_batch"].as_str().unwrap().to_owned();

    // Bob's member event reached alice in a response she acknowledged by syncing from it.
    send_text(&server, &bob, &room, "t2", "two").await;
    let body = sync(&server, &alice, &format!("filter={lazy}&since={first}&timeout=0")).await;
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["two"]);
    assert!(member_keys(&body, &room).is_empty(), "{body}");
    // Unless the filter asks for redundant members.
    let redundant = query_value(
        &json!({ "room": { "timeline": { "limit": 1 },
            "state": { "lazy_load_members": true, "include_redundant_members": true } } })
        .to_string(),
    );
    let body = sync(&server, &alice, &format!("filter={redundant}&since={first}&timeout=0")).await;
    assert!(member_keys(&body, &room).contains(&bob.user_id), "{body}");

    // Carol's member event goes out in a response that is lost: the retry from the same token
    // carries it again.
    let second = body["next_batch"].as_str().unwrap().to_owned();
    send_text(&server, &carol, &room, "t3", "three").await;
    let lost = sync(&server, &alice, &format!("filter={lazy}&since={second}&timeout=0")).await;
    assert_eq!(member_keys(&lost, &room), [carol.user_id.as_str()]);
    let retry = sync(&server, &alice, &format!("filter={lazy}&since={second}&timeout=0")).await;
    assert_eq!(member_keys(&retry, &room), [carol.user_id.as_str()]);
    // Once acknowledged, it is not sent again.
    send_text(&server, &carol, &room, "t4", "four").await;
    let next = retry["next_batch"].as_str().unwrap();
    let body = sync(&server, &alice, &format!("filter={lazy}&since={next}&timeout=0")).await;
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["four"]);
    assert!(member_keys(&body, &room).is_empty(), "{body}");
}

#[tokio::test]
async fn a_member_only_in_a_lost_response_is_sent_again_after_a_later_token() {
    let (server, [alice, bob, carol], room) = three_in_a_room().await;
    let lazy = lazy_last_one();
    send_text(&server, &carol, &room, "c0", "c0").await;
    let body = sync(&server, &alice, &format!("filter={lazy}")).await;
    let start = body["next_batch"].as_str().unwrap().to_owned();

    // Bob's member event goes out with his message, in a response the client never gets.
    send_text(&server, &bob, &room, "b1", "b1").await;
    let lost = sync(&server, &alice, &format!("filter={lazy}&since={start}&timeout=0")).await;
    assert!(member_keys(&lost, &room).contains(&bob.user_id), "{lost}");
    // The retry comes later: Bob's message has scrolled out of its limited timeline, so it
    // does not need his member event and does not carry it.
    send_text(&server, &carol, &room, "c2", "c2").await;
    let received = sync(&server, &alice, &format!("filter={lazy}&since={start}&timeout=0")).await;
    assert_eq!(bodies(room_events(&received, &room, "timeline")), ["c2"]);
    assert!(!member_keys(&received, &room).contains(&bob.user_id), "{received}");

    // Bob speaks again: the client never had his member event, so it comes now.
    send_text(&server, &bob, &room, "b3", "b3").await;
    let next = received["next_batch"].as_str().unwrap();
    let body = sync(&server, &alice, &format!("filter={lazy}&since={next}&timeout=0")).await;
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["b3"]);
    assert!(member_keys(&body, &room).contains(&bob.user_id), "{body}");
}

#[tokio::test]
async fn state_before_a_limited_timeline_is_whole_across_many_state_changes() {
    // Enough state changes that the server's stored state spans snapshots and delta chains.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    for (i, key) in (0..70).map(|i| (i, format!("k{}", i % 60))) {
        let (status, _) = server
            .put(
                &format!("{V3}/rooms/{room}/state/org.example.counter/{key}"),
                alice.token(),
                json!({ "n": i }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    send_text(&server, &alice, &room, "t1", "after the state").await;
    let filter = query_value(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
    let body = sync(&server, &alice, &format!("filter={filter}")).await;
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["after the state"]);
    let counters: std::collections::HashMap<&str, i64> = room_events(&body, &room, "state")
        .iter()
        .filter(|e| e["type"] == "org.example.counter")
        .map(|e| (e["state_key"].as_str().unwrap(), e["content"]["n"].as_i64().unwrap()))
        .collect();
    assert_eq!(counters.len(), 60);
    // Keys written twice show the later value; the others their only one.
    assert_eq!(counters["k0"], 60);
    assert_eq!(counters["k9"], 69);
    assert_eq!(counters["k10"], 10);
    assert_eq!(counters["k59"], 59);
}

#[tokio::test]
async fn invites_leaves_and_knocks_have_their_sections() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "name": "Secret" })).await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    let invite = &body["rooms"]["invite"][&room]["invite_state"]["events"];
    let kinds: Vec<&str> = invite
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"m.room.name") && kinds.contains(&"m.room.member"),
        "{kinds:?}"
    );
    assert!(body["rooms"]["join"].get(&room).is_none());

    join(&server, &bob, &room).await;
    let since = body["next_batch"].as_str().unwrap();
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    assert!(body["rooms"]["join"].get(&room).is_some(), "{body}");
    assert!(body["rooms"]["invite"].get(&room).is_none());

    let since = body["next_batch"].as_str().unwrap();
    server
        .post(&format!("{V3}/rooms/{room}/leave"), bob.token(), json!({}))
        .await;
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    let left = &body["rooms"]["leave"][&room];
    let last = left["timeline"]["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["content"]["membership"], "leave");
    // Afterwards the room is gone from incremental syncs, and the initial sync leaves it
    // out unless the filter asks for left rooms.
    let since = body["next_batch"].as_str().unwrap();
    send_text(&server, &alice, &room, "t1", "after bob left").await;
    let body = sync(&server, &bob, &format!("since={since}&timeout=0")).await;
    assert_eq!(body["rooms"]["leave"], json!({}));
    assert!(sync(&server, &bob, "").await["rooms"]["leave"].get(&room).is_none());
    let include = query_value(&json!({ "room": { "include_leave": true } }).to_string());
    assert!(
        sync(&server, &bob, &format!("filter={include}")).await["rooms"]["leave"]
            .get(&room)
            .is_some()
    );

    // Knocking.
    let knockable = create_room(
        &server,
        &alice,
        json!({ "room_version": "10", "initial_state": [
        { "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }
    ] }),
    )
    .await;
    let carol = server.register("carol").await;
    let (status, body) = server
        .post(&format!("{V3}/knock/{knockable}"), carol.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = sync(&server, &carol, "").await;
    assert!(
        body["rooms"]["knock"][&knockable]["knock_state"]["events"].is_array(),
        "{body}"
    );
}

#[tokio::test]
async fn account_data_arrives_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .put(
            &format!("{V3}/user/{}/account_data/org.example.a", alice.user_id),
            alice.token(),
            json!({ "a": 1 }),
        )
        .await;
    server
        .put(
            &format!("{V3}/user/{}/rooms/{room}/account_data/org.example.b", alice.user_id),
            alice.token(),
            json!({ "b": 2 }),
        )
        .await;
    let body = sync(&server, &alice, &format!("since={since}&timeout=5000")).await;
    let global = body["account_data"]["events"].as_array().unwrap();
    assert!(
        global
            .iter()
            .any(|e| e["type"] == "org.example.a" && e["content"]["a"] == 1),
        "{body}"
    );
    let per_room = room_events(&body, &room, "account_data");
    assert!(per_room.iter().any(|e| e["type"] == "org.example.b"), "{body}");
}

#[tokio::test]
async fn ignored_users_disappear_from_timelines_and_invites() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    server
        .put(
            &format!("{V3}/user/{}/account_data/m.ignored_user_list", bob.user_id),
            bob.token(),
            json!({ "ignored_users": { alice.user_id.clone(): {} } }),
        )
        .await;
    send_text(&server, &alice, &room, "t1", "ignored").await;
    let body = sync(&server, &bob, "").await;
    assert!(bodies(room_events(&body, &room, "timeline")).is_empty());
    let other = create_room(&server, &alice, json!({})).await;
    server
        .post(
            &format!("{V3}/rooms/{other}/invite"),
            alice.token(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    let body = sync(&server, &bob, "").await;
    assert!(body["rooms"]["invite"].get(&other).is_none());
}

#[tokio::test]
async fn tokens_stay_valid_across_a_restart() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "t1", "before").await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = server.restart().await;
    send_text(&server, &alice, &room, "t2", "after restart").await;
    let body = sync(&server, &alice, &format!("since={since}&timeout=5000")).await;
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["after restart"]);
}

#[tokio::test]
async fn a_profile_change_does_not_resend_the_timeline_and_full_state_keeps_the_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "t1", "already seen").await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{}/displayname", alice.user_id),
            alice.token(),
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &alice, &format!("since={since}&timeout=5000")).await;
    let timeline = room_events(&body, &room, "timeline");
    assert!(bodies(timeline).is_empty(), "old messages resent: {timeline:?}");
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["content"]["displayname"], "Alice A.");
    assert_eq!(body["rooms"]["join"][&room]["timeline"]["limited"], false);

    // full_state: the whole state, but the timeline still starts at the token.
    let since = body["next_batch"].as_str().unwrap();
    send_text(&server, &alice, &room, "t2", "new").await;
    let body = sync(&server, &alice, &format!("since={since}&full_state=true")).await;
    assert_eq!(bodies(room_events(&body, &room, "timeline")), ["new"]);
    let state = room_events(&body, &room, "state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{state:?}");
}

#[tokio::test]
async fn a_user_banned_before_joining_sees_nothing_of_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let room = create_room(&server, &alice, json!({ "name": "Private", "topic": "secret plans" })).await;
    let since = sync(&server, &mallory, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/ban"),
            alice.token(),
            json!({ "user_id": mallory.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &mallory, &format!("since={since}&timeout=5000")).await;
    let left = &body["rooms"]["leave"][&room];
    assert!(left.is_object(), "{body}");
    assert!(!left.to_string().contains("secret plans"), "{left}");
    let include = query_value(&json!({ "room": { "include_leave": true } }).to_string());
    let body = sync(&server, &mallory, &format!("filter={include}")).await;
    assert!(!body.to_string().contains("secret plans"));
}

#[tokio::test]
async fn a_forgotten_room_leaves_sync_until_the_next_membership() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let forget = format!("{V3}/rooms/{room}/forget");
    // Only a room the user has left can be forgotten.
    assert_error(
        &server.post(&forget, bob.token(), json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    join(&server, &bob, &room).await;
    assert_error(
        &server.post(&forget, bob.token(), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    assert_error(
        &server.post(&forget, None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    server
        .post(&format!("{V3}/rooms/{room}/leave"), bob.token(), json!({}))
        .await;
    let include = query_value(&json!({ "room": { "include_leave": true } }).to_string());
    let left = |body: &Value| body["rooms"]["leave"].get(&room).is_some();
    assert!(left(&sync(&server, &bob, &format!("filter={include}")).await));
    let (status, body) = server.post(&forget, bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Gone from sync, even for a filter that asks for left rooms, and its history is closed.
    let body = sync(&server, &bob, &format!("filter={include}")).await;
    assert!(!left(&body), "{body}");
    assert_error(
        &messages(&server, &bob, &room, "dir=b").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // Forgetting twice is fine.
    assert_eq!(server.post(&forget, bob.token(), json!({})).await.0, StatusCode::OK);
    // A new membership brings the room back.
    let since = body["next_batch"].as_str().unwrap();
    server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    assert!(body["rooms"]["invite"].get(&room).is_some(), "{body}");

    // A ban shows in sliding sync on every new connection, until forgotten.
    let carol = server.register("carol").await;
    join(&server, &carol, &room).await;
    server
        .post(
            &format!("{V3}/rooms/{room}/ban"),
            alice.token(),
            json!({ "user_id": carol.user_id }),
        )
        .await;
    let sliding = || async {
        let (status, body) = server
            .post(
                "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
                carol.token(),
                json!({ "lists": { "all": { "range": [0, 9], "required_state": [], "timeline_limit": 1 } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["rooms"].get(&room).is_some()
    };
    assert!(sliding().await);
    assert_eq!(server.post(&forget, carol.token(), json!({})).await.0, StatusCode::OK);
    assert!(!sliding().await);
}
