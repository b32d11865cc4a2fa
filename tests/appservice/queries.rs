//! The homeserver asking appservices: user and alias queries, ping, third-party lookups, and
//! the appservice room directory.

use reqwest::StatusCode;
use serde_json::json;

use super::{register_ghost, start_with_appservice};
use crate::common::{
    appservice::{FakeAppservice, Options},
    assert_error,
    rooms::{create_room, enc},
};

#[tokio::test]
async fn unknown_users_and_aliases_in_a_namespace_are_asked_of_the_appservice() {
    let fake = FakeAppservice::start("q", "q", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("nina").await;
    let token = Some(user.access_token.as_str());

    // The fake creates `@q_known*` when asked.
    let (status, body) = server
        .get("/_matrix/client/v3/profile/@q_known1:localhost", token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fake.user_queries(), ["@q_known1:localhost"]);
    assert_eq!(
        server
            .get("/_matrix/client/v3/profile/@q_known1:localhost", token)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(fake.user_queries().len(), 1, "an existing user is not asked about");
    // One it does not know stays unknown; one outside any namespace is never asked about.
    assert_error(
        &server
            .get("/_matrix/client/v3/profile/@q_stranger:localhost", token)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    server
        .get("/_matrix/client/v3/profile/@elsewhere:localhost", token)
        .await;
    assert_eq!(fake.user_queries(), ["@q_known1:localhost", "@q_stranger:localhost"]);
    // An ID the appservice did not know is not asked about again at once.
    server
        .get("/_matrix/client/v3/profile/@q_stranger:localhost", None)
        .await;
    assert_eq!(fake.user_queries().len(), 2);

    // Inviting a ghost nobody created yet asks too (as a user starting a bridged chat does).
    let room = create_room(&server, &user, json!({ "invite": ["@q_known2:localhost"] })).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let (status, body) = server
        .post(&invite, token, json!({ "user_id": "@q_known3:localhost" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fake.user_queries().len(), 4);

    // Aliases: the fake creates a room for `#q_room*`.
    let alias = enc("#q_room_lobby:localhost");
    let (status, body) = server
        .get(&format!("/_matrix/client/v3/directory/room/{alias}"), token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room_id = body["room_id"].as_str().unwrap().to_owned();
    // Joining by an alias asks too.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#q_room_hall:localhost")),
            token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["room_id"].as_str(), Some(room_id.as_str()));
    assert_eq!(
        fake.alias_queries(),
        ["#q_room_lobby:localhost", "#q_room_hall:localhost"]
    );
    assert_error(
        &server
            .get(
                &format!("/_matrix/client/v3/directory/room/{}", enc("#q_nothing:localhost")),
                token,
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn an_appservice_pings_itself_through_the_homeserver() {
    let fake = FakeAppservice::start("pinger", "pinger", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let token = Some(fake.as_token.as_str());
    let (status, body) = server
        .post(
            "/_matrix/client/v1/appservice/pinger/ping",
            token,
            json!({ "transaction_id": "ping-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["duration_ms"].is_u64(), "{body}");
    assert_eq!(fake.pings(), [json!({ "transaction_id": "ping-1" })]);

    let other = server
        .post("/_matrix/client/v1/appservice/someone/ping", token, json!({}))
        .await;
    assert_error(&other, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let user = server.register("olga").await;
    let by_user = server
        .post(
            "/_matrix/client/v1/appservice/pinger/ping",
            Some(&user.access_token),
            json!({}),
        )
        .await;
    assert_error(&by_user, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // An appservice whose URL answers nothing: the spec's error.
    let gone = FakeAppservice::start("gone", "gone", Options::default()).await;
    let path = gone.registration_path.clone();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&gone.url, "http://127.0.0.1:9");
    std::fs::write(&path, text).unwrap();
    let server = start_with_appservice(&gone).await;
    let failed = server
        .post(
            "/_matrix/client/v1/appservice/gone/ping",
            Some(&gone.as_token),
            json!({}),
        )
        .await;
    assert_error(&failed, StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED");
}

#[tokio::test]
async fn third_party_lookups_and_the_network_directory_come_from_the_appservice() {
    let fake = FakeAppservice::start(
        "bridge",
        "br",
        Options {
            protocols: vec!["irc".to_owned()],
            ..Options::default()
        },
    )
    .await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("pia").await;
    let token = Some(user.access_token.as_str());

    let (status, protocols) = server.get("/_matrix/client/v3/thirdparty/protocols", token).await;
    assert_eq!(status, StatusCode::OK, "{protocols}");
    let instance = &protocols["irc"]["instances"][0];
    assert_eq!(instance["network_id"], "net1");
    assert_eq!(instance["instance_id"], "bridge|net1");
    let (status, irc) = server.get("/_matrix/client/v3/thirdparty/protocol/irc", token).await;
    assert_eq!((status, &irc["user_fields"]), (StatusCode::OK, &json!(["nick"])));
    assert_error(
        &server.get("/_matrix/client/v3/thirdparty/protocol/xmpp", token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, users) = server
        .get("/_matrix/client/v3/thirdparty/user/irc?nick=remote", token)
        .await;
    assert_eq!(status, StatusCode::OK, "{users}");
    assert_eq!(users[0]["userid"], "@br_remote:localhost");
    assert_eq!(
        server.get("/_matrix/client/v3/thirdparty/protocols", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // The appservice lists a room in its network's directory.
    let room = create_room(&server, &user, json!({ "name": "Bridged lobby" })).await;
    let list = format!("/_matrix/client/v3/directory/list/appservice/net1/{}", enc(&room));
    let (status, body) = server
        .put(&list, Some(&fake.as_token), json!({ "visibility": "public" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &server.put(&list, token, json!({ "visibility": "public" })).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let search = |filter: serde_json::Value| server.post("/_matrix/client/v3/publicRooms", token, filter);
    let (_, network) = search(json!({ "third_party_instance_id": "bridge|net1" })).await;
    assert_eq!(network["chunk"][0]["room_id"], room.as_str(), "{network}");
    let (_, matrix) = search(json!({})).await;
    assert!(
        matrix["chunk"].as_array().unwrap().is_empty(),
        "not in the Matrix directory: {matrix}"
    );
    let (_, all) = search(json!({ "include_all_networks": true })).await;
    assert_eq!(all["chunk"][0]["room_id"], room.as_str());
    let (_, none) = search(json!({ "third_party_instance_id": "bridge|other" })).await;
    assert!(none["chunk"].as_array().unwrap().is_empty());
    let (status, _) = server
        .put(&list, Some(&fake.as_token), json!({ "visibility": "private" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, unlisted) = search(json!({ "third_party_instance_id": "bridge|net1" })).await;
    assert!(unlisted["chunk"].as_array().unwrap().is_empty());
    let ghost = register_ghost(&server, &fake, "br_x").await;
    assert!(!ghost.is_empty());
}
