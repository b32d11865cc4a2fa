//! History: forward pagination keeps an `end` to continue from, the `prev_batch` of a sync
//! that holds a room's whole history, lazy-loaded members of `/context`, and events of rooms
//! the user cannot see.

use crate::common;

use crate::common::{
    TestServer,
    rooms::{V3, create_room, join, messages, query_value, room_events, send_text, sync},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn chunk(body: &Value) -> &[Value] {
    body["chunk"].as_array().map_or(&[], Vec::as_slice)
}

#[tokio::test]
async fn forward_pagination_always_gives_an_end_to_continue_from() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    send_text(&server, &alice, &room, "t1", "one").await;
    let (status, page) = messages(&server, &alice, &room, "dir=f&from=s0&limit=100").await;
    assert_eq!(status, StatusCode::OK);
    let end = page["end"].as_str().expect("end at the newest event").to_owned();
    assert!(chunk(&page).iter().any(|e| e["content"]["body"] == "one"));
    // Nothing new yet: an empty page, still with an end.
    let (_, page) = messages(&server, &alice, &room, &format!("dir=f&from={end}")).await;
    assert!(chunk(&page).is_empty(), "{page}");
    let end = page["end"].as_str().expect("end on an empty forward page").to_owned();
    // A later message is found from there, and only it.
    send_text(&server, &alice, &room, "t2", "two").await;
    let (_, page) = messages(&server, &alice, &room, &format!("dir=f&from={end}")).await;
    let bodies: Vec<&Value> = chunk(&page).iter().map(|e| &e["content"]["body"]).collect();
    assert_eq!(bodies, [&json!("two")], "{page}");

    // Backwards from the start there is no end: nothing precedes the room's creation.
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=100").await;
    assert!(page.get("end").is_none(), "{page}");
    // A bad token is a 400.
    let (status, body) = messages(&server, &alice, &room, "dir=f&from=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}

#[tokio::test]
async fn prev_batch_of_a_whole_history_sync_pages_back_sensibly() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    send_text(&server, &alice, &room, "t1", "first").await;
    let body = sync(&server, &alice, "").await;
    let timeline = &body["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], false, "{timeline}");
    assert_eq!(room_events(&body, &room, "timeline")[0]["type"], "m.room.create");
    let prev_batch = timeline["prev_batch"].as_str().unwrap();
    // Nothing precedes the create event: an empty chunk and no end.
    let (status, page) = messages(&server, &alice, &room, &format!("dir=b&from={prev_batch}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(chunk(&page).is_empty(), "{page}");
    assert!(page.get("end").is_none(), "{page}");

    // A timeline filtered to messages: what precedes the first message is still there.
    let filter = query_value(&json!({ "room": { "timeline": { "types": ["m.room.message"] } } }).to_string());
    let body = sync(&server, &alice, &format!("filter={filter}")).await;
    let prev_batch = body["rooms"]["join"][&room]["timeline"]["prev_batch"].as_str().unwrap();
    let (_, page) = messages(&server, &alice, &room, &format!("dir=b&from={prev_batch}&limit=100")).await;
    let kinds: Vec<&str> = chunk(&page).iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"m.room.create"), "{kinds:?}");
    assert!(!kinds.contains(&"m.room.message"), "{kinds:?}");
}

#[tokio::test]
async fn context_lazy_loads_only_the_members_it_needs() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let mut users = Vec::new();
    for name in ["bob", "carol", "dan"] {
        let user = server.register(name).await;
        join(&server, &user, &room).await;
        users.push(user);
    }
    let (_, sent) = send_text(&server, &users[0], &room, "b1", "from bob").await;
    let event_id = sent["event_id"].as_str().unwrap();
    let filter = query_value(&json!({ "lazy_load_members": true }).to_string());
    let path = format!(
        "{V3}/rooms/{room}/context/{}?limit=0&filter={filter}",
        common::rooms::enc(event_id)
    );
    let (status, body) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut members: Vec<&str> = body["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, [alice.user_id.as_str(), users[0].user_id.as_str()], "{body}");
    // Without lazy loading, everyone.
    let path = format!("{V3}/rooms/{room}/context/{}?limit=0", common::rooms::enc(event_id));
    let (_, body) = server.get(&path, alice.token()).await;
    let members = body["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .count();
    assert_eq!(members, 4);
}

#[tokio::test]
async fn an_event_of_a_room_the_user_cannot_see_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    let (_, sent) = send_text(&server, &alice, &room, "t1", "secret").await;
    let event_id = common::rooms::enc(sent["event_id"].as_str().unwrap());
    let path = format!("{V3}/rooms/{room}/event/{event_id}");
    let (status, body) = server.get(&path, eve.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let (status, body) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["content"]["body"], "secret");
    let (status, _) = server.get(&path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
