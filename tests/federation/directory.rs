//! What clients look up on other servers through their own: profiles, aliases and public
//! room directories.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::federation::{NAMES, TestCa, start_federated};

#[tokio::test]
async fn profiles_aliases_and_public_rooms_of_another_server_resolve() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |index, config| {
        // A shares its directory; B keeps its own (as by default).
        config.federation.allow_public_rooms_over_federation = index == 0;
    })
    .await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, _) = a
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.access_token),
            json!({ "displayname": "Alice of A" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Alice's profile, whole and one field, read on B.
    let (status, profile) = b
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.user_id),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["displayname"], "Alice of A");
    let (status, field) = b
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{field}");
    assert_eq!(field["displayname"], "Alice of A");
    let (status, body) = b
        .get(
            &format!("/_matrix/client/v3/profile/@nobody:{}", NAMES[0]),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    // A public room on A, with an alias, in A's directory.
    let (status, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "room_alias_name": "plaza", "name": "The Plaza", "topic": "all welcome", "visibility": "public" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    let room_id = room["room_id"].as_str().unwrap();
    let (_, quiet) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "preset": "public_chat", "name": "Unlisted" }),
        )
        .await;
    assert!(quiet["room_id"].is_string());

    let (status, alias) = b
        .get(
            &format!("/_matrix/client/v3/directory/room/%23plaza:{}", NAMES[0]),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{alias}");
    assert_eq!(alias["room_id"], room_id);
    assert_eq!(alias["servers"], json!([NAMES[0]]));
    let (status, body) = b
        .get(
            &format!("/_matrix/client/v3/directory/room/%23nowhere:{}", NAMES[0]),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A's directory, read through B, listed and searched.
    let (status, listed) = b
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={}", NAMES[0]),
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let chunk = listed["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1, "{listed}");
    assert_eq!(chunk[0]["room_id"], room_id);
    assert_eq!(chunk[0]["name"], "The Plaza");
    assert_eq!(chunk[0]["num_joined_members"], 1);
    let (status, found) = b
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={}", NAMES[0]),
            Some(&bob.access_token),
            json!({ "filter": { "generic_search_term": "welcome" }, "limit": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["chunk"][0]["room_id"], room_id);
    let (status, none) = b
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={}", NAMES[0]),
            Some(&bob.access_token),
            json!({ "filter": { "generic_search_term": "zzz-nothing" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["chunk"], json!([]));
    // B does not share its directory; a server that cannot be reached is 502.
    let (status, body) = a
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={}", NAMES[1]),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, own) = b.get("/_matrix/client/v3/publicRooms", Some(&bob.access_token)).await;
    assert_eq!(own["chunk"], json!([]));
    let (status, body) = b
        .get(
            "/_matrix/client/v3/publicRooms?server=nowhere.invalid",
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

#[tokio::test]
async fn an_openid_token_tells_a_third_party_who_holds_it_and_nothing_more() {
    let ca = TestCa::new();
    let third = crate::common::federation::FakeServer::start(&ca, "widgets.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[third.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let (status, token) = a
        .post(
            &format!("/_matrix/client/v3/user/{}/openid/request_token", alice.user_id),
            Some(&alice.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], NAMES[0]);
    assert_eq!(token["expires_in"], 3600);
    let access_token = token["access_token"].as_str().unwrap();

    // The third party asks A's federation listener, with no signature.
    let userinfo = |token: &str| format!("/_matrix/federation/v1/openid/userinfo?access_token={token}");
    let (status, body) = third
        .send(a, reqwest::Method::GET, &userinfo(access_token), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "sub": alice.user_id }));
    let (status, body) = third
        .send(a, reqwest::Method::GET, &userinfo("not-a-token"), None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
    // The OpenID token is no access token.
    let (status, _) = a.get("/_matrix/client/v3/account/whoami", Some(access_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nobody asks for another user's token.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/user/{}/openid/request_token", alice.user_id),
            Some(&bob.access_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
