//! Dehydrated devices (MSC3814): stored with their keys, reachable by to-device messages,
//! read back by a new login, replaced and deleted.

use crate::common::{
    Session, TestServer, assert_error,
    keys::Device,
    rooms::{V3, sync},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PATH: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

fn body(owner: &Session, device_id: &str, pickle: &str) -> Value {
    let as_device = Session {
        device_id: device_id.to_owned(),
        ..owner.clone()
    };
    let device = Device::new(&as_device);
    let mut keys = device.device_keys();
    keys["dehydrated"] = json!(true);
    let keys = device.key.sign(&owner.user_id, &{
        keys.as_object_mut().unwrap().remove("signatures");
        keys
    });
    json!({
        "device_id": device_id,
        "initial_device_display_name": "Dehydrated device",
        "device_data": { "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": pickle },
        "device_keys": keys,
        "one_time_keys": device.one_time_keys("D", 2),
    })
}

#[tokio::test]
async fn a_dehydrated_device_collects_messages_for_a_later_login() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    assert_error(
        &server.get(PATH, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    let (status, response) = server
        .put(PATH, alice.token(), body(&alice, "DEHYDRATED1", "pickle1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["device_id"], "DEHYDRATED1");
    let (_, stored) = server.get(PATH, alice.token()).await;
    assert_eq!(stored["device_id"], "DEHYDRATED1");
    assert_eq!(stored["device_data"]["device_pickle"], "pickle1");

    // Others see it (marked dehydrated) and can start a session with it.
    let (_, keys) = server
        .post(
            &format!("{V3}/keys/query"),
            bob.token(),
            json!({ "device_keys": { &alice.user_id: [] } }),
        )
        .await;
    assert_eq!(
        keys["device_keys"][&alice.user_id]["DEHYDRATED1"]["dehydrated"], true,
        "{keys}"
    );
    let (_, claimed) = server
        .post(
            &format!("{V3}/keys/claim"),
            bob.token(),
            json!({ "one_time_keys": { &alice.user_id: { "DEHYDRATED1": "signed_curve25519" } } }),
        )
        .await;
    assert!(
        claimed["one_time_keys"][&alice.user_id]["DEHYDRATED1"].is_object(),
        "{claimed}"
    );
    let (status, _) = server
        .put(
            &format!("{V3}/sendToDevice/m.room.encrypted/t1"),
            bob.token(),
            json!({ "messages": { &alice.user_id: { "DEHYDRATED1": { "n": 1 } } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The new login reads the messages; the next batch acknowledges them.
    let events_path = format!("{PATH}/DEHYDRATED1/events");
    let (status, page) = server.post(&events_path, alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"][0]["content"]["n"], 1, "{page}");
    assert_eq!(page["events"][0]["sender"], bob.user_id.as_str());
    let next = page["next_batch"].as_str().unwrap();
    let (_, page) = server
        .post(&events_path, alice.token(), json!({ "next_batch": next }))
        .await;
    assert_eq!(page["events"], json!([]), "{page}");
    let (_, page) = server.post(&events_path, alice.token(), json!({})).await;
    assert_eq!(page["events"], json!([]), "acknowledged messages are gone: {page}");

    // Only the user's own dehydrated device can be read, and a logged-in device's ID is not
    // available for one.
    assert_error(
        &server.post(&events_path, bob.token(), json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &server
            .put(PATH, alice.token(), body(&alice, &alice.device_id, "p"))
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let mut bad = body(&alice, "DEHYDRATED3", "p");
    bad["device_data"] = json!({ "algorithm": "org.matrix.msc3814.v1.olm" });
    assert_error(
        &server.put(PATH, alice.token(), bad).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );

    // A new dehydrated device replaces the old, which is deleted with its keys.
    let before = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .put(PATH, alice.token(), body(&alice, "DEHYDRATED2", "pickle2"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, devices) = server.get(&format!("{V3}/devices"), alice.token()).await;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"DEHYDRATED2") && !ids.contains(&"DEHYDRATED1"),
        "{devices}"
    );
    let changes = sync(&server, &alice, &format!("since={before}")).await;
    assert_eq!(changes["device_lists"]["changed"], json!([alice.user_id]), "{changes}");

    let (status, deleted) = server.request(Method::DELETE, PATH, alice.token(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["device_id"], "DEHYDRATED2");
    assert_error(
        &server.get(PATH, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let (_, keys) = server
        .post(
            &format!("{V3}/keys/query"),
            bob.token(),
            json!({ "device_keys": { &alice.user_id: [] } }),
        )
        .await;
    assert!(
        keys["device_keys"][&alice.user_id].get("DEHYDRATED2").is_none(),
        "{keys}"
    );
}
