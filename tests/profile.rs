//! Profiles: display name, avatar URL, extended fields, and who may change them.

use crate::common::{TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn display_name_and_avatar_can_be_set_and_read_by_anyone() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let base = "/_matrix/client/v3/profile/@alice:localhost";
    let (status, _) = server
        .put(
            &format!("{base}/displayname"),
            alice.token(),
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &format!("{base}/avatar_url"),
            alice.token(),
            json!({ "avatar_url": "mxc://localhost/abc" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(
        server.get(&format!("{base}/displayname"), None).await.1,
        json!({ "displayname": "Alice A." })
    );
    assert_eq!(
        server.get(&format!("{base}/avatar_url"), None).await.1,
        json!({ "avatar_url": "mxc://localhost/abc" })
    );
    assert_eq!(
        server.get(base, None).await.1,
        json!({ "displayname": "Alice A.", "avatar_url": "mxc://localhost/abc" })
    );
    // The legacy r0 path is the same endpoint.
    assert_eq!(
        server
            .get("/_matrix/client/r0/profile/@alice:localhost/displayname", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn others_cannot_change_your_profile() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let bob = server.register("bob").await;
    let path = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    assert_error(
        &server.put(path, bob.token(), json!({ "displayname": "pwned" })).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.put(path, None, json!({ "displayname": "pwned" })).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.request(Method::DELETE, path, bob.token(), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(server.get(path, None).await.1, json!({ "displayname": "alice" }));
}

#[tokio::test]
async fn bad_profile_values_are_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let base = "/_matrix/client/v3/profile/@alice:localhost";
    assert_error(
        &server
            .put(
                &format!("{base}/avatar_url"),
                alice.token(),
                json!({ "avatar_url": 12 }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let long = "n".repeat(300);
    assert_error(
        &server
            .put(
                &format!("{base}/displayname"),
                alice.token(),
                json!({ "displayname": long }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .raw(
                Method::PUT,
                &format!("{base}/displayname"),
                alice.token(),
                b"nope".to_vec(),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_eq!(
        server.get(&format!("{base}/displayname"), None).await.1,
        json!({ "displayname": "alice" })
    );
}

#[tokio::test]
async fn unknown_users_and_unset_fields_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    assert_error(
        &server.get("/_matrix/client/v3/profile/@nobody:localhost", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get("/_matrix/client/v3/profile/@alice:localhost/avatar_url", None)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get("/_matrix/client/v3/profile/not-a-user-id", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // Deleting a field removes it.
    let path = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    assert_eq!(
        server.request(Method::DELETE, path, alice.token(), None).await.0,
        StatusCode::OK
    );
    assert_error(&server.get(path, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn extended_profile_fields_are_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = "/_matrix/client/v3/profile/@alice:localhost/m.tz";
    assert_eq!(
        server
            .put(path, alice.token(), json!({ "m.tz": "Europe/Paris" }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(server.get(path, None).await.1, json!({ "m.tz": "Europe/Paris" }));
    let custom = "/_matrix/client/v3/profile/@alice:localhost/org.example.pronouns";
    assert_eq!(
        server
            .put(custom, alice.token(), json!({ "org.example.pronouns": ["she", "her"] }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server.get(custom, None).await.1,
        json!({ "org.example.pronouns": ["she", "her"] })
    );
}
