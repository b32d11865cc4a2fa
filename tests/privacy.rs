//! What others may learn of a user: an erased account's messages stay hidden from people who
//! join later, and the user directory lists only people the searcher could meet (Synapse's
//! rules with `search_all_users: false`).

use crate::common;

use crate::common::{
    Session, TestServer, password_auth,
    rooms::{V3, create_room, join, messages, send_text},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn deactivate(server: &TestServer, who: &Session, erase: bool) {
    let path = format!("{V3}/account/deactivate");
    let (status, challenge) = server.post(&path, who.token(), json!({ "erase": erase })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let auth = password_auth(&who.user_id, challenge["session"].as_str());
    let (status, body) = server
        .post(&path, who.token(), json!({ "erase": erase, "auth": auth }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn bodies_of(page: &Value, sender: &str) -> Vec<Value> {
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == sender && e["type"] == "m.room.message")
        .map(|e| e["content"].clone())
        .collect()
}

#[tokio::test]
async fn an_erased_users_messages_are_hidden_from_later_joiners_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Bob made the room; Alice is in it when he writes.
    let room = create_room(&server, &bob, json!({ "preset": "public_chat" })).await;
    join(&server, &alice, &room).await;
    send_text(&server, &bob, &room, "t1", "bob was here").await;
    // Bob's state stays whole after the erasure: a room keeps its topic (and its encryption).
    let (status, _) = server
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.topic/"),
            bob.token(),
            json!({ "topic": "set by bob" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A plain deactivation hides nothing.
    let dan = server.register("dan").await;
    join(&server, &dan, &room).await;
    send_text(&server, &dan, &room, "t1", "dan was here").await;
    deactivate(&server, &dan, false).await;
    deactivate(&server, &bob, true).await;

    // Alice was there: she still reads Bob's message.
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=50").await;
    assert_eq!(bodies_of(&page, &bob.user_id)[0]["body"], "bob was here");
    // Carol joins later: Bob's message is redacted for her, Dan's is not.
    let carol = server.register("carol").await;
    join(&server, &carol, &room).await;
    let (_, page) = messages(&server, &carol, &room, "dir=b&limit=50").await;
    let erased = bodies_of(&page, &bob.user_id);
    assert_eq!(erased, [json!({})], "{page}");
    assert_eq!(bodies_of(&page, &dan.user_id)[0]["body"], "dan was here");
    // The same through sync.
    let body = common::rooms::sync(&server, &carol, "").await;
    let texts: Vec<&Value> = common::rooms::room_events(&body, &room, "timeline")
        .iter()
        .filter(|e| e["sender"] == bob.user_id.as_str() && e["type"] == "m.room.message")
        .map(|e| &e["content"])
        .collect();
    assert!(texts.iter().all(|content| content.get("body").is_none()), "{texts:?}");
    let topic = common::rooms::room_events(&body, &room, "state")
        .iter()
        .chain(common::rooms::room_events(&body, &room, "timeline"))
        .find(|e| e["type"] == "m.room.topic")
        .map(|e| e["content"]["topic"].clone());
    assert_eq!(topic, Some(json!("set by bob")), "{body}");
    // Nor does the federation format give the content away.
    let federation = common::rooms::query_value(&json!({ "event_format": "federation" }).to_string());
    let body = common::rooms::sync(&server, &carol, &format!("filter={federation}")).await;
    let leaked = common::rooms::room_events(&body, &room, "timeline")
        .iter()
        .any(|e| e["content"]["body"] == "bob was here");
    assert!(!leaked, "{body}");
    // And the profile is gone.
    let (status, _) = server
        .get(&format!("{V3}/profile/{}/displayname", bob.user_id), carol.token())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn search(server: &TestServer, who: &Session, term: &str) -> Vec<String> {
    let (status, body) = server
        .post(
            &format!("{V3}/user_directory/search"),
            who.token(),
            json!({ "search_term": term }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_directory_lists_only_people_the_searcher_could_meet() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    // Alice alone in a private room: nobody finds her, not even herself.
    create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    assert!(search(&server, &eve, "alice").await.is_empty());
    assert!(search(&server, &alice, "alice").await.is_empty());
    // Alice and Bob share a private room: they find each other; Eve finds neither.
    let private = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    server
        .post(
            &format!("{V3}/rooms/{private}/invite"),
            alice.token(),
            json!({ "user_id": bob.user_id }),
        )
        .await;
    join(&server, &bob, &private).await;
    assert_eq!(
        search(&server, &bob, "alice").await,
        std::slice::from_ref(&alice.user_id)
    );
    assert_eq!(search(&server, &alice, "bob").await, std::slice::from_ref(&bob.user_id));
    assert!(search(&server, &eve, "bob").await.is_empty());
    // A world-readable room counts as public: its members are found by anyone.
    let readable = create_room(
        &server,
        &bob,
        json!({ "preset": "private_chat", "initial_state": [
            { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }
        ] }),
    )
    .await;
    assert_eq!(search(&server, &eve, "bob").await, std::slice::from_ref(&bob.user_id));
    // Leaving it hides him again; deactivated users are never listed.
    server
        .post(&format!("{V3}/rooms/{readable}/leave"), bob.token(), json!({}))
        .await;
    assert!(search(&server, &eve, "bob").await.is_empty());
    let (status, _) = server
        .post(
            &format!("{V3}/user_directory/search"),
            eve.token(),
            json!({ "limit": 3 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .post(
            &format!("{V3}/user_directory/search"),
            None,
            json!({ "search_term": "a" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
