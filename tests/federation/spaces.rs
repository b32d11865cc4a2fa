//! Space hierarchies: a space on one server listed there, and from another server that is
//! in none of its rooms (asked over federation), as each user may see it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    Session, TestServer,
    federation::{NAMES, TestCa, start_federated},
};

async fn create(server: &TestServer, session: &Session, body: Value) -> String {
    let (status, room) = server
        .post("/_matrix/client/v3/createRoom", Some(&session.access_token), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    room["room_id"].as_str().unwrap().to_owned()
}

async fn add_child(server: &TestServer, session: &Session, space: &str, child: &str, extra: Value) {
    let mut content = json!({ "via": [NAMES[0]] });
    content
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}"),
            Some(&session.access_token),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The room IDs of a hierarchy page, in order, and the page's `next_batch`.
async fn walk(server: &TestServer, session: &Session, space: &str, query: &str) -> (Vec<String>, Value) {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{space}/hierarchy?{query}"),
            Some(&session.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rooms = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap().to_owned())
        .collect();
    (rooms, body)
}

#[tokio::test]
async fn a_space_lists_its_children_here_and_from_another_server() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let carol = a.register("carol").await;
    let bob = b.register("bob").await;
    let space_kind = json!({ "type": "m.space" });
    let space = create(
        a,
        &alice,
        json!({ "preset": "public_chat", "name": "The Space", "creation_content": space_kind }),
    )
    .await;
    let general = create(
        a,
        &alice,
        json!({ "preset": "public_chat", "name": "General", "topic": "chat" }),
    )
    .await;
    let secret = create(a, &alice, json!({ "preset": "private_chat", "name": "Secret" })).await;
    let sub = create(
        a,
        &alice,
        json!({ "preset": "public_chat", "name": "Sub-space", "creation_content": space_kind }),
    )
    .await;
    let deep = create(a, &alice, json!({ "preset": "public_chat", "name": "Deep" })).await;
    add_child(a, &alice, &space, &general, json!({ "order": "a", "suggested": true })).await;
    add_child(a, &alice, &space, &secret, json!({ "order": "b" })).await;
    add_child(a, &alice, &space, &sub, json!({ "order": "c" })).await;
    add_child(a, &alice, &sub, &deep, json!({})).await;

    // Alice sees everything, breadth first, children in `order`.
    let (rooms, body) = walk(a, &alice, &space, "").await;
    assert_eq!(
        rooms,
        vec![
            space.clone(),
            general.clone(),
            secret.clone(),
            sub.clone(),
            deep.clone()
        ]
    );
    let top = &body["rooms"][0];
    assert_eq!(top["name"], "The Space");
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["children_state"].as_array().unwrap().len(), 3, "{top}");
    assert_eq!(body["rooms"][1]["topic"], "chat");
    assert_eq!(body["rooms"][1]["children_state"], json!([]));
    // Carol, in none of the rooms, does not see the private one.
    let (rooms, _) = walk(a, &carol, &space, "").await;
    assert_eq!(rooms, vec![space.clone(), general.clone(), sub.clone(), deep.clone()]);
    // Pages of two, depth limits, suggested rooms only.
    let (first, body) = walk(a, &alice, &space, "limit=2").await;
    assert_eq!(first, vec![space.clone(), general.clone()]);
    let next = body["next_batch"].as_str().unwrap().to_owned();
    let (second, body) = walk(a, &alice, &space, &format!("limit=2&from={next}")).await;
    assert_eq!(second, vec![secret.clone(), sub.clone()]);
    let next = body["next_batch"].as_str().unwrap().to_owned();
    let (third, body) = walk(a, &alice, &space, &format!("limit=2&from={next}")).await;
    assert_eq!(third, vec![deep.clone()]);
    assert!(body.get("next_batch").is_none(), "{body}");
    let (shallow, _) = walk(a, &alice, &space, "max_depth=0").await;
    assert_eq!(shallow, vec![space.clone()]);
    let (suggested, _) = walk(a, &alice, &space, "suggested_only=true").await;
    assert_eq!(suggested, vec![space.clone(), general.clone()]);
    // A private room as the root, for someone outside it; a bad token.
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v1/rooms/{secret}/hierarchy"),
            Some(&carol.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v1/rooms/{space}/hierarchy?from=nonsense"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");

    // Bob joins the space (room IDs of version 12 name no server: a client finds a space
    // through a join or a link with servers). His server is in none of its children: it
    // asks A about them, and shows what B's users may see.
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{space}?server_name={}", NAMES[0]),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (rooms, body) = walk(b, &bob, &space, "").await;
    assert_eq!(
        rooms,
        vec![space.clone(), general.clone(), sub.clone(), deep.clone()],
        "{body}"
    );
    assert_eq!(body["rooms"][0]["name"], "The Space");
    assert_eq!(body["rooms"][1]["name"], "General");
    assert_eq!(body["rooms"][3]["name"], "Deep");
    // A room nobody knows.
    let (status, body) = b
        .get(
            &format!("/_matrix/client/v1/rooms/!nowhere:{}/hierarchy", NAMES[0]),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
