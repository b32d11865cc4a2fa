//! Aliases, the public room directory, reports, room account data and tags, and profile
//! changes reaching member events.

use crate::common::{
    TestServer, assert_error,
    rooms::{V3, create_room},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn rooms_get_aliases_and_can_be_joined_by_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "room_alias_name": "lobby" }),
    )
    .await;
    let (status, resolved) = server
        .get(&format!("{V3}/directory/room/%23lobby:localhost"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resolved["room_id"], room);
    assert_eq!(resolved["servers"], json!(["localhost"]));
    let (_, canonical) = server
        .get(
            &format!("{V3}/rooms/{room}/state/m.room.canonical_alias"),
            alice.token(),
        )
        .await;
    assert_eq!(canonical["alias"], "#lobby:localhost");
    // Taken names are refused, before any room is made.
    let taken = server
        .post(
            &format!("{V3}/createRoom"),
            bob.token(),
            json!({ "room_alias_name": "lobby" }),
        )
        .await;
    assert_error(&taken, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
    let (status, joined) = server
        .post(&format!("{V3}/join/%23lobby:localhost"), bob.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["room_id"], room);
    // A second alias, listed with the first; only its creator or a moderator may delete it.
    let path = format!("{V3}/directory/room/%23hall:localhost");
    assert_eq!(
        server.put(&path, bob.token(), json!({ "room_id": room })).await.0,
        StatusCode::OK
    );
    let conflict = server.put(&path, alice.token(), json!({ "room_id": room })).await;
    assert_eq!(conflict.0, StatusCode::CONFLICT);
    let (_, aliases) = server.get(&format!("{V3}/rooms/{room}/aliases"), bob.token()).await;
    assert_eq!(aliases["aliases"], json!(["#hall:localhost", "#lobby:localhost"]));
    let carol = server.register("carol").await;
    let lobby = format!("{V3}/directory/room/%23lobby:localhost");
    assert_error(
        &server.request(Method::DELETE, &lobby, carol.token(), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.request(Method::DELETE, &lobby, bob.token(), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(
        server.request(Method::DELETE, &lobby, alice.token(), None).await.0,
        StatusCode::OK
    );
    assert_error(&server.get(&lobby, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let bad = server
        .put(
            &format!("{V3}/directory/room/%23x:elsewhere.org"),
            alice.token(),
            json!({ "room_id": room }),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

#[tokio::test]
async fn the_public_directory_lists_published_rooms_and_searches_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let public = create_room(
        &server,
        &alice,
        json!({ "visibility": "public", "name": "Rust chat", "topic": "crabs" }),
    )
    .await;
    let private = create_room(&server, &alice, json!({ "name": "Secret" })).await;
    let (status, list) = server.get(&format!("{V3}/publicRooms"), None).await;
    assert_eq!(status, StatusCode::OK);
    let rooms: Vec<&str> = list["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, [public.as_str()]);
    assert_eq!(list["chunk"][0]["name"], "Rust chat");
    assert_eq!(list["chunk"][0]["num_joined_members"], 1);
    // `public` is the default and may be left out.
    assert!(list["chunk"][0].get("join_rule").is_none_or(|rule| rule == "public"));
    let (_, found) = server
        .post(
            &format!("{V3}/publicRooms"),
            alice.token(),
            json!({ "filter": { "generic_search_term": "CRAB" } }),
        )
        .await;
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    let (_, none) = server
        .post(
            &format!("{V3}/publicRooms"),
            alice.token(),
            json!({ "filter": { "generic_search_term": "zebra" } }),
        )
        .await;
    assert_eq!(none["chunk"], json!([]));

    let listing = format!("{V3}/directory/list/room/{private}");
    assert_eq!(server.get(&listing, None).await.1["visibility"], "private");
    assert_error(
        &server
            .put(&listing, bob.token(), json!({ "visibility": "public" }))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(
        server
            .put(&listing, alice.token(), json!({ "visibility": "public" }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(server.get(&listing, None).await.1["visibility"], "public");
    let (_, page) = server.get(&format!("{V3}/publicRooms?limit=1"), None).await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 1);
    let next = page["next_batch"].as_str().unwrap();
    let (_, rest) = server
        .get(&format!("{V3}/publicRooms?limit=1&since={next}"), None)
        .await;
    assert_eq!(rest["chunk"].as_array().unwrap().len(), 1);
    assert_ne!(rest["chunk"][0]["room_id"], page["chunk"][0]["room_id"]);
    assert_error(
        &server.get(&format!("{V3}/publicRooms?since=bogus"), None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn the_public_directory_filters_by_room_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "visibility": "public", "name": "Chat" })).await;
    let space = create_room(
        &server,
        &alice,
        json!({ "visibility": "public", "name": "Space", "creation_content": { "type": "m.space" } }),
    )
    .await;
    let search = |room_types: serde_json::Value| {
        let server = &server;
        let alice = &alice;
        async move {
            let (status, body) = server
                .post(
                    &format!("{V3}/publicRooms"),
                    alice.token(),
                    json!({ "filter": { "room_types": room_types } }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let mut ids: Vec<String> = body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["room_id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(search(json!(["m.space"])).await, vec![space.clone()]);
    // `null` stands for rooms without a type.
    assert_eq!(search(json!([null])).await, vec![room.clone()]);
    let mut both = vec![room.clone(), space.clone()];
    both.sort();
    assert_eq!(search(json!([null, "m.space"])).await, both);
    assert_eq!(search(json!([])).await, both);
    assert!(search(json!(["org.example.unknown"])).await.is_empty());
    // A type that is not a string or null is malformed.
    assert_error(
        &server
            .post(
                &format!("{V3}/publicRooms"),
                alice.token(),
                json!({ "filter": { "room_types": [7] } }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn reports_need_a_visible_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (_, sent) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t"),
            alice.token(),
            json!({ "msgtype": "m.text", "body": "x" }),
        )
        .await;
    let event = sent["event_id"].as_str().unwrap();
    let path = format!("{V3}/rooms/{room}/report/{event}");
    assert_eq!(
        server.post(&path, alice.token(), json!({ "reason": "test" })).await.0,
        StatusCode::OK
    );
    assert_error(
        &server.post(&path, eve.token(), json!({ "reason": "x" })).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .raw(
                Method::POST,
                &format!("{V3}/rooms/{room}/report"),
                alice.token(),
                b"{".to_vec(),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_eq!(
        server
            .post(
                &format!("{V3}/rooms/{room}/report"),
                eve.token(),
                json!({ "reason": "spam" })
            )
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_can_be_reported_without_revealing_who_exists() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mallory = server.register("mallory").await;
    for path in [
        format!("{V3}/users/{}/report", mallory.user_id),
        format!(
            "/_matrix/client/unstable/org.matrix.msc4260/users/{}/report",
            mallory.user_id
        ),
    ] {
        let (status, body) = server.post(&path, alice.token(), json!({ "reason": "spam" })).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, json!({}));
    }
    // The reason may be blank.
    let path = format!("{V3}/users/{}/report", mallory.user_id);
    assert_eq!(
        server.post(&path, alice.token(), json!({ "reason": "" })).await.0,
        StatusCode::OK
    );
    // Unknown and remote users get the same answer as real ones.
    for user in ["@nobody:localhost", "@someone:elsewhere.example"] {
        let (status, _) = server
            .post(
                &format!("{V3}/users/{user}/report"),
                alice.token(),
                json!({ "reason": "x" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{user}");
    }
    // Malformed input and missing authentication.
    assert_error(
        &server.post(&path, alice.token(), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(
                &format!("{V3}/users/not-a-user/report"),
                alice.token(),
                json!({ "reason": "x" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.raw(Method::POST, &path, alice.token(), b"{".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &server.post(&path, None, json!({ "reason": "x" })).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn room_account_data_and_tags_are_per_user_and_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let data = format!("{V3}/user/@alice:localhost/rooms/{room}/account_data/org.example.pref");
    assert_eq!(
        server.put(&data, alice.token(), json!({ "muted": true })).await.0,
        StatusCode::OK
    );
    assert_eq!(server.get(&data, alice.token()).await.1, json!({ "muted": true }));
    assert_error(
        &server.get(&data, bob.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let global = format!("{V3}/user/@alice:localhost/account_data/org.example.pref");
    assert_error(
        &server.get(&global, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let fully_read = format!("{V3}/user/@alice:localhost/rooms/{room}/account_data/m.fully_read");
    assert_error(
        &server
            .put(&fully_read, alice.token(), json!({ "event_id": "$x" }))
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_BAD_JSON",
    );

    let tags = format!("{V3}/user/@alice:localhost/rooms/{room}/tags");
    assert_eq!(server.get(&tags, alice.token()).await.1, json!({ "tags": {} }));
    assert_eq!(
        server
            .put(&format!("{tags}/m.favourite"), alice.token(), json!({ "order": 0.5 }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server.put(&format!("{tags}/u.work"), alice.token(), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&tags, alice.token()).await.1,
        json!({ "tags": { "m.favourite": { "order": 0.5 }, "u.work": {} } })
    );
    assert_eq!(
        server
            .request(Method::DELETE, &format!("{tags}/u.work"), alice.token(), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&tags, alice.token()).await.1,
        json!({ "tags": { "m.favourite": { "order": 0.5 } } })
    );
    assert_error(
        &server.put(&format!("{tags}/x"), bob.token(), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .put(&format!("{tags}/x"), alice.token(), json!({ "order": "high" }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn display_name_changes_reach_member_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = create_room(&server, &alice, json!({})).await;
    let second = create_room(&server, &alice, json!({})).await;
    let path = format!("{V3}/profile/@alice:localhost/displayname");
    assert_eq!(
        server
            .put(&path, alice.token(), json!({ "displayname": "Alice Liddell" }))
            .await
            .0,
        StatusCode::OK
    );
    for room in [&first, &second] {
        let (_, member) = server
            .get(
                &format!("{V3}/rooms/{room}/state/m.room.member/@alice:localhost"),
                alice.token(),
            )
            .await;
        assert_eq!(member["displayname"], "Alice Liddell");
        assert_eq!(member["membership"], "join");
        let (_, joined) = server
            .get(&format!("{V3}/rooms/{room}/joined_members"), alice.token())
            .await;
        assert_eq!(joined["joined"]["@alice:localhost"]["display_name"], "Alice Liddell");
    }
}

#[tokio::test]
async fn the_user_directory_finds_people_you_share_rooms_with_and_public_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    // Alice and Bob share a private room; Carol sits in a public room; Dave shares nothing.
    let private = create_room(&server, &alice, json!({ "invite": ["@bob:localhost"] })).await;
    server
        .post(&format!("{V3}/rooms/{private}/join"), bob.token(), json!({}))
        .await;
    create_room(&server, &carol, json!({ "preset": "public_chat" })).await;
    let _ = dave;
    server
        .put(
            &format!("{V3}/profile/@bob:localhost/displayname"),
            bob.token(),
            json!({ "displayname": "Robert" }),
        )
        .await;
    let search_path = format!("{V3}/user_directory/search");
    let search = |term: &str| server.post(&search_path, alice.token(), json!({ "search_term": term }));

    let (status, found) = search("rob").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found["results"],
        json!([{ "user_id": "@bob:localhost", "display_name": "Robert" }])
    );
    let (_, found) = search("carol").await;
    assert_eq!(found["results"][0]["user_id"], "@carol:localhost");
    let (_, found) = search("dave").await;
    assert_eq!(found["results"], json!([]));
    let (_, limited) = server
        .post(
            &format!("{V3}/user_directory/search"),
            alice.token(),
            json!({ "search_term": "localhost", "limit": 1 }),
        )
        .await;
    assert_eq!(limited["limited"], true);
    assert_error(
        &server
            .post(
                &format!("{V3}/user_directory/search"),
                None,
                json!({ "search_term": "a" }),
            )
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .post(&format!("{V3}/user_directory/search"), alice.token(), json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
}
