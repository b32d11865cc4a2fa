//! Relations, threads, bundled aggregations, context and timestamp lookup.

use crate::common::{Session, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_matrix/client/v1";

struct Room {
    id: String,
}

async fn setup(server: &TestServer) -> (Session, Session, Room) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (_, created) = server
        .post(
            &format!("{V3}/createRoom"),
            alice.token(),
            json!({ "preset": "public_chat" }),
        )
        .await;
    let id = created["room_id"].as_str().unwrap().to_owned();
    server
        .post(&format!("{V3}/rooms/{id}/join"), bob.token(), json!({}))
        .await;
    (alice, bob, Room { id })
}

async fn send(server: &TestServer, who: &Session, room: &Room, event_type: &str, txn: &str, content: Value) -> String {
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{}/send/{event_type}/{txn}", room.id),
            who.token(),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn edits_threads_and_reactions_are_related_and_bundled() {
    let server = TestServer::start().await;
    let (alice, bob, room) = setup(&server).await;
    let root = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        "root",
        json!({ "msgtype": "m.text", "body": "original" }),
    )
    .await;
    let edit = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        "edit",
        json!({
            "msgtype": "m.text", "body": "* fixed", "m.new_content": { "msgtype": "m.text", "body": "fixed" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": root }
        }),
    )
    .await;
    // An edit by someone else is not a valid replacement and is not bundled.
    send(
        &server,
        &bob,
        &room,
        "m.room.message",
        "fake",
        json!({
            "msgtype": "m.text", "body": "* hijack", "m.new_content": { "msgtype": "m.text", "body": "hijack" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": root }
        }),
    )
    .await;
    let reply1 = send(&server, &bob, &room, "m.room.message", "t1", json!({ "msgtype": "m.text", "body": "in thread", "m.relates_to": { "rel_type": "m.thread", "event_id": root } })).await;
    let reply2 = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        "t2",
        json!({ "msgtype": "m.text", "body": "me too", "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    )
    .await;
    let reaction = send(
        &server,
        &bob,
        &room,
        "m.reaction",
        "r1",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } }),
    )
    .await;

    let (_, event) = server
        .get(&format!("{V3}/rooms/{}/event/{root}", room.id), bob.token())
        .await;
    let relations = &event["unsigned"]["m.relations"];
    assert_eq!(relations["m.replace"]["event_id"], edit, "{event}");
    assert_eq!(relations["m.thread"]["count"], 2);
    assert_eq!(relations["m.thread"]["latest_event"]["event_id"], reply2);
    assert_eq!(relations["m.thread"]["current_user_participated"], true);

    let (status, all) = server
        .get(&format!("{V1}/rooms/{}/relations/{root}", room.id), bob.token())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["chunk"].as_array().unwrap().len(), 5);
    assert_eq!(all["chunk"][0]["event_id"], reaction, "newest first");
    let (_, threads) = server
        .get(
            &format!("{V1}/rooms/{}/relations/{root}/m.thread", room.id),
            bob.token(),
        )
        .await;
    let ids: Vec<&str> = threads["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [reply2.as_str(), reply1.as_str()]);
    let (_, reactions) = server
        .get(
            &format!("{V1}/rooms/{}/relations/{root}/m.annotation/m.reaction?dir=f", room.id),
            bob.token(),
        )
        .await;
    assert_eq!(reactions["chunk"][0]["content"]["m.relates_to"]["key"], "👍");
    let (_, paged) = server
        .get(&format!("{V1}/rooms/{}/relations/{root}?limit=2", room.id), bob.token())
        .await;
    assert_eq!(paged["chunk"].as_array().unwrap().len(), 2);
    let next = paged["next_batch"].as_str().unwrap();
    let (_, rest) = server
        .get(
            &format!("{V1}/rooms/{}/relations/{root}?limit=10&from={next}", room.id),
            bob.token(),
        )
        .await;
    assert_eq!(rest["chunk"].as_array().unwrap().len(), 3);

    let (status, list) = server
        .get(&format!("{V1}/rooms/{}/threads", room.id), bob.token())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["chunk"][0]["event_id"], root);
    assert_eq!(list["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2);
}

#[tokio::test]
async fn relations_paginate_from_sync_tokens() {
    let server = TestServer::start().await;
    let (alice, bob, room) = setup(&server).await;
    let root = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        "r",
        json!({ "msgtype": "m.text", "body": "root" }),
    )
    .await;
    let thread = |n: usize| json!({ "msgtype": "m.text", "body": format!("reply {n}"), "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    let early = send(&server, &bob, &room, "m.room.message", "t1", thread(1)).await;
    // A `/sync` `next_batch` and a sliding sync `pos` taken here separate the replies.
    let (_, synced) = server.get(&format!("{V3}/sync"), bob.token()).await;
    let next_batch = synced["next_batch"].as_str().unwrap().to_owned();
    let (_, sliding) = server
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            bob.token(),
            json!({ "lists": {} }),
        )
        .await;
    let pos = sliding["pos"].as_str().unwrap().to_owned();
    let late = send(&server, &bob, &room, "m.room.message", "t2", thread(2)).await;
    for token in [&next_batch, &pos] {
        for (dir, expected) in [("b", &early), ("f", &late)] {
            let (status, page) = server
                .get(
                    &format!("{V1}/rooms/{}/relations/{root}?dir={dir}&from={token}", room.id),
                    bob.token(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let ids: Vec<&str> = page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event_id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, [expected.as_str()], "dir={dir} from={token}");
        }
    }
    // `to` stops at a token: from the newest back to it, or from the oldest up to it.
    for (dir, expected) in [("b", &late), ("f", &early)] {
        let (status, page) = server
            .get(
                &format!("{V1}/rooms/{}/relations/{root}?dir={dir}&to={next_batch}", room.id),
                bob.token(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: Vec<&str> = page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [expected.as_str()], "dir={dir} to={next_batch}");
        assert!(page.get("next_batch").is_none(), "{page}");
    }
    // Its own tokens, page by page, in both directions.
    for (dir, order) in [("f", [&early, &late]), ("b", [&late, &early])] {
        let path = format!("{V1}/rooms/{}/relations/{root}?dir={dir}&limit=1", room.id);
        let (_, first) = server.get(&path, bob.token()).await;
        assert_eq!(first["chunk"][0]["event_id"], order[0].as_str(), "dir={dir}");
        let next = first["next_batch"].as_str().unwrap();
        let (_, second) = server.get(&format!("{path}&from={next}"), bob.token()).await;
        assert_eq!(second["chunk"][0]["event_id"], order[1].as_str(), "dir={dir}");
        assert_eq!(second["chunk"].as_array().unwrap().len(), 1);
        assert!(second.get("next_batch").is_none(), "dir={dir}: {second}");
    }
}

#[tokio::test]
async fn relations_are_private_to_the_room() {
    let server = TestServer::start().await;
    let (alice, _bob, room) = setup(&server).await;
    let eve = server.register("eve").await;
    let (_, private) = server.post(&format!("{V3}/createRoom"), alice.token(), json!({})).await;
    let private = Room {
        id: private["room_id"].as_str().unwrap().to_owned(),
    };
    let root = send(
        &server,
        &alice,
        &private,
        "m.room.message",
        "p",
        json!({ "msgtype": "m.text", "body": "secret" }),
    )
    .await;
    assert_error(
        &server
            .get(&format!("{V1}/rooms/{}/relations/{root}", private.id), eve.token())
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .get(&format!("{V1}/rooms/{}/threads", private.id), eve.token())
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // An event of another room is not found through this room.
    assert_error(
        &server
            .get(&format!("{V1}/rooms/{}/relations/{root}", room.id), alice.token())
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get(
                &format!("{V1}/rooms/{}/relations/{root}?from=zzz", private.id),
                alice.token(),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn context_returns_events_around_one_and_timestamps_find_events() {
    let server = TestServer::start().await;
    let (alice, bob, room) = setup(&server).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(
            send(
                &server,
                &alice,
                &room,
                "m.room.message",
                &format!("c{i}"),
                json!({ "msgtype": "m.text", "body": format!("{i}") }),
            )
            .await,
        );
    }
    let (status, context) = server
        .get(
            &format!("{V3}/rooms/{}/context/{}?limit=4", room.id, ids[4]),
            bob.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["event"]["event_id"], ids[4]);
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let after: Vec<&str> = context["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(before, [ids[3].as_str(), ids[2].as_str()]);
    assert_eq!(after, [ids[5].as_str(), ids[6].as_str()]);
    assert!(
        context["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    let eve = server.register("eve").await;
    assert_error(
        &server
            .get(&format!("{V3}/rooms/{}/context/{}", room.id, ids[4]), eve.token())
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    let (_, event) = server
        .get(&format!("{V3}/rooms/{}/event/{}", room.id, ids[6]), bob.token())
        .await;
    let ts = event["origin_server_ts"].as_u64().unwrap();
    let (status, found) = server
        .get(
            &format!("{V1}/rooms/{}/timestamp_to_event?ts={ts}&dir=f", room.id),
            bob.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["origin_server_ts"].as_u64().unwrap(), ts);
    let (_, later) = server
        .get(
            &format!("{V1}/rooms/{}/timestamp_to_event?ts={}&dir=f", room.id, ts + 3_600_000),
            bob.token(),
        )
        .await;
    assert_eq!(later["errcode"], "M_NOT_FOUND");
    let (status, _) = server
        .get(
            &format!("{V1}/rooms/{}/timestamp_to_event?ts=abc&dir=f", room.id),
            bob.token(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
