//! Server-side key backup: versions, keys with `etag` and `count`, the rules for replacing a
//! session's key, `M_WRONG_ROOM_KEYS_VERSION`, and one user never seeing another's backup.

use crate::common::{TestServer, assert_error, rooms::V3};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ROOM: &str = "!room:localhost";

fn algorithm(public_key: &str) -> Value {
    json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": public_key, "signatures": {} },
    })
}

/// Session data must be base64; `tag` tells the stored keys apart.
fn b64(tag: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag)
}

fn key(first_message_index: u32, forwarded_count: u32, is_verified: bool, tag: &str) -> Value {
    let tag = b64(tag);
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": { "ephemeral": tag, "ciphertext": tag, "mac": tag },
    })
}

#[tokio::test]
async fn backups_store_keys_by_the_spec_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let token = alice.token();

    assert_error(
        &server.get(&format!("{V3}/room_keys/version"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (status, body) = server
        .post(&format!("{V3}/room_keys/version"), token, algorithm("pk1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = body["version"].as_str().unwrap().to_owned();
    let (_, info) = server.get(&format!("{V3}/room_keys/version"), token).await;
    assert_eq!(info["version"], version.as_str());
    assert_eq!(info["count"], 0);
    assert_eq!(info["auth_data"]["public_key"], "pk1");
    let etag0 = info["etag"].as_str().unwrap().to_owned();

    // Store a session key; the etag moves and the count counts.
    let session_path = format!("{V3}/room_keys/keys/{ROOM}/s1?version={version}");
    let (status, body) = server.put(&session_path, token, key(5, 1, false, "a")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    let etag1 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag0, etag1);

    // Worse keys do not replace it (and leave the etag alone); better ones do.
    let (_, body) = server.put(&session_path, token, key(6, 0, false, "worse")).await;
    assert_eq!(body["etag"], etag1.as_str());
    let (_, body) = server
        .put(&session_path, token, key(5, 0, false, "fewer-forwards"))
        .await;
    assert_ne!(body["etag"], etag1.as_str());
    let (_, body) = server.put(&session_path, token, key(9, 9, true, "verified")).await;
    assert_eq!(body["count"], 1);
    let (_, body) = server.put(&session_path, token, key(0, 0, false, "unverified")).await;
    let (status, stored) = server.get(&session_path, token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["session_data"]["ciphertext"], b64("verified"), "{body}");
    assert_eq!(stored["is_verified"], true);

    // The whole-backup and per-room forms.
    let (status, body) = server
        .put(
            &format!("{V3}/room_keys/keys?version={version}"),
            token,
            json!({ "rooms": { ROOM: { "sessions": { "s2": key(0, 0, false, "b") } } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 2);
    let (_, all) = server
        .get(&format!("{V3}/room_keys/keys?version={version}"), token)
        .await;
    let sessions = all["rooms"][ROOM]["sessions"].as_object().unwrap();
    assert_eq!(sessions.len(), 2);
    let (_, room) = server
        .get(&format!("{V3}/room_keys/keys/{ROOM}?version={version}"), token)
        .await;
    assert_eq!(room["sessions"]["s2"]["session_data"]["ciphertext"], b64("b"));
    let (_, empty) = server
        .get(
            &format!("{V3}/room_keys/keys/!other:localhost?version={version}"),
            token,
        )
        .await;
    assert_eq!(empty, json!({ "sessions": {} }));

    // Keys go only to the current version.
    let (_, body) = server
        .post(&format!("{V3}/room_keys/version"), token, algorithm("pk2"))
        .await;
    let newer = body["version"].as_str().unwrap().to_owned();
    let stale = server.put(&session_path, token, key(0, 0, true, "late")).await;
    assert_error(&stale, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(stale.1["current_version"], newer.as_str());

    // Delete a session, then the version.
    let (status, body) = server
        .request(
            Method::DELETE,
            &format!("{V3}/room_keys/keys/{ROOM}/s2?version={version}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], 1);
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{V3}/room_keys/version/{version}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &server.get(&format!("{V3}/room_keys/version/{version}"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .get(&format!("{V3}/room_keys/keys?version={version}"), token)
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Bob sees nothing of Alice's backups, and cannot change them.
    assert_error(
        &server
            .get(&format!("{V3}/room_keys/version/{newer}"), bob.token())
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys/{ROOM}/s1?version={newer}"),
                bob.token(),
                key(0, 0, true, "x"),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&format!("{V3}/room_keys/version"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn backup_versions_are_updated_and_bad_input_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.token();
    let (_, body) = server
        .post(&format!("{V3}/room_keys/version"), token, algorithm("pk1"))
        .await;
    let version = body["version"].as_str().unwrap().to_owned();

    let (status, body) = server
        .put(
            &format!("{V3}/room_keys/version/{version}"),
            token,
            algorithm("pkpkpkpk"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, info) = server.get(&format!("{V3}/room_keys/version/{version}"), token).await;
    assert_eq!(info["auth_data"]["public_key"], "pkpkpkpk");
    // The algorithm cannot change.
    let mut other = algorithm("pk1");
    other["algorithm"] = json!("org.example.other");
    assert_error(
        &server
            .put(&format!("{V3}/room_keys/version/{version}"), token, other)
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server
            .post(&format!("{V3}/room_keys/version"), token, json!({ "algorithm": "x" }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // A key without its fields is refused and nothing is stored.
    assert_error(
        &server
            .put(
                &format!("{V3}/room_keys/keys/{ROOM}/s1?version={version}"),
                token,
                json!({ "session_data": {} }),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let (_, info) = server.get(&format!("{V3}/room_keys/version/{version}"), token).await;
    assert_eq!(info["count"], 0);
    assert_error(
        &server.get(&format!("{V3}/room_keys/version/not-a-number"), token).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}
