//! Devices: list, read, rename, delete (with user-interactive auth).

use crate::common::{PASSWORD, Session, TestServer, assert_error, password_auth};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn devices_are_listed_read_and_renamed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let second = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let (status, body) = server.get("/_matrix/client/v3/devices", alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    let mut ids: Vec<&str> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![alice.device_id.as_str(), second.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(body["devices"][0]["last_seen_ts"].is_u64());

    let path = format!("/_matrix/client/v3/devices/{}", second.device_id);
    let (status, _) = server
        .put(&path, alice.token(), json!({ "display_name": "Work laptop" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, device) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(device["display_name"], "Work laptop");
    assert_eq!(device["device_id"], second.device_id);
}

#[tokio::test]
async fn other_users_devices_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("/_matrix/client/v3/devices/{}", bob.device_id);
    assert_error(
        &server.get(&path, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(&path, alice.token(), json!({ "display_name": "mine now" }))
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, device) = server.get(&path, bob.token()).await;
    assert_ne!(device["display_name"], "mine now");
    assert_error(
        &server.get("/_matrix/client/v3/devices", None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let bad = server.put(&path, bob.token(), json!({ "display_name": 5 })).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn deleting_a_device_needs_the_password_and_revokes_its_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let doomed = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let path = format!("/_matrix/client/v3/devices/{}", doomed.device_id);

    let (status, body) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let session = body["session"].as_str().unwrap();
    assert_eq!(
        server.get("/_matrix/client/v3/account/whoami", doomed.token()).await.0,
        StatusCode::OK
    );

    let (status, body) = server
        .request(
            Method::DELETE,
            &path,
            alice.token(),
            Some(json!({ "auth": password_auth("alice", Some(session)) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &server.get("/_matrix/client/v3/account/whoami", doomed.token()).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.get(&path, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .request(Method::DELETE, &path, alice.token(), Some(json!({})))
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn delete_devices_removes_several_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let b = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let body = json!({ "devices": [a.device_id, b.device_id, "NOSUCHDEVICE"] });
    let (status, _) = server
        .post("/_matrix/client/v3/delete_devices", alice.token(), body.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut with_auth = body;
    with_auth["auth"] = password_auth("alice", None);
    let (status, _) = server
        .post("/_matrix/client/v3/delete_devices", alice.token(), with_auth)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, devices) = server.get("/_matrix/client/v3/devices", alice.token()).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/delete_devices",
                alice.token(),
                json!({ "devices": "x" }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
}
