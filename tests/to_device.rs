//! To-device messages: idempotent sends, `*` for every device, delivery through `/sync` and
//! sliding sync exactly once across a lost response, and the per-device bound.

use crate::common::{
    PASSWORD, Session, TestServer, assert_error,
    rooms::{V3, sync},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn send(server: &TestServer, from: &Session, txn: &str, messages: Value) -> (StatusCode, Value) {
    server
        .put(
            &format!("{V3}/sendToDevice/m.room_key_request/{txn}"),
            from.token(),
            json!({ "messages": messages }),
        )
        .await
}

fn bodies(sync: &Value) -> Vec<String> {
    sync["to_device"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["content"]["n"].to_string())
        .collect()
}

#[tokio::test]
async fn to_device_messages_arrive_once_and_survive_a_lost_response() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = Session::from_json(&server.login("bob", PASSWORD).await.1);
    let first = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    let message = json!({ &bob.user_id: { &bob.device_id: { "n": 1 } } });
    assert_eq!(send(&server, &alice, "t1", message.clone()).await.0, StatusCode::OK);
    // A retried request (same transaction ID) sends nothing more.
    assert_eq!(send(&server, &alice, "t1", message).await.0, StatusCode::OK);
    // `*`: every device of Bob's; unknown devices are skipped.
    let everyone = json!({ &bob.user_id: { "*": { "n": 2 } } });
    assert_eq!(send(&server, &alice, "t2", everyone).await.0, StatusCode::OK);
    let unknown = json!({ &bob.user_id: { "NOSUCHDEVICE": { "n": 3 } } });
    assert_eq!(send(&server, &alice, "t3", unknown).await.0, StatusCode::OK);

    let body = sync(&server, &bob, &format!("since={first}")).await;
    assert_eq!(bodies(&body), ["1", "2"]);
    let event = &body["to_device"]["events"][0];
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["type"], "m.room_key_request");
    // The response is lost: the same token again gets the same messages.
    let body = sync(&server, &bob, &format!("since={first}")).await;
    assert_eq!(bodies(&body), ["1", "2"]);
    let second = body["next_batch"].as_str().unwrap().to_owned();
    // Using the next token acknowledges them: never again.
    let body = sync(&server, &bob, &format!("since={second}")).await;
    assert!(bodies(&body).is_empty(), "{body}");
    let body = sync(&server, &bob, &format!("since={first}")).await;
    assert!(bodies(&body).is_empty(), "acknowledged messages are deleted: {body}");

    // The phone gets its copy of the `*` message through sliding sync's extension, by its
    // own position.
    let request = |since: Option<&str>| {
        let mut to_device = json!({ "enabled": true });
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({ "lists": {}, "extensions": { "to_device": to_device } })
    };
    let (status, body) = server.post(SLIDING, bob_phone.token(), request(None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["extensions"]["to_device"]["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["content"]["n"], 2);
    let next = body["extensions"]["to_device"]["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, body) = server.post(SLIDING, bob_phone.token(), request(Some(&next))).await;
    assert_eq!(body["extensions"]["to_device"]["events"], json!([]), "{body}");
    assert_error(
        &server.post(SLIDING, bob_phone.token(), request(Some("x"))).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn a_waiting_sync_wakes_for_a_to_device_message() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let query = format!("since={since}&timeout=10000");
    let waiting = sync(&server, &bob, &query);
    let sending = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        send(
            &server,
            &alice,
            "t",
            json!({ &bob.user_id: { &bob.device_id: { "n": 7 } } }),
        )
        .await
    };
    let (body, (status, _)) = tokio::join!(waiting, sending);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bodies(&body), ["7"]);
}

#[tokio::test]
async fn a_device_that_never_syncs_keeps_only_the_newest_messages() {
    let server = TestServer::start_with(|config| config.limits.max_to_device_per_device = 3).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for n in 0..5 {
        let message = json!({ &bob.user_id: { &bob.device_id: { "n": n } } });
        assert_eq!(send(&server, &alice, &format!("t{n}"), message).await.0, StatusCode::OK);
    }
    let body = sync(&server, &bob, "").await;
    assert_eq!(bodies(&body), ["2", "3", "4"]);
}

#[tokio::test]
async fn bad_to_device_requests_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    assert_error(
        &send(&server, &alice, "a", json!("not a map")).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &send(
            &server,
            &alice,
            "b",
            json!({ &bob.user_id: { &bob.device_id: "not an object" } }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &send(&server, &alice, "c", json!({ "not a user": { "D": {} } })).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let huge = "x".repeat(70 * 1024);
    assert_error(
        &send(
            &server,
            &alice,
            "d",
            json!({ &bob.user_id: { &bob.device_id: { "data": huge } } }),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    assert_error(
        &server
            .put(&format!("{V3}/sendToDevice/m.x/t"), None, json!({ "messages": {} }))
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // Nothing of the refused requests arrived.
    let body = sync(&server, &bob, "").await;
    assert!(bodies(&body).is_empty(), "{body}");
}
