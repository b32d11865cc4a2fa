//! Login, tokens, refresh, logout and whoami.

use crate::common;

use crate::common::{PASSWORD, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::json;

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn login_flows_offer_password() {
    let server = TestServer::start().await;
    let (status, body) = server.get(LOGIN, None).await;
    assert_eq!(status, StatusCode::OK);
    // And the appservice login, as Synapse lists it (only an appservice's token passes it).
    assert_eq!(
        body["flows"],
        json!([{ "type": "m.login.password" }, { "type": "m.login.application_service" }])
    );
}

#[tokio::test]
async fn password_login_by_localpart_user_id_or_legacy_user_field() {
    let server = TestServer::start().await;
    server.register("alice").await;
    for identifier in ["alice", "@alice:localhost", "ALICE"] {
        let (status, body) = server.login(identifier, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{identifier}: {body}");
        assert_eq!(body["user_id"], "@alice:localhost");
        let (_, whoami) = server.get(WHOAMI, body["access_token"].as_str()).await;
        assert_eq!(whoami["device_id"], body["device_id"]);
    }
    let (status, body) = server
        .post(
            LOGIN,
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_forbidden_alike() {
    let server = TestServer::start().await;
    server.register("alice").await;
    assert_error(
        &server.login("alice", "wrong").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("nobody", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.login("@alice:elsewhere.org", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn malformed_logins_are_rejected() {
    let server = TestServer::start().await;
    let result = server
        .post(LOGIN, None, json!({ "type": "m.login.token", "token": "abc" }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let result = server
        .post(LOGIN, None, json!({ "type": "m.login.password", "password": PASSWORD }))
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let result = server
        .post(
            LOGIN,
            None,
            json!({ "identifier": { "type": "m.id.user", "user": "a" } }),
        )
        .await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);
}

#[tokio::test]
async fn logging_in_with_a_known_device_id_replaces_its_session() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let login = |device: &'static str| {
        let server = &server;
        async move {
            server
                .post(LOGIN, None, json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": device, "initial_device_display_name": "Phone" }))
                .await
        }
    };
    let (status, first) = login("PHONE").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["device_id"], "PHONE");
    let (_, second) = login("PHONE").await;
    assert_eq!(second["device_id"], "PHONE");
    assert_error(
        &server.get(WHOAMI, first["access_token"].as_str()).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        server.get(WHOAMI, second["access_token"].as_str()).await.0,
        StatusCode::OK
    );
    let (_, devices) = server
        .get("/_matrix/client/v3/devices", second["access_token"].as_str())
        .await;
    let phones: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device_id"] == "PHONE")
        .collect();
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0]["display_name"], "Phone");
}

#[tokio::test]
async fn tokens_are_checked_on_every_request() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    assert_error(
        &server.get(WHOAMI, None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let bad = server.get(WHOAMI, Some("hat_not_a_real_token")).await;
    assert_error(&bad, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_ne!(bad.1["soft_logout"], true, "an unknown token is a hard logout");
    // The deprecated query parameter still works.
    let (status, body) = server
        .get(&format!("{WHOAMI}?access_token={}", alice.access_token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A non-Bearer Authorization header is refused.
    let response = server
        .http
        .get(format!("{}{WHOAMI}", server.base))
        .header("Authorization", format!("Basic {}", alice.access_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_expired_access_tokens_are_soft_logged_out() {
    let server = TestServer::start_with(|c| c.auth.refreshable_access_token_lifetime_secs = 1).await;
    server.register("alice").await;
    let (status, login) = server
        .post(
            LOGIN,
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(login["expires_in_ms"], 1000);
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    assert_eq!(server.get(WHOAMI, Some(access)).await.0, StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = server.get(WHOAMI, Some(access)).await;
    assert_error(&expired, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true);

    let (status, refreshed) = server
        .post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_ne!(refreshed["refresh_token"].as_str().unwrap(), refresh);
    let (_, whoami) = server.get(WHOAMI, Some(new_access)).await;
    assert_eq!(whoami["device_id"], login["device_id"]);

    // Once the new access token has been used, the old refresh token is spent.
    let reused = server
        .post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh }))
        .await;
    assert_error(&reused, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let malformed = server.post("/_matrix/client/v3/refresh", None, json!({})).await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn logout_ends_one_session_and_logout_all_ends_every_session() {
    let server = TestServer::start().await;
    let first = server.register("alice").await;
    let second = common::Session::from_json(&server.login("alice", PASSWORD).await.1);
    let third = common::Session::from_json(&server.login("alice", PASSWORD).await.1);

    let (status, _) = server.post("/_matrix/client/v3/logout", first.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server.get(WHOAMI, first.token()).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let (_, devices) = server.get("/_matrix/client/v3/devices", second.token()).await;
    assert_eq!(
        devices["devices"].as_array().unwrap().len(),
        2,
        "logout deletes the device"
    );

    assert_error(
        &server.post("/_matrix/client/v3/logout/all", None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let (status, _) = server
        .post("/_matrix/client/v3/logout/all", second.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for session in [&second, &third] {
        assert_error(
            &server.get(WHOAMI, session.token()).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    // The account itself lives on.
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);
}

#[tokio::test]
async fn login_is_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.login.burst_count = 2;
        c.rate_limits.login.per_second = 0.001;
    })
    .await;
    server.register("alice").await;
    assert_eq!(server.login("alice", PASSWORD).await.0, StatusCode::OK);
    assert_error(
        &server.login("alice", "wrong").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let limited = server.login("alice", PASSWORD).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(limited.1["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn logout_needs_a_valid_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    assert_error(
        &server.post("/_matrix/client/v3/logout", None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .post("/_matrix/client/v3/logout", Some("hat_bogus"), json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.get(WHOAMI, alice.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_lost_refresh_response_can_be_retried_with_the_old_token() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let (_, login) = server
        .post(
            LOGIN,
            None,
            json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "refresh_token": true }),
        )
        .await;
    let refresh = login["refresh_token"].as_str().unwrap();
    let refresh_path = "/_matrix/client/v3/refresh";
    // The first answer is "lost": the client retries with the same refresh token.
    let (status, lost) = server
        .post(refresh_path, None, json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, retried) = server
        .post(refresh_path, None, json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    // The retry replaced the lost pair; the old access token works until the new pair is used.
    assert_error(
        &server.get(WHOAMI, lost["access_token"].as_str()).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        server.get(WHOAMI, login["access_token"].as_str()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(WHOAMI, retried["access_token"].as_str()).await.0,
        StatusCode::OK
    );
    // Using the new pair retires the old one, access token included.
    assert_error(
        &server.get(WHOAMI, login["access_token"].as_str()).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let stale = server
        .post(refresh_path, None, json!({ "refresh_token": refresh }))
        .await;
    assert_error(&stale, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    // The new refresh token keeps working.
    let (status, _) = server
        .post(refresh_path, None, json!({ "refresh_token": retried["refresh_token"] }))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn empty_or_oversized_device_ids_are_refused() {
    let server = TestServer::start().await;
    server.register("alice").await;
    for device_id in [String::new(), "D".repeat(300)] {
        let result = server
            .post(
                LOGIN,
                None,
                json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": device_id }),
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn guessing_from_elsewhere_does_not_lock_the_owner_out() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.login.burst_count = 3;
        c.rate_limits.login.per_second = 0.001;
        c.x_forwarded_for = true;
    })
    .await;
    server.register("alice").await;
    let login_from = |ip: &'static str, password: &'static str| {
        let request = server
            .http
            .post(format!("{}/_matrix/client/v3/login", server.base))
            .header("x-forwarded-for", ip)
            .json(&json!({ "type": "m.login.password",
                           "identifier": { "type": "m.id.user", "user": "alice" }, "password": password }));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    // Guesses from several addresses use up the account's failures.
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_error(&login_from(ip, "wrong").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // Any address that guessed is now held back, even with the right password...
    let held = login_from("10.0.0.1", PASSWORD).await;
    assert_error(&held, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    // ...but the owner, from an address that never failed, logs in.
    let (status, body) = login_from("10.0.0.9", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A new address that guesses wrong is counted and then held back too.
    assert_error(
        &login_from("10.0.0.4", "wrong").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &login_from("10.0.0.4", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
}
