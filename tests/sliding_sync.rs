//! Simplified sliding sync (MSC4186): lists, ranges and ordering, required state with `$LAZY`
//! and `$ME`, subscriptions, connection positions, and the extensions.

use crate::common;

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, enc, join, send_text},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn sliding(server: &TestServer, who: &Session, query: &str, body: Value) -> Value {
    let (status, response) = server.post(&format!("{PATH}{query}"), who.token(), body).await;
    assert_eq!(status, StatusCode::OK, "sliding sync: {response}");
    response
}

fn list_request(range: [u64; 2], required_state: Value, timeline_limit: u64) -> Value {
    json!({
        "conn_id": "main",
        "lists": { "all": { "range": range, "required_state": required_state, "timeline_limit": timeline_limit } },
    })
}

fn timeline_bodies(room: &Value) -> Vec<&str> {
    room["timeline"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn lists_are_ordered_by_activity_and_cut_by_range() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let quiet = create_room(&server, &alice, json!({ "name": "Quiet" })).await;
    let busy = create_room(&server, &alice, json!({ "name": "Busy" })).await;
    send_text(&server, &alice, &quiet, "t1", "old").await;
    send_text(&server, &alice, &busy, "t2", "new").await;

    let request = list_request([0, 0], json!([["m.room.name", ""]]), 1);
    let body = sliding(&server, &alice, "", request.clone()).await;
    assert_eq!(body["lists"]["all"]["count"], 2);
    let rooms = body["rooms"].as_object().unwrap();
    assert_eq!(rooms.keys().collect::<Vec<_>>(), [&busy]);
    let room = &rooms[&busy];
    assert_eq!(room["initial"], true);
    assert_eq!(room["name"], "Busy");
    assert_eq!(room["membership"], "join");
    assert_eq!(room["joined_count"], 1);
    assert_eq!(timeline_bodies(room), ["new"]);
    assert!(room["bump_stamp"].is_i64());
    let required: Vec<&str> = room["required_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(required, ["m.room.name"]);
    assert!(body["pos"].is_string());

    // Activity in the quiet room moves it to the top of the list.
    let pos = body["pos"].as_str().unwrap();
    send_text(&server, &alice, &quiet, "t3", "wake up").await;
    let body = sliding(&server, &alice, &format!("?pos={pos}&timeout=5000"), request).await;
    let rooms = body["rooms"].as_object().unwrap();
    assert_eq!(rooms.keys().collect::<Vec<_>>(), [&quiet]);
    assert_eq!(timeline_bodies(&rooms[&quiet]), ["wake up"]);
}

#[tokio::test]
async fn incremental_responses_carry_only_what_changed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    // The latest event is Bob's join: the first answer holds only his member event.
    let request = list_request([0, 9], json!([["m.room.create", ""], ["m.room.member", "$LAZY"]]), 1);
    let first = sliding(&server, &bob, "", request.clone()).await;
    let pos = first["pos"].as_str().unwrap().to_owned();

    // Nothing new: a zero timeout answers at once with no rooms.
    let idle = sliding(&server, &bob, &format!("?pos={pos}&timeout=0"), request.clone()).await;
    assert_eq!(idle["rooms"], json!({}));

    let waiting = {
        let http = server.http.clone();
        let url = format!("{}{PATH}?pos={pos}&timeout=20000", server.base);
        let token = bob.access_token.clone();
        let body = request.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    send_text(&server, &alice, &room, "t1", "ping").await;
    let body = waiting.await.unwrap();
    let result = &body["rooms"][&room];
    assert!(result.get("initial").is_none(), "{result}");
    assert_eq!(timeline_bodies(result), ["ping"]);
    assert_eq!(result["num_live"], 1);
    // Lazy members: the new sender's member event comes along.
    let members: Vec<&str> = result["required_state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, [alice.user_id.as_str()]);
}

#[tokio::test]
async fn required_state_understands_lazy_me_wildcards_and_both_forms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat", "topic": "hi" })).await;
    for name in ["bob", "carol"] {
        let user = server.register(name).await;
        join(&server, &user, &room).await;
    }
    let types = |body: &Value| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = body["rooms"][&room]["required_state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["state_key"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let me = sliding(
        &server,
        &alice,
        "",
        list_request([0, 0], json!([["m.room.member", "$ME"]]), 0),
    )
    .await;
    assert_eq!(types(&me), [("m.room.member".to_owned(), alice.user_id.clone())]);
    let all = sliding(&server, &alice, "", list_request([0, 0], json!([["*", "*"]]), 0)).await;
    assert!(types(&all).len() >= 7, "{:?}", types(&all));
    let members = sliding(
        &server,
        &alice,
        "",
        list_request([0, 0], json!([["m.room.member", "*"]]), 0),
    )
    .await;
    assert_eq!(types(&members).len(), 3);
    let object_form = json!({ "include": [{}], "exclude": [{ "type": "m.room.member" }] });
    let body = sliding(&server, &alice, "", list_request([0, 0], object_form, 0)).await;
    let found = types(&body);
    assert!(found.iter().all(|(kind, _)| kind != "m.room.member"));
    assert!(found.iter().any(|(kind, _)| kind == "m.room.topic"));
}

#[tokio::test]
async fn subscriptions_reach_rooms_outside_the_lists_but_not_foreign_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mine = create_room(&server, &alice, json!({ "name": "Mine" })).await;
    let _newer = create_room(&server, &alice, json!({ "name": "Newer" })).await;
    let foreign = create_room(&server, &bob, json!({ "name": "Bob's" })).await;
    let body = sliding(
        &server,
        &alice,
        "",
        json!({
            "lists": { "top": { "range": [0, 0], "required_state": [], "timeline_limit": 0 } },
            "room_subscriptions": {
                mine.clone(): { "required_state": [["m.room.name", ""]], "timeline_limit": 2 },
                foreign.clone(): { "required_state": [["*", "*"]], "timeline_limit": 2 },
            },
        }),
    )
    .await;
    let rooms = body["rooms"].as_object().unwrap();
    assert!(rooms.contains_key(&mine));
    assert!(rooms[&mine].get("lists").is_none());
    assert!(!rooms.contains_key(&foreign), "a room the user was never in leaked");
}

#[tokio::test]
async fn positions_belong_to_their_connection_and_expire() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let request = list_request([0, 0], json!([]), 1);
    let first = sliding(&server, &alice, "", request.clone()).await;
    let pos1 = first["pos"].as_str().unwrap().to_owned();
    // A retry with the same pos (lost response) is answered again.
    send_text(&server, &alice, &room, "t1", "one").await;
    let again = sliding(&server, &alice, &format!("?pos={pos1}"), request.clone()).await;
    let retry = sliding(&server, &alice, &format!("?pos={pos1}"), request.clone()).await;
    assert_eq!(timeline_bodies(&again["rooms"][&room]), ["one"]);
    assert_eq!(timeline_bodies(&retry["rooms"][&room]), ["one"]);
    let pos2 = retry["pos"].as_str().unwrap().to_owned();
    sliding(&server, &alice, &format!("?pos={pos2}"), request.clone()).await;

    // Made-up positions, another device's, and positions older than the one continued from
    // all send the client back to the start.
    let other_device = server.login("alice", common::PASSWORD).await.1;
    let other = Session::from_json(&other_device);
    for (who, pos) in [
        (&alice, "s1_0_0_0_0_0_0.999"),
        (&other, pos2.as_str()),
        (&alice, pos1.as_str()),
    ] {
        let result = server
            .post(&format!("{PATH}?pos={pos}"), who.token(), request.clone())
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    }
    // The pos works as a /messages token.
    let (status, page) = server
        .get(
            &format!("{V3}/rooms/{room}/messages?dir=b&from={pos2}&limit=1"),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["chunk"][0]["content"]["body"], "one");
}

#[tokio::test]
async fn invites_show_stripped_state_and_filters_select_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "name": "Party" })).await;
    let _own = create_room(&server, &bob, json!({})).await;
    server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    let body = sliding(
        &server,
        &bob,
        "",
        json!({ "lists": { "invites": { "range": [0, 9], "required_state": [], "timeline_limit": 1, "filters": { "is_invited": true } } } }),
    )
    .await;
    assert_eq!(body["lists"]["invites"]["count"], 1);
    let invite = &body["rooms"][&room];
    assert_eq!(invite["membership"], "invite");
    let stripped = invite["stripped_state"].as_array().unwrap();
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Party")
    );
    // Clients (matrix-rust-sdk, as Synapse sends it) read `invite_state`: the same events.
    assert_eq!(invite["invite_state"], invite["stripped_state"]);
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == bob.user_id.as_str()
        && e["content"]["membership"] == "invite"));
    assert!(
        invite.get("timeline").is_none(),
        "an invitee sees no timeline: {invite}"
    );
}

#[tokio::test]
async fn knocks_carry_stripped_state_under_both_names() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "name": "Club", "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
    )
    .await;
    let (status, _) = server
        .post(&format!("{V3}/knock/{room}"), bob.token(), json!({ "reason": "hi" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sliding(
        &server,
        &bob,
        "",
        json!({ "lists": { "all": { "ranges": [[0, 9]], "required_state": [], "timeline_limit": 1 } } }),
    )
    .await;
    let knock = &body["rooms"][&room];
    assert_eq!(knock["membership"], "knock");
    let stripped = knock["invite_state"].as_array().expect("invite_state");
    assert_eq!(knock["invite_state"], knock["stripped_state"]);
    // The client tells a knock from an invite by the user's own membership in it.
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == bob.user_id.as_str()
        && e["content"]["membership"] == "knock"));
}

#[tokio::test]
async fn a_rejected_invite_carries_the_users_own_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "name": "Party", "topic": "secret plans" })).await;
    server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    let request = json!({
        "conn_id": "main",
        "lists": { "all": { "range": [0, 9], "required_state": [["m.room.member", "$ME"]], "timeline_limit": 5 } },
    });
    let first = sliding(&server, &bob, "", request.clone()).await;
    assert_eq!(first["rooms"][&room]["membership"], "invite");
    let (status, _) = server
        .post(&format!("{V3}/rooms/{room}/leave"), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let pos = first["pos"].as_str().unwrap();
    let next = sliding(&server, &bob, &format!("?pos={pos}"), request).await;
    let result = &next["rooms"][&room];
    assert_eq!(result["membership"], "leave", "{next}");
    // Without stripped state or a member event, clients would file the room as joined.
    let state = result["required_state"].as_array().expect("required_state");
    assert_eq!(state.len(), 1, "{result}");
    assert_eq!(state[0]["type"], "m.room.member");
    assert_eq!(state[0]["state_key"], bob.user_id.as_str());
    assert_eq!(state[0]["content"]["membership"], "leave");
    assert!(
        result.get("invite_state").is_none() && result.get("timeline").is_none(),
        "{result}"
    );
    assert!(!next.to_string().contains("secret plans"), "{result}");
}

#[tokio::test]
async fn extensions_carry_typing_receipts_and_account_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let (_, sent) = send_text(&server, &alice, &room, "t1", "hello").await;
    let event_id = sent["event_id"].as_str().unwrap();
    let request = json!({
        "lists": { "all": { "range": [0, 9], "required_state": [], "timeline_limit": 1 } },
        "extensions": {
            "typing": { "enabled": true },
            "receipts": { "enabled": true },
            "account_data": { "enabled": true },
            "to_device": { "enabled": true },
            "e2ee": { "enabled": true },
        },
    });
    let first = sliding(&server, &alice, "", request.clone()).await;
    assert!(first["extensions"]["e2ee"]["device_lists"]["changed"].is_array());
    assert!(first["extensions"]["to_device"]["next_batch"].is_string());
    let pos = first["pos"].as_str().unwrap();

    server
        .put(
            &format!("{V3}/rooms/{room}/typing/{}", bob.user_id),
            bob.token(),
            json!({ "typing": true, "timeout": 10000 }),
        )
        .await;
    server
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{}", enc(event_id)),
            bob.token(),
            json!({}),
        )
        .await;
    server
        .put(
            &format!("{V3}/user/{}/account_data/org.example", alice.user_id),
            alice.token(),
            json!({ "x": 1 }),
        )
        .await;
    let body = sliding(&server, &alice, &format!("?pos={pos}&timeout=0"), request).await;
    let extensions = &body["extensions"];
    assert_eq!(
        extensions["typing"]["rooms"][&room]["content"]["user_ids"],
        json!([bob.user_id])
    );
    assert!(extensions["receipts"]["rooms"][&room]["content"][event_id]["m.read"][&bob.user_id].is_object());
    assert!(
        extensions["account_data"]["global"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example")
    );
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    create_room(&server, &alice, json!({})).await;
    assert_error(
        &server.post(PATH, None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let inverted = list_request([5, 1], json!([]), 1);
    assert_error(
        &server.post(PATH, alice.token(), inverted).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let bad_state = list_request([0, 1], json!([["only-one"]]), 1);
    assert_error(
        &server.post(PATH, alice.token(), bad_state).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let wrong_shape = json!({ "lists": { "all": { "range": "everything" } } });
    assert_error(
        &server.post(PATH, alice.token(), wrong_shape).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let not_json = server
        .raw(reqwest::Method::POST, PATH, alice.token(), b"{nope".to_vec())
        .await;
    assert_error(&not_json, StatusCode::BAD_REQUEST, "M_NOT_JSON");
    let presence = server
        .post(&format!("{PATH}?set_presence=dancing"), alice.token(), json!({}))
        .await;
    assert_error(&presence, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (_, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true);
}

#[tokio::test]
async fn widening_required_state_sends_state_the_client_never_had() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "topic": "unchanged topic" })).await;
    let narrow = list_request([0, 0], json!([["m.room.create", ""]]), 0);
    let first = sliding(&server, &alice, "", narrow).await;
    assert!(!first.to_string().contains("unchanged topic"));
    let pos = first["pos"].as_str().unwrap();
    let wide = list_request([0, 0], json!([["m.room.create", ""], ["m.room.topic", ""]]), 0);
    let body = sliding(&server, &alice, &format!("?pos={pos}&timeout=0"), wide).await;
    let state = body["rooms"][&room]["required_state"].as_array().expect("room resent");
    assert!(
        state.iter().any(|e| e["content"]["topic"] == "unchanged topic"),
        "{state:?}"
    );
    assert!(
        state.iter().all(|e| e["type"] != "m.room.create"),
        "unchanged, already sent: {state:?}"
    );
}

#[tokio::test]
async fn a_room_banned_from_before_joining_shows_only_the_ban() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    let room = create_room(&server, &alice, json!({ "name": "Private", "topic": "secret plans" })).await;
    server
        .post(
            &format!("{V3}/rooms/{room}/ban"),
            alice.token(),
            json!({ "user_id": mallory.user_id }),
        )
        .await;
    // A thread hung off the ban is still the room's business, not the banned user's.
    let (_, ban) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.member/{}?format=event", mallory.user_id),
            alice.token(),
        )
        .await;
    let ban_id = ban["event_id"].as_str().expect("the ban event").to_owned();
    let (status, _) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t1"),
            alice.token(),
            json!({ "msgtype": "m.text", "body": "more secret plans", "m.relates_to": { "rel_type": "m.thread", "event_id": ban_id } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sliding(
        &server,
        &mallory,
        "",
        json!({
            "lists": { "all": { "range": [0, 9], "required_state": [["*", "*"]], "timeline_limit": 10 } },
            "room_subscriptions": { room.clone(): { "required_state": [["*", "*"]], "timeline_limit": 10 } },
        }),
    )
    .await;
    let result = &body["rooms"][&room];
    assert_eq!(result["membership"], "ban");
    assert!(!body.to_string().contains("secret plans"), "{result}");
    // Only the ban itself, which clients read the membership from.
    let state = result["required_state"].as_array().expect("required_state");
    assert_eq!(state.len(), 1, "{result}");
    assert_eq!(state[0]["type"], "m.room.member");
    assert_eq!(state[0]["content"]["membership"], "ban");
    assert!(result.get("timeline").is_none(), "{result}");
}
