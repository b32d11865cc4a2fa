//! Password changes, deactivation and third-party IDs.

use crate::common::{PASSWORD, Session, TestServer, assert_error, password_auth};
use reqwest::StatusCode;
use serde_json::json;

const PASSWORD_PATH: &str = "/_matrix/client/v3/account/password";
const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn changing_the_password_needs_the_old_one_and_logs_out_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other = Session::from_json(&server.login("alice", PASSWORD).await.1);

    let (status, body) = server
        .post(PASSWORD_PATH, alice.token(), json!({ "new_password": "new secret" }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{ "stages": ["m.login.password"] }]));
    let session = body["session"].as_str().unwrap();

    let mut wrong = password_auth(&alice.user_id, Some(session));
    wrong["password"] = json!("not it");
    let (status, body) = server
        .post(
            PASSWORD_PATH,
            alice.token(),
            json!({ "new_password": "new secret", "auth": wrong }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_eq!(
        server.login("alice", PASSWORD).await.0,
        StatusCode::OK,
        "unchanged after a failed stage"
    );

    let (status, body) = server
        .post(
            PASSWORD_PATH,
            alice.token(),
            json!({ "new_password": "new secret", "auth": password_auth(&alice.user_id, Some(session)) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.get(WHOAMI, alice.token()).await.0,
        StatusCode::OK,
        "this device stays logged in"
    );
    assert_error(
        &server.get(WHOAMI, other.token()).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &server.login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(server.login("alice", "new secret").await.0, StatusCode::OK);
}

#[tokio::test]
async fn changing_the_password_can_keep_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let (status, _) = server
        .post(
            PASSWORD_PATH,
            alice.token(),
            json!({ "new_password": "n", "logout_devices": false, "auth": password_auth("alice", None) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get(WHOAMI, other.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn password_stage_must_name_the_logged_in_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.register("bob").await;
    // Bob's correct password does not authorise Alice's change: a 403 (as Synapse), not
    // another round of authentication.
    let (status, body) = server
        .post(
            PASSWORD_PATH,
            alice.token(),
            json!({ "new_password": "n", "auth": password_auth("@bob:localhost", None) }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_error(
        &server.post(PASSWORD_PATH, None, json!({ "new_password": "n" })).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let result = server
        .post(
            PASSWORD_PATH,
            alice.token(),
            json!({ "auth": password_auth("alice", None) }),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn a_uia_session_cannot_be_reused_for_another_operation() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (_, body) = server
        .post(PASSWORD_PATH, alice.token(), json!({ "new_password": "n" }))
        .await;
    let session = body["session"].as_str().unwrap();
    let result = server
        .post(
            DEACTIVATE,
            alice.token(),
            json!({ "auth": password_auth("alice", Some(session)) }),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(server.get(WHOAMI, alice.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn deactivation_is_final() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let (status, _) = server.post(DEACTIVATE, alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = server
        .post(
            DEACTIVATE,
            alice.token(),
            json!({ "auth": password_auth("alice", None), "erase": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");
    for session in [&alice, &other] {
        assert_error(
            &server.get(WHOAMI, session.token()).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_error(
        &server.login("alice", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "M_USER_DEACTIVATED",
    );
    // Without the password nobody learns that the account is deactivated.
    assert_error(
        &server.login("alice", "guess").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    // The name stays taken.
    let taken = server
        .get("/_matrix/client/v3/register/available?username=alice", None)
        .await;
    assert_error(&taken, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    assert_error(
        &server.post(DEACTIVATE, None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn third_party_ids_are_an_honest_empty_list() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server.get("/_matrix/client/v3/account/3pid", alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    // ruma leaves the empty list out; clients read a missing list as empty.
    assert!(body.get("threepids").is_none_or(|list| list == &json!([])), "{body}");
    assert_error(
        &server.get("/_matrix/client/v3/account/3pid", None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn a_completed_uia_session_authorises_one_operation_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let b = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let delete = |device: String, session: Option<String>| {
        let server = &server;
        let token = alice.access_token.clone();
        async move {
            let mut body = json!({ "devices": [device] });
            if let Some(session) = session {
                body["auth"] = password_auth("alice", Some(&session));
            }
            server
                .post("/_matrix/client/v3/delete_devices", Some(&token), body)
                .await
        }
    };
    let (_, challenge) = delete(a.device_id.clone(), None).await;
    let session = challenge["session"].as_str().unwrap().to_owned();
    let (status, _) = delete(a.device_id.clone(), Some(session.clone())).await;
    assert_eq!(status, StatusCode::OK);
    // Replaying the spent session, or using it for other devices, deletes nothing.
    let replay = delete(b.device_id.clone(), Some(session)).await;
    assert_ne!(replay.0, StatusCode::OK, "{}", replay.1);
    assert_eq!(server.get(WHOAMI, b.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_uia_session_is_bound_to_the_device_it_was_started_for() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let b = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let path = |device: &str| format!("/_matrix/client/v3/devices/{device}");
    let (_, challenge) = server
        .request(
            reqwest::Method::DELETE,
            &path(&a.device_id),
            alice.token(),
            Some(json!({})),
        )
        .await;
    let session = challenge["session"].as_str().unwrap();
    let swapped = server
        .request(
            reqwest::Method::DELETE,
            &path(&b.device_id),
            alice.token(),
            Some(json!({ "auth": password_auth("alice", Some(session)) })),
        )
        .await;
    assert_error(&swapped, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(server.get(WHOAMI, b.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn password_guesses_through_uia_are_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.login.burst_count = 3;
        c.rate_limits.login.per_second = 0.001;
    })
    .await;
    let alice = server.register("alice").await;
    let mut wrong = password_auth("alice", None);
    wrong["password"] = json!("guess");
    for _ in 0..3 {
        let (status, body) = server.post(DEACTIVATE, alice.token(), json!({ "auth": wrong })).await;
        assert_eq!(
            (status, body["errcode"].clone()),
            (StatusCode::UNAUTHORIZED, json!("M_FORBIDDEN"))
        );
    }
    let limited = server.post(DEACTIVATE, alice.token(), json!({ "auth": wrong })).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
}
