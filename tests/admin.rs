//! The Synapse-compatible admin API: shared-secret registration and registration tokens.

use crate::common::{PASSWORD, SHARED_SECRET, TestServer, assert_error, shared_secret_mac};
use reqwest::{Method, StatusCode};
use serde_json::json;

const REGISTER: &str = "/_synapse/admin/v1/register";
const TOKENS: &str = "/_synapse/admin/v1/registration_tokens";

async fn nonce(server: &TestServer) -> String {
    server.get(REGISTER, None).await.1["nonce"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn shared_secret_registration_creates_admins_and_users() {
    let server = TestServer::start_with(|c| c.registration.enabled = Some(false)).await;
    let admin = server.register_admin("root", true).await;
    assert_eq!(admin.user_id, "@root:localhost");
    let (_, whoami) = server.get("/_matrix/client/v3/account/whoami", admin.token()).await;
    assert_eq!(whoami["user_id"], "@root:localhost");
    // Works while public registration is closed, and the admin can use the admin API.
    assert_eq!(server.get(TOKENS, admin.token()).await.0, StatusCode::OK);
    let user = server.register_admin("plain", false).await;
    assert_error(
        &server.get(TOKENS, user.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn shared_secret_registration_rejects_bad_macs_and_spent_nonces() {
    let server = TestServer::start().await;
    let n = nonce(&server).await;
    let bad_mac = shared_secret_mac("wrong secret", &n, "eve", PASSWORD, true);
    let body = json!({ "nonce": n, "username": "eve", "password": PASSWORD, "admin": true, "mac": bad_mac });
    assert_error(
        &server.post(REGISTER, None, body).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // The nonce was spent by the failed attempt.
    let good_mac = shared_secret_mac(SHARED_SECRET, &n, "eve", PASSWORD, true);
    let body = json!({ "nonce": n, "username": "eve", "password": PASSWORD, "admin": true, "mac": good_mac });
    assert_error(
        &server.post(REGISTER, None, body).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    // A MAC over different fields does not verify.
    let n = nonce(&server).await;
    let mac = shared_secret_mac(SHARED_SECRET, &n, "eve", PASSWORD, false);
    let body = json!({ "nonce": n, "username": "eve", "password": PASSWORD, "admin": true, "mac": mac });
    assert_error(
        &server.post(REGISTER, None, body).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(server.login("eve", PASSWORD).await.0, StatusCode::FORBIDDEN);

    assert_error(
        &server.post(REGISTER, None, json!({ "nonce": "x" })).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server.raw(Method::POST, REGISTER, None, b"nonce=x".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
}

#[tokio::test]
async fn shared_secret_registration_checks_usernames() {
    let server = TestServer::start().await;
    server.register_admin("taken", false).await;
    for (username, errcode) in [("taken", "M_USER_IN_USE"), ("bad name", "M_INVALID_USERNAME")] {
        let n = nonce(&server).await;
        let mac = shared_secret_mac(SHARED_SECRET, &n, username, PASSWORD, false);
        let body = json!({ "nonce": n, "username": username, "password": PASSWORD, "admin": false, "mac": mac });
        assert_error(
            &server.post(REGISTER, None, body).await,
            StatusCode::BAD_REQUEST,
            errcode,
        );
    }
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    let server = TestServer::start_with(|c| c.registration.shared_secret = None).await;
    assert_error(&server.get(REGISTER, None).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
}

#[tokio::test]
async fn admins_manage_registration_tokens() {
    let server = TestServer::start().await;
    let admin = server.register_admin("root", true).await;
    let (status, generated) = server
        .post(&format!("{TOKENS}/new"), admin.token(), json!({ "length": 20 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(generated["token"].as_str().unwrap().len(), 20);
    assert_eq!(generated["uses_allowed"], json!(null));

    let (status, _) = server
        .post(
            &format!("{TOKENS}/new"),
            admin.token(),
            json!({ "token": "abc", "uses_allowed": 3 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server
            .post(&format!("{TOKENS}/new"), admin.token(), json!({ "token": "abc" }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(&format!("{TOKENS}/new"), admin.token(), json!({ "token": "has space" }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(&format!("{TOKENS}/new"), admin.token(), json!({ "uses_allowed": -1 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(&format!("{TOKENS}/new"), admin.token(), json!({ "expiry_time": 1 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    let (status, updated) = server
        .put(&format!("{TOKENS}/abc"), admin.token(), json!({ "uses_allowed": 0 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["uses_allowed"], 0);
    let (_, valid) = server.get(&format!("{TOKENS}?valid=true"), admin.token()).await;
    assert_eq!(valid["registration_tokens"].as_array().unwrap().len(), 1);
    let (_, invalid) = server.get(&format!("{TOKENS}?valid=false"), admin.token()).await;
    assert_eq!(invalid["registration_tokens"][0]["token"], "abc");

    assert_eq!(
        server
            .request(Method::DELETE, &format!("{TOKENS}/abc"), admin.token(), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &server.get(&format!("{TOKENS}/abc"), admin.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .request(Method::DELETE, &format!("{TOKENS}/abc"), admin.token(), None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn non_admins_cannot_touch_registration_tokens() {
    let server = TestServer::start().await;
    let admin = server.register_admin("root", true).await;
    server
        .post(&format!("{TOKENS}/new"), admin.token(), json!({ "token": "keep" }))
        .await;
    let user = server.register("mallory").await;
    assert_error(
        &server.post(&format!("{TOKENS}/new"), user.token(), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server
            .request(Method::DELETE, &format!("{TOKENS}/keep"), user.token(), None)
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(TOKENS, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_eq!(
        server.get(&format!("{TOKENS}/keep"), admin.token()).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_admin_queries_are_matrix_errors() {
    let server = TestServer::start().await;
    let admin = server.register_admin("root", true).await;
    let result = server.get(&format!("{TOKENS}?valid=maybe"), admin.token()).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server.get(&format!("{TOKENS}/%FF%FE"), admin.token()).await;
    assert_eq!(
        result.1["errcode"].as_str().map(|c| c.starts_with("M_")),
        Some(true),
        "{}",
        result.1
    );
}
