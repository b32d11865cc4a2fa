//! Registration: the dummy flow, user-interactive auth sessions, username rules, guests,
//! registration tokens and rate limits.

use crate::common;

use crate::common::{PASSWORD, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_starts_a_uia_session_then_completes_with_dummy() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "alice", "password": PASSWORD }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    let session = body["session"].as_str().unwrap().to_owned();

    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({
                "username": "alice", "password": PASSWORD,
                "initial_device_display_name": "Alice's laptop",
                "auth": { "type": "m.login.dummy", "session": session },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    let token = body["access_token"].as_str().unwrap();
    let device = body["device_id"].as_str().unwrap();

    let (status, whoami) = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["user_id"], "@alice:localhost");
    assert_eq!(whoami["device_id"], device);
    assert_ne!(whoami["is_guest"], true);

    let (_, device) = server
        .get(&format!("/_matrix/client/v3/devices/{device}"), Some(token))
        .await;
    assert_eq!(device["display_name"], "Alice's laptop");
    let (_, profile) = server.get("/_matrix/client/v3/profile/@alice:localhost", None).await;
    assert_eq!(profile["displayname"], "alice");

    // The session is spent.
    let result = server
        .post(REGISTER, None, json!({ "username": "alice2", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }))
        .await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);
}

#[tokio::test]
async fn usernames_are_case_folded_and_taken_ones_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("Alice").await;
    assert_eq!(alice.user_id, "@alice:localhost");
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    // Reported before any authentication, too.
    let result = server
        .post(REGISTER, None, json!({ "username": "ALICE", "password": PASSWORD }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
}

#[tokio::test]
async fn invalid_usernames_are_m_invalid_username() {
    let server = TestServer::start().await;
    for username in ["", "has space", "colon:here", "_reserved", "émile", "1234"] {
        let result = server
            .post(
                REGISTER,
                None,
                json!({ "username": username, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
}

#[tokio::test]
async fn username_availability_reports_free_taken_and_invalid() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let (status, body) = server
        .get("/_matrix/client/v3/register/available?username=bob", None)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "available": true })));
    let taken = server
        .get("/_matrix/client/v3/register/available?username=alice", None)
        .await;
    assert_error(&taken, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    let invalid = server
        .get("/_matrix/client/v3/register/available?username=no%20way", None)
        .await;
    assert_error(&invalid, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    let missing = server.get("/_matrix/client/v3/register/available", None).await;
    assert_eq!(missing.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn inhibit_login_creates_the_account_without_a_session() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "quiet", "password": PASSWORD, "inhibit_login": true, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], "@quiet:localhost");
    assert!(
        body.get("access_token").is_none() && body["device_id"].is_null(),
        "{body}"
    );
    let (status, _) = server.login("quiet", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn registration_without_username_or_password() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            REGISTER,
            None,
            json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user_id = body["user_id"].as_str().unwrap();
    assert!(
        user_id
            .trim_start_matches('@')
            .split(':')
            .next()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit()),
        "{user_id}"
    );

    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "nopass", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    assert_eq!(
        server
            .get("/_matrix/client/v3/register/available?username=nopass", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn register_with_refresh_token_returns_one() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "r", "password": PASSWORD, "refresh_token": true, "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["refresh_token"].is_string() && body["expires_in_ms"].is_u64(),
        "{body}"
    );
}

#[tokio::test]
async fn guests_are_forbidden_unless_configured() {
    let server = TestServer::start().await;
    let result = server.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");

    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let (status, body) = server.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (_, whoami) = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(whoami["is_guest"], true);
    // Guests have no password to change.
    let result = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(token),
            json!({ "new_password": "x" }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn closed_registration_is_forbidden() {
    let server = TestServer::start_with(|c| c.registration.enabled = Some(false)).await;
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &server.login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn a_uia_stage_not_offered_is_refused_in_the_uia_response() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "a", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "x" } }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    assert!(body["flows"].is_array());
    let result = server
        .post(REGISTER, None, json!({ "username": "a", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": "nonexistent" } }))
        .await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        server
            .get("/_matrix/client/v3/register/available?username=a", None)
            .await
            .0,
        StatusCode::OK
    );
}

async fn create_token(server: &TestServer, admin: &common::Session, body: Value) -> (StatusCode, Value) {
    server
        .post("/_synapse/admin/v1/registration_tokens/new", admin.token(), body)
        .await
}

#[tokio::test]
async fn registration_tokens_gate_registration_and_count_uses() {
    let server = TestServer::start_with(|c| c.registration.requires_token = true).await;
    let admin = server.register_admin("admin", true).await;
    let (status, token) = create_token(&server, &admin, json!({ "token": "invite-1", "uses_allowed": 1 })).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(
        token,
        json!({ "token": "invite-1", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": null })
    );

    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(
        server.get(&format!("{validity}?token=invite-1"), None).await.1,
        json!({ "valid": true })
    );
    assert_eq!(
        server.get(&format!("{validity}?token=nope"), None).await.1,
        json!({ "valid": false })
    );

    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "carol", "password": PASSWORD }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{ "stages": ["m.login.registration_token"] }]));
    let session = body["session"].as_str().unwrap();

    // A wrong token is reported inside the UIA response.
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "carol", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "wrong", "session": session } }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
    // The dummy stage is not enough here.
    let (status, _) = server
        .post(REGISTER, None, json!({ "username": "carol", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "carol", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "invite-1", "session": session } }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, token) = server
        .get("/_synapse/admin/v1/registration_tokens/invite-1", admin.token())
        .await;
    assert_eq!(
        (token["pending"].clone(), token["completed"].clone()),
        (json!(0), json!(1))
    );
    // Used up.
    assert_eq!(
        server.get(&format!("{validity}?token=invite-1"), None).await.1,
        json!({ "valid": false })
    );
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "dave", "password": PASSWORD, "auth": { "type": "m.login.registration_token", "token": "invite-1" } }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
}

#[tokio::test]
async fn registration_is_rate_limited_per_ip() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.registration.burst_count = 2;
        c.rate_limits.registration.per_second = 0.001;
    })
    .await;
    server.register("one").await;
    server.register("two").await;
    let result = server
        .post(
            REGISTER,
            None,
            json!({ "username": "three", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_error(&result, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(result.1["retry_after_ms"].as_u64().unwrap() > 0, "{}", result.1);
    // Nothing was created.
    assert_eq!(
        server
            .get("/_matrix/client/v3/register/available?username=three", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_validity_is_only_answered_where_tokens_are_used() {
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    let open = TestServer::start().await;
    assert_error(
        &open.get(&format!("{validity}?token=x"), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let gated = TestServer::start_with(|c| c.registration.requires_token = true).await;
    let missing = gated.get(validity, None).await;
    assert_eq!(missing.0, StatusCode::BAD_REQUEST, "{}", missing.1);
}
