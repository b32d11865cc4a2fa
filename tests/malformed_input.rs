//! Malformed input gets a clear 400 and changes nothing, the same on both databases: NUL
//! characters (which PostgreSQL cannot store in text) in every identifier of a path or query
//! and in any string of a JSON body, JSON nested deeper than the bound, and numbers out of
//! range, and URIs past the length limit.

use crate::common::{
    TestServer, assert_error,
    rooms::{V3, create_room},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn nul_in_identifiers_and_bodies_is_a_400_on_every_backend() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let user = &alice.user_id;
    let device = &alice.device_id;
    let cases: Vec<(Method, String, serde_json::Value)> = vec![
        (
            Method::PUT,
            format!("{V3}/rooms/{room}/state/m.room.topic/a%00b"),
            json!({ "topic": "x" }),
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{room}/send/m.room%00.message/t1"),
            json!({ "body": "x" }),
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{room}/send/m.room.message/t%00x"),
            json!({ "body": "x" }),
        ),
        (Method::PUT, format!("{V3}/user/{user}/account_data/x%00y"), json!({})),
        (
            Method::PUT,
            format!("{V3}/user/{user}/rooms/{room}/tags/t%00g"),
            json!({}),
        ),
        (
            Method::POST,
            format!("{V3}/pushers/set"),
            json!({ "app_id": "a\u{0}b", "pushkey": "k", "kind": "http", "app_display_name": "A",
                    "device_display_name": "D", "lang": "en", "data": { "url": "http://127.0.0.1/_matrix/push/v1/notify" } }),
        ),
        (
            Method::PUT,
            format!("{V3}/devices/{device}"),
            json!({ "display_name": "phone\u{0}" }),
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{room}/send/m.room.message/t2"),
            json!({ "body": "a\u{0}b" }),
        ),
        (
            Method::PUT,
            format!("{V3}/profile/{user}/displayname"),
            json!({ "displayname": "A\u{0}" }),
        ),
        (
            Method::GET,
            format!("{V3}/rooms/{room}/messages?dir=b&from=s1%00"),
            json!(null),
        ),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then_some(body);
        let (status, response) = server.request(method.clone(), &path, alice.token(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {response}");
        assert!(
            matches!(response["errcode"].as_str(), Some("M_INVALID_PARAM" | "M_BAD_JSON")),
            "{method} {path}: {response}"
        );
    }
    // Nothing of it was stored.
    let (status, _) = server
        .get(&format!("{V3}/rooms/{room}/state/m.room.topic/a%00b"), alice.token())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, pushers) = server.get(&format!("{V3}/pushers"), alice.token()).await;
    assert_eq!(pushers["pushers"], json!([]));
    let (_, device_info) = server.get(&format!("{V3}/devices/{device}"), alice.token()).await;
    assert!(
        device_info
            .get("display_name")
            .is_none_or(|name| !name.as_str().unwrap().contains('\0'))
    );
    let (_, messages) = server
        .get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50"), alice.token())
        .await;
    let sent = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count();
    assert_eq!(sent, 0);
    // A backslash followed by "u0000" as text is no NUL, and is kept.
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/t3"),
            alice.token(),
            json!({ "msgtype": "m.text", "body": "\\u0000" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn deeply_nested_json_is_refused_and_what_is_accepted_reads_back() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let nested = |depth: usize| format!("{{\"a\":{}1{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1));
    let path = format!("{V3}/user/{}/account_data/org.example.deep", alice.user_id);
    let (status, body) = server
        .raw(Method::PUT, &path, alice.token(), nested(10_000).into_bytes())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let (status, body) = server
        .raw(Method::PUT, &path, alice.token(), nested(150).into_bytes())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Brackets inside strings are text, not nesting.
    let text = json!({ "a": "[".repeat(500) });
    let (status, body) = server.put(&path, alice.token(), text.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .raw(Method::PUT, &path, alice.token(), nested(50).into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, stored) = server.get(&path, alice.token()).await;
    let expected: serde_json::Value = serde_json::from_str(&nested(50)).unwrap();
    assert_eq!(stored, expected, "stored whole and read back whole");
}

#[tokio::test]
async fn a_number_out_of_range_is_named_as_such() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (status, body) = server
        .raw(
            Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/t1"),
            alice.token(),
            br#"{"msgtype": "m.text", "body": "x", "n": 1e400}"#.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let message = body["error"].as_str().unwrap();
    assert!(!message.contains("must be a JSON object"), "{message}");
}

#[tokio::test]
async fn an_overlong_uri_gets_a_matrix_414() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let long = "a".repeat(20_000);
    let result = server
        .get(&format!("{V3}/user/{}/filter/{long}", alice.user_id), alice.token())
        .await;
    assert_error(&result, StatusCode::URI_TOO_LONG, "M_TOO_LARGE");
    // Unauthenticated and in the query, the same.
    let result = server.get(&format!("/_matrix/client/versions?x={long}"), None).await;
    assert_error(&result, StatusCode::URI_TOO_LONG, "M_TOO_LARGE");
    // A long but reasonable one (an inline filter, say) is served.
    let filter = format!(r#"{{"room":{{"timeline":{{"not_types":["{}"]}}}}}}"#, "x".repeat(4000));
    let (status, _) = server
        .get(
            &format!("{V3}/sync?filter={}", crate::common::rooms::query_value(&filter)),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
