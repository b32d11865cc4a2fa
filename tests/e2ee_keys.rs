//! Encryption keys: upload, query, claim (with races and fallback keys), cross-signing,
//! signatures, and `device_lists` in `/sync` and `/keys/changes`.

use std::collections::HashSet;

use crate::common::{
    PASSWORD, Session, TestServer, assert_error,
    keys::{CrossSigning, Device, Key},
    password_auth,
    rooms::{V3, create_room, join, sync},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn upload(server: &TestServer, who: &Session, body: Value) -> (StatusCode, Value) {
    server.post(&format!("{V3}/keys/upload"), who.token(), body).await
}

async fn query(server: &TestServer, who: &Session, user: &str) -> Value {
    let (status, body) = server
        .post(
            &format!("{V3}/keys/query"),
            who.token(),
            json!({ "device_keys": { user: [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "query: {body}");
    body
}

async fn claim(server: &TestServer, who: &Session, target: &Session) -> Value {
    let (status, body) = server
        .post(
            &format!("{V3}/keys/claim"),
            who.token(),
            json!({ "one_time_keys": { &target.user_id: { &target.device_id: "signed_curve25519" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "claim: {body}");
    body["one_time_keys"][&target.user_id][&target.device_id].clone()
}

#[tokio::test]
async fn keys_are_uploaded_queried_and_claimed_once_then_the_fallback_key() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = Device::new(&alice);
    let (status, body) = upload(
        &server,
        &alice,
        json!({
            "device_keys": device.device_keys(),
            "one_time_keys": device.one_time_keys("A", 2),
            "fallback_keys": device.fallback_key("F"),
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 2);

    // Bob sees the device keys as uploaded; a device without a name has no
    // `device_display_name` (never a null).
    let body = query(&server, &bob, &alice.user_id).await;
    let keys = &body["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(keys["keys"], device.device_keys()["keys"]);
    assert_eq!(keys["signatures"], device.device_keys()["signatures"]);
    assert!(keys.get("unsigned").is_none(), "{keys}");

    // Two one-time keys, each once, then the fallback key (again and again).
    let first = claim(&server, &bob, &alice).await;
    let second = claim(&server, &bob, &alice).await;
    let ids: HashSet<String> = [&first, &second]
        .iter()
        .flat_map(|keys| keys.as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(
        ids,
        HashSet::from(["signed_curve25519:A0".to_owned(), "signed_curve25519:A1".to_owned()])
    );
    let body = sync(&server, &alice, "").await;
    assert_eq!(body["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(body["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    for _ in 0..2 {
        let fallback = claim(&server, &bob, &alice).await;
        assert!(fallback["signed_curve25519:F"]["fallback"] == true, "{fallback}");
    }
    let body = sync(&server, &alice, "").await;
    assert_eq!(body["device_unused_fallback_key_types"], json!([]));

    // Unknown devices and users get nothing; remote users a failure for their server.
    let (status, body) = server
        .post(
            &format!("{V3}/keys/claim"),
            bob.token(),
            json!({ "one_time_keys": {
                &alice.user_id: { "NOSUCHDEVICE": "signed_curve25519" },
                "@someone:elsewhere.example": { "DEV": "signed_curve25519" },
            } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["one_time_keys"], json!({}));
    assert!(body["failures"]["elsewhere.example"].is_object(), "{body}");
}

#[tokio::test]
async fn concurrent_claims_hand_out_each_one_time_key_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = Device::new(&alice);
    let (status, _) = upload(
        &server,
        &alice,
        json!({
            "device_keys": device.device_keys(),
            "one_time_keys": device.one_time_keys("K", 20),
            "fallback_keys": device.fallback_key("F"),
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let claims = (0..30).map(|_| claim(&server, &bob, &alice));
    let results = futures_util::future::join_all(claims).await;
    let mut one_time = Vec::new();
    let mut fallback = 0;
    for keys in results {
        let (id, _) = keys.as_object().unwrap().iter().next().expect("a key for every claim");
        if id == "signed_curve25519:F" {
            fallback += 1;
        } else {
            one_time.push(id.clone());
        }
    }
    let distinct: HashSet<&String> = one_time.iter().collect();
    assert_eq!(one_time.len(), 20, "every one-time key handed out");
    assert_eq!(distinct.len(), 20, "no one-time key handed out twice");
    assert_eq!(fallback, 10);
}

#[tokio::test]
async fn malformed_or_foreign_keys_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = Device::new(&alice);

    // Keys for another device, keys with a bad signature, not an object, a bad key ID.
    let mut other_device = device.device_keys();
    other_device["device_id"] = json!("OTHER");
    assert_error(
        &upload(&server, &alice, json!({ "device_keys": other_device })).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let forged = Device::new(&alice).key.sign(&alice.user_id, &{
        let mut keys = device.device_keys();
        keys.as_object_mut().unwrap().remove("signatures");
        keys
    });
    assert_error(
        &upload(&server, &alice, json!({ "device_keys": forged })).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &upload(&server, &alice, json!({ "device_keys": "not keys" })).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &upload(
            &server,
            &alice,
            json!({ "one_time_keys": { "no-colon": { "key": "abc" } } }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    // Bob cannot upload keys for Alice's device.
    assert_error(
        &upload(&server, &bob, json!({ "device_keys": device.device_keys() })).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.post(&format!("{V3}/keys/upload"), None, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_eq!(
        query(&server, &bob, &alice.user_id).await["device_keys"][&alice.user_id],
        json!({})
    );

    // A one-time key ID reused for a different key refuses the whole upload.
    let (status, _) = upload(
        &server,
        &alice,
        json!({ "device_keys": device.device_keys(), "one_time_keys": device.one_time_keys("A", 1) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut conflicting = device.one_time_keys("B", 2);
    let reused = Device::new(&alice).one_time_keys("A", 1);
    conflicting["signed_curve25519:A0"] = device.key.sign(
        &alice.user_id,
        &json!({ "key": reused["signed_curve25519:A0"]["key"].as_str().unwrap().replace('A', "B") }),
    );
    assert_error(
        &upload(&server, &alice, json!({ "one_time_keys": conflicting })).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // The same key again is fine, and the refused upload stored none of its keys.
    let (status, body) = upload(
        &server,
        &alice,
        json!({ "one_time_keys": device.one_time_keys("A", 1) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 1, "{body}");
}

#[tokio::test]
async fn device_lists_report_key_changes_joins_and_leaves() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, StatusCode::OK);
    let start = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    // Alice uploads keys: Bob's waiting sync wakes with her in `changed`.
    let waiting = {
        let server = &server;
        let bob = &bob;
        let start = start.clone();
        async move { sync(server, bob, &format!("since={start}&timeout=10000")).await }
    };
    let uploading = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let device = Device::new(&alice);
        upload(&server, &alice, json!({ "device_keys": device.device_keys() })).await
    };
    let (body, (status, _)) = tokio::join!(waiting, uploading);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["device_lists"]["changed"], json!([alice.user_id]), "{body}");
    let after_keys = body["next_batch"].as_str().unwrap().to_owned();

    // Carol joins: newly shares a room with Bob. Then leaves: shares none.
    assert_eq!(join(&server, &carol, &room).await.0, StatusCode::OK);
    let body = sync(&server, &bob, &format!("since={after_keys}")).await;
    assert_eq!(body["device_lists"]["changed"], json!([carol.user_id]), "{body}");
    let after_join = body["next_batch"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(&format!("{V3}/rooms/{room}/leave"), carol.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &bob, &format!("since={after_join}")).await;
    assert_eq!(body["device_lists"]["left"], json!([carol.user_id]), "{body}");
    let end = body["next_batch"].as_str().unwrap().to_owned();

    // Carol's own key changes are no longer Bob's business.
    let carol_device = Device::new(&carol);
    upload(&server, &carol, json!({ "device_keys": carol_device.device_keys() })).await;
    let body = sync(&server, &bob, &format!("since={end}")).await;
    assert_eq!(body["device_lists"]["changed"], json!([]), "{body}");

    // /keys/changes tells the same story over the whole span.
    let (status, body) = server
        .get(&format!("{V3}/keys/changes?from={start}&to={after_keys}"), bob.token())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["changed"], json!([alice.user_id]));
    let (status, body) = server
        .get(&format!("{V3}/keys/changes?from={after_join}&to={end}"), bob.token())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["left"], json!([carol.user_id]));
    assert_error(
        &server
            .get(&format!("{V3}/keys/changes?from=nonsense&to={end}"), bob.token())
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );

    // An invitation tells the invitee nothing about the room's members' devices.
    let dave = server.register("dave").await;
    let dave_start = sync(&server, &dave, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            alice.token(),
            json!({ "user_id": dave.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &dave, &format!("since={dave_start}")).await;
    assert_eq!(body["device_lists"], json!({ "changed": [], "left": [] }), "{body}");

    // Deleting a device is a change too.
    let second = Session::from_json(&server.login("alice", PASSWORD).await.1);
    let body = sync(&server, &bob, &format!("since={end}")).await;
    let before_delete = body["next_batch"].as_str().unwrap().to_owned();
    let path = format!("{V3}/devices/{}", second.device_id);
    let (_, challenge) = server
        .request(reqwest::Method::DELETE, &path, alice.token(), Some(json!({})))
        .await;
    let session = challenge["session"].as_str().unwrap();
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            &path,
            alice.token(),
            Some(json!({ "auth": password_auth(&alice.user_id, Some(session)) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &bob, &format!("since={before_delete}")).await;
    assert_eq!(body["device_lists"]["changed"], json!([alice.user_id]), "{body}");
}

#[tokio::test]
async fn cross_signing_keys_and_signatures_show_in_queries() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let alice_device = Device::new(&alice);
    let bob_device = Device::new(&bob);
    for (who, device) in [(&alice, &alice_device), (&bob, &bob_device)] {
        let (status, _) = upload(&server, who, json!({ "device_keys": device.device_keys() })).await;
        assert_eq!(status, StatusCode::OK);
    }
    let alice_cs = CrossSigning::new(&alice.user_id);
    let bob_cs = CrossSigning::new(&bob.user_id);
    let signing_upload = format!("{V3}/keys/device_signing/upload");

    // A self-signing key not signed by the master key is refused.
    let mut unsigned = alice_cs.upload_body();
    unsigned["self_signing_key"]
        .as_object_mut()
        .unwrap()
        .remove("signatures");
    assert_error(
        &server.post(&signing_upload, alice.token(), unsigned).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // The first upload needs no password; uploading the same keys again neither.
    for _ in 0..2 {
        let (status, body) = server
            .post(&signing_upload, alice.token(), alice_cs.upload_body())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = server.post(&signing_upload, bob.token(), bob_cs.upload_body()).await;
    assert_eq!(status, StatusCode::OK);
    // Replacing them does.
    let replacement = CrossSigning::new(&alice.user_id);
    let (status, challenge) = server
        .post(&signing_upload, alice.token(), replacement.upload_body())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge["session"].is_string(), "{challenge}");

    // Alice signs her device with her self-signing key and Bob's master key with her
    // user-signing key; a forged signature and an unknown key fail.
    let device_keys = alice_device.device_keys();
    let mut signed_device = device_keys.clone();
    signed_device["signatures"] = json!({ &alice.user_id: {
        alice_cs.self_signing.key_id(): alice_cs.self_signing.signature(&alice.user_id, &device_keys),
    } });
    let bob_master = bob_cs.master_json();
    let mut signed_bob = bob_master.clone();
    signed_bob["signatures"] = json!({ &alice.user_id: {
        alice_cs.user_signing.key_id(): alice_cs.user_signing.signature(&alice.user_id, &bob_master),
    } });
    let forger = Key::new(None);
    let mut forged = bob_device.device_keys();
    forged["signatures"] = json!({ &alice.user_id: {
        alice_cs.user_signing.key_id(): forger.signature(&alice.user_id, &bob_device.device_keys()),
    } });
    let (status, body) = server
        .post(
            &format!("{V3}/keys/signatures/upload"),
            alice.token(),
            json!({
                &alice.user_id: { &alice.device_id: signed_device, "NOSUCHKEY": { "user_id": alice.user_id } },
                &bob.user_id: { &bob_cs.master.public: signed_bob, &bob.device_id: forged },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["failures"][&alice.user_id]["NOSUCHKEY"]["errcode"], "M_NOT_FOUND",
        "{body}"
    );
    // Alice may not sign Bob's devices directly: only his master key.
    assert!(
        body["failures"][&bob.user_id][&bob.device_id]["errcode"].is_string(),
        "{body}"
    );
    assert!(
        body["failures"][&bob.user_id].get(&bob_cs.master.public).is_none(),
        "{body}"
    );

    // Bob sees Alice's cross-signing keys and her device signed by her self-signing key,
    // but not her user-signing key.
    let body = query(&server, &bob, &alice.user_id).await;
    assert_eq!(
        body["master_keys"][&alice.user_id]["keys"],
        alice_cs.master_json()["keys"]
    );
    assert!(body["self_signing_keys"][&alice.user_id].is_object(), "{body}");
    assert!(body["user_signing_keys"].get(&alice.user_id).is_none(), "{body}");
    let device_signatures = &body["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert!(device_signatures[alice_cs.self_signing.key_id()].is_string(), "{body}");
    // Alice sees her own user-signing key and her signature on Bob's master key.
    let body = query(&server, &alice, &alice.user_id).await;
    assert!(body["user_signing_keys"][&alice.user_id].is_object(), "{body}");
    let body = query(&server, &alice, &bob.user_id).await;
    let on_bob = &body["master_keys"][&bob.user_id]["signatures"][&alice.user_id];
    assert!(on_bob[alice_cs.user_signing.key_id()].is_string(), "{body}");
    // That signature is Alice's business: a third user does not see it.
    let carol = server.register("carol").await;
    let body = query(&server, &carol, &bob.user_id).await;
    assert!(
        body["master_keys"][&bob.user_id]["signatures"]
            .get(&alice.user_id)
            .is_none(),
        "{body}"
    );
}
