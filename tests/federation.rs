//! Federation between servers on loopback, over TLS from a test CA: keys, the notary,
//! request signatures, and the queries other servers make.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{
    TestServer,
    federation::{FakeServer, NAMES, TestCa, start_federated},
};

#[tokio::test]
async fn federation_is_off_unless_enabled() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    assert!(server.federation_addr.is_none());
}

#[tokio::test]
async fn a_server_fetches_another_servers_keys_over_tls_and_vouches_for_them() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (_, own) = a.get("/_matrix/key/v2/server", None).await;

    // B, asked as a notary about A, fetches A's keys from A's TLS listener.
    let (status, body) = b
        .post(
            "/_matrix/key/v2/query",
            None,
            json!({ "server_keys": { NAMES[0]: {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let documents = body["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 1, "{body}");
    let document = &documents[0];
    assert_eq!(document["server_name"], NAMES[0]);
    assert_eq!(document["verify_keys"], own["verify_keys"]);
    assert!(
        document["signatures"][NAMES[0]].is_object(),
        "A's own signature is kept: {document}"
    );
    assert!(
        document["signatures"][NAMES[1]].is_object(),
        "B signs as notary: {document}"
    );

    // The GET form, and a notary asked about itself.
    let (status, body) = b.get(&format!("/_matrix/key/v2/query/{}", NAMES[0]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_keys"][0]["server_name"], NAMES[0]);
    let (_, body) = b.get(&format!("/_matrix/key/v2/query/{}", NAMES[1]), None).await;
    assert_eq!(body["server_keys"][0]["server_name"], NAMES[1]);

    // A server nobody can reach: no documents, no error.
    let (status, body) = b.get("/_matrix/key/v2/query/nowhere.invalid", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_keys"], json!([]));

    let (status, body) = b.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server"]["name"], "Hearth");
}

#[tokio::test]
async fn signed_requests_are_verified_before_anything_else() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (status, _) = a
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            Some(&alice.access_token),
            json!({ "displayname": "Alice" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", alice.user_id);

    let (status, body) = evil.signed(a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayname"], "Alice");

    // No signature at all.
    let (status, body) = evil.send(a, Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    // Signed for another destination, or for another path than the one requested.
    let elsewhere = evil.authorization(&evil.name, "hearth-b.test", &Method::GET, &path, None);
    let (status, body) = evil.send(a, Method::GET, &path, Some(elsewhere), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let other_path = evil.authorization(
        &evil.name,
        NAMES[0],
        &Method::GET,
        "/_matrix/federation/v1/version",
        None,
    );
    let (status, body) = evil.send(a, Method::GET, &path, Some(other_path), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Claiming to be another server: its key is not ours.
    let forged = evil.authorization("hearth-b.test", NAMES[0], &Method::GET, &path, None);
    let (status, body) = evil.send(a, Method::GET, &path, Some(forged), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let as_a = evil.authorization(NAMES[0], NAMES[0], &Method::GET, &path, None);
    let (status, _) = evil.send(a, Method::GET, &path, Some(as_a), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Garbage in the header.
    let (status, body) = evil
        .send(a, Method::GET, &path, Some("X-Matrix origin=\"".to_owned()), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn blocked_servers_are_refused() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, config| {
        config.federation.blocked_servers = vec!["evil.test".to_owned()];
    })
    .await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let path = format!("/_matrix/federation/v1/query/profile?user_id={}", alice.user_id);
    let (status, body) = evil.signed(a, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn queries_answer_for_local_users_and_aliases_only() {
    let ca = TestCa::new();
    let evil = FakeServer::start(&ca, "evil.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(1, &ca, &[evil.peer()], |_, _| {}).await;
    let a = &servers[0];
    let alice = a.register("alice").await;
    let (_, room) = a
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.access_token),
            json!({ "room_alias_name": "lounge" }),
        )
        .await;
    let alias = format!("%23lounge:{}", NAMES[0]);
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/query/directory?room_alias={alias}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room["room_id"]);
    assert_eq!(body["servers"], json!([NAMES[0]]));

    let missing = format!("%23nothing:{}", NAMES[0]);
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            &format!("/_matrix/federation/v1/query/directory?room_alias={missing}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=@nobody:hearth-a.test",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=@someone:elsewhere.test",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
    let (status, body) = evil
        .signed(
            a,
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=not-a-user",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
