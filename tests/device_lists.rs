//! Device list changes reach everyone who encrypts for the user: a new device (login or
//! registration), a rename and a deletion appear in `device_lists.changed` of `/sync`, sliding
//! sync and `/keys/changes`, for room-mates and for the user's own other devices. And the keys
//! served carry no `null`s and keep the signatures uploaded with them.

use crate::common::{
    PASSWORD, Session, TestServer,
    keys::{CrossSigning, Device},
    password_auth,
    rooms::{V3, create_room, join, sync},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn changed(body: &Value) -> Vec<&str> {
    body["device_lists"]["changed"]
        .as_array()
        .map(|users| users.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn next_batch(server: &TestServer, who: &Session) -> String {
    sync(server, who, "").await["next_batch"].as_str().unwrap().to_owned()
}

async fn login(server: &TestServer, username: &str) -> Session {
    let (status, body) = server.login(username, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Session::from_json(&body)
}

#[tokio::test]
async fn a_new_renamed_or_deleted_device_is_announced_on_every_transport() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    join(&server, &bob, &room).await;
    let (status, first) = server
        .post(
            SLIDING,
            alice.token(),
            json!({ "extensions": { "e2ee": { "enabled": true } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let pos = first["pos"].as_str().unwrap().to_owned();

    // Bob logs in on a new phone, before uploading any key.
    let alice_since = next_batch(&server, &alice).await;
    let bob_since = next_batch(&server, &bob).await;
    let phone = login(&server, "bob").await;
    let body = sync(&server, &alice, &format!("since={alice_since}&timeout=0")).await;
    assert_eq!(changed(&body), [bob.user_id.as_str()], "room-mate: {body}");
    let body = sync(&server, &bob, &format!("since={bob_since}&timeout=0")).await;
    assert!(
        changed(&body).contains(&bob.user_id.as_str()),
        "own other device: {body}"
    );
    let (status, sliding) = server
        .post(
            &format!("{SLIDING}?pos={pos}&timeout=0"),
            alice.token(),
            json!({ "extensions": { "e2ee": { "enabled": true } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sliding}");
    assert_eq!(
        sliding["extensions"]["e2ee"]["device_lists"]["changed"],
        json!([bob.user_id]),
        "sliding sync: {sliding}"
    );
    let (status, keys_changes) = server
        .get(
            &format!(
                "{V3}/keys/changes?from={alice_since}&to={}",
                body["next_batch"].as_str().unwrap()
            ),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys_changes["changed"],
        json!([bob.user_id]),
        "/keys/changes: {keys_changes}"
    );

    // Logging in again on an existing device is no new device.
    let since = next_batch(&server, &alice).await;
    let (status, body) = server
        .post(
            &format!("{V3}/login"),
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" },
                    "password": PASSWORD, "device_id": phone.device_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // (The old token of that device is revoked; this is its session now.)
    let phone = Session::from_json(&body);
    let body = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    assert!(changed(&body).is_empty(), "{body}");

    // A rename.
    let since = next_batch(&server, &alice).await;
    let (status, _) = server
        .put(
            &format!("{V3}/devices/{}", phone.device_id),
            phone.token(),
            json!({ "display_name": "Bob's phone" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    assert_eq!(changed(&body), [bob.user_id.as_str()], "rename: {body}");

    // A deletion.
    let since = next_batch(&server, &alice).await;
    let path = format!("{V3}/devices/{}", phone.device_id);
    let (status, challenge) = server
        .request(Method::DELETE, &path, bob.token(), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = password_auth(&bob.user_id, challenge["session"].as_str());
    let (status, body) = server
        .request(Method::DELETE, &path, bob.token(), Some(json!({ "auth": auth })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body} after {challenge}");
    let body = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    assert_eq!(changed(&body), [bob.user_id.as_str()], "deletion: {body}");

    // Someone sharing no room with Bob hears nothing of his devices.
    let carol = server.register("carol").await;
    let since = next_batch(&server, &carol).await;
    login(&server, "bob").await;
    let body = sync(&server, &carol, &format!("since={since}&timeout=0")).await;
    assert!(changed(&body).is_empty(), "{body}");

    // A rename of someone else's device is refused, and announces nothing.
    let (status, _) = server
        .put(
            &format!("{V3}/devices/{}", bob.device_id),
            alice.token(),
            json!({ "display_name": "mine now" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn keys_and_devices_carry_no_nulls_and_keep_uploaded_signatures() {
    let server = TestServer::start().await;
    // A device registered without a display name.
    let (status, body) = server
        .post(
            &format!("{V3}/register"),
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = Session::from_json(&body);
    let device = Device::new(&alice);
    let (status, body) = server
        .post(
            &format!("{V3}/keys/upload"),
            alice.token(),
            json!({ "device_keys": device.device_keys() }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server
        .post(
            &format!("{V3}/keys/query"),
            alice.token(),
            json!({ "device_keys": { &alice.user_id: [] } }),
        )
        .await;
    let keys = &body["device_keys"][&alice.user_id][&alice.device_id];
    assert!(keys.is_object(), "{body}");
    assert!(
        keys.get("unsigned")
            .is_none_or(|unsigned| unsigned["device_display_name"].is_string()),
        "no null display name: {keys}"
    );
    let (_, devices) = server.get(&format!("{V3}/devices"), alice.token()).await;
    for entry in devices["devices"].as_array().unwrap() {
        assert!(
            entry.get("display_name").is_none_or(Value::is_string),
            "no null display name: {entry}"
        );
        assert!(entry.get("last_seen_ip").is_none_or(Value::is_string), "{entry}");
    }
    let (_, one) = server
        .get(&format!("{V3}/devices/{}", alice.device_id), alice.token())
        .await;
    assert!(one.get("display_name").is_none_or(Value::is_string), "{one}");

    // A master key signed by the device, as Element uploads it: the signature comes back.
    let cross = CrossSigning::new(&alice.user_id);
    let mut body = cross.upload_body();
    body["master_key"] = device.key.sign(&alice.user_id, &cross.master_json());
    body["auth"] = password_auth(&alice.user_id, None);
    let (status, response) = server
        .post(&format!("{V3}/keys/device_signing/upload"), alice.token(), body.clone())
        .await;
    if status == StatusCode::UNAUTHORIZED {
        let mut retry = body.clone();
        retry["auth"] = password_auth(&alice.user_id, response["session"].as_str());
        let (status, response) = server
            .post(&format!("{V3}/keys/device_signing/upload"), alice.token(), retry)
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
    } else {
        assert_eq!(status, StatusCode::OK, "{response}");
    }
    let (_, queried) = server
        .post(
            &format!("{V3}/keys/query"),
            alice.token(),
            json!({ "device_keys": { &alice.user_id: [] } }),
        )
        .await;
    let master = &queried["master_keys"][&alice.user_id];
    assert_eq!(
        master["signatures"][&alice.user_id][device.key.key_id()],
        body["master_key"]["signatures"][&alice.user_id][device.key.key_id()],
        "{master}"
    );
    let self_signing = &queried["self_signing_keys"][&alice.user_id];
    assert_eq!(
        self_signing["signatures"], body["self_signing_key"]["signatures"],
        "{self_signing}"
    );
}
