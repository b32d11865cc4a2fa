//! Global account data.

use crate::common::{TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn account_data_round_trips_and_can_be_replaced() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.settings";
    assert_error(
        &server.get(path, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_eq!(
        server.put(path, alice.token(), json!({ "theme": "dark" })).await.0,
        StatusCode::OK
    );
    assert_eq!(server.get(path, alice.token()).await.1, json!({ "theme": "dark" }));
    assert_eq!(
        server
            .put(path, alice.token(), json!({ "theme": "light", "n": 2 }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(path, alice.token()).await.1,
        json!({ "theme": "light", "n": 2 })
    );
}

#[tokio::test]
async fn account_data_of_others_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.secret";
    server.put(path, alice.token(), json!({ "k": 1 })).await;
    assert_error(
        &server.get(path, bob.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(path, bob.token(), json!({ "k": 2 })).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(path, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_eq!(server.get(path, alice.token()).await.1, json!({ "k": 1 }));
}

#[tokio::test]
async fn malformed_account_data_is_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.x";
    assert_error(
        &server.raw(Method::PUT, path, alice.token(), b"{oops".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &server.put(path, alice.token(), json!([1, 2])).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let push_rules = "/_matrix/client/v3/user/@alice:localhost/account_data/m.push_rules";
    assert_error(
        &server.put(push_rules, alice.token(), json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_BAD_JSON",
    );
    assert_error(
        &server.get(path, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}
