//! Typing notices, receipts, read markers, presence and delivery receipts, as `/sync`
//! carries them.

use crate::common;

use crate::common::{
    TestServer, assert_error,
    rooms::{V3, create_room, enc, join, room_events, send_text, sync},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn pair(server: &TestServer) -> (common::Session, common::Session, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(server, &alice, json!({ "preset": "public_chat" })).await;
    join(server, &bob, &room).await;
    (alice, bob, room)
}

fn ephemeral<'a>(body: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    room_events(body, room, "ephemeral").iter().find(|e| e["type"] == kind)
}

#[tokio::test]
async fn typing_notices_start_stop_and_expire() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let path = format!("{V3}/rooms/{room}/typing/{}", alice.user_id);
    let (status, _) = server
        .put(&path, alice.token(), json!({ "typing": true, "timeout": 1000 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    let typing = ephemeral(&body, &room, "m.typing").expect("typing");
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));

    // The notice expires on its own after the timeout, and the expiry reaches clients.
    let since = body["next_batch"].as_str().unwrap();
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    assert_eq!(
        ephemeral(&body, &room, "m.typing").unwrap()["content"]["user_ids"],
        json!([])
    );

    // Stopping explicitly.
    server
        .put(&path, alice.token(), json!({ "typing": true, "timeout": 30000 }))
        .await;
    let since = body["next_batch"].as_str().unwrap();
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    assert_eq!(
        ephemeral(&body, &room, "m.typing").unwrap()["content"]["user_ids"],
        json!([alice.user_id])
    );
    server.put(&path, alice.token(), json!({ "typing": false })).await;
    let since = body["next_batch"].as_str().unwrap();
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    assert_eq!(
        ephemeral(&body, &room, "m.typing").unwrap()["content"]["user_ids"],
        json!([])
    );
}

#[tokio::test]
async fn typing_is_refused_for_others_and_outsiders() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let carol = server.register("carol").await;
    let as_alice = format!("{V3}/rooms/{room}/typing/{}", alice.user_id);
    assert_error(
        &server
            .put(&as_alice, bob.token(), json!({ "typing": true, "timeout": 1000 }))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let as_carol = format!("{V3}/rooms/{room}/typing/{}", carol.user_id);
    assert_error(
        &server
            .put(&as_carol, carol.token(), json!({ "typing": true, "timeout": 1000 }))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let bad = server.put(&as_alice, alice.token(), json!({ "typing": "yes" })).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn read_receipts_are_shared_and_private_ones_are_not() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let (_, sent) = send_text(&server, &alice, &room, "t1", "hi").await;
    let event_id = sent["event_id"].as_str().unwrap();
    let alice_since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let path = |kind: &str| format!("{V3}/rooms/{room}/receipt/{kind}/{}", enc(event_id));
    let (status, body) = server.post(&path("m.read.private"), bob.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = server
        .post(&path("m.read"), bob.token(), json!({ "thread_id": "main" }))
        .await;
    assert_eq!(status, StatusCode::OK);

    let body = sync(&server, &alice, &format!("since={alice_since}&timeout=5000")).await;
    let receipt = ephemeral(&body, &room, "m.receipt").expect("receipt");
    let on_event = &receipt["content"][event_id];
    assert_eq!(on_event["m.read"][&bob.user_id]["thread_id"], "main");
    assert!(
        on_event.get("m.read.private").is_none(),
        "private receipt leaked: {receipt}"
    );
    // Bob's own clients see his private receipt.
    let own = sync(&server, &bob, "").await;
    let receipt = ephemeral(&own, &room, "m.receipt").expect("receipt");
    assert!(
        receipt["content"][event_id]["m.read.private"][&bob.user_id].is_object(),
        "{receipt}"
    );

    // Bad input changes nothing.
    assert_error(
        &server.post(&path("m.unheard.of"), bob.token(), json!({})).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let unknown = format!("{V3}/rooms/{room}/receipt/m.read/{}", enc("$nope"));
    assert_error(
        &server.post(&unknown, bob.token(), json!({})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let bad_thread = server
        .post(&path("m.read"), bob.token(), json!({ "thread_id": "$missing" }))
        .await;
    assert_error(&bad_thread, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let outsider = server.register("carol").await;
    assert_error(
        &server.post(&path("m.read"), outsider.token(), json!({})).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn read_markers_move_fully_read_and_receipts() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let (_, sent) = send_text(&server, &alice, &room, "t1", "hi").await;
    let event_id = sent["event_id"].as_str().unwrap();
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/read_markers"),
            bob.token(),
            json!({ "m.fully_read": event_id, "m.read": event_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = sync(&server, &bob, "").await;
    let fully_read = room_events(&body, &room, "account_data")
        .iter()
        .find(|e| e["type"] == "m.fully_read")
        .expect("m.fully_read");
    assert_eq!(fully_read["content"]["event_id"], event_id);
    assert!(ephemeral(&body, &room, "m.receipt").unwrap()["content"][event_id]["m.read"][&bob.user_id].is_object());
    let bad = server
        .post(
            &format!("{V3}/rooms/{room}/read_markers"),
            bob.token(),
            json!({ "m.fully_read": 5 }),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

#[tokio::test]
async fn presence_follows_syncing_and_is_shared_with_room_members_only() {
    let server = TestServer::start().await;
    let (alice, bob, _room) = pair(&server).await;
    let carol = server.register("carol").await;
    // Syncing brings Alice online; Bob, in a room with her, sees it.
    sync(&server, &alice, "timeout=0").await;
    let body = sync(&server, &bob, "").await;
    let presence = body["presence"]["events"].as_array().unwrap();
    let hers = presence
        .iter()
        .find(|e| e["sender"] == alice.user_id.as_str())
        .expect("alice's presence");
    assert_eq!(hers["content"]["presence"], "online");
    assert_eq!(hers["content"]["currently_active"], true);

    // A status message set explicitly arrives incrementally.
    let since = body["next_batch"].as_str().unwrap();
    let status_path = format!("{V3}/presence/{}/status", alice.user_id);
    let (status, _) = server
        .put(
            &status_path,
            alice.token(),
            json!({ "presence": "unavailable", "status_msg": "lunch" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &bob, &format!("since={since}&timeout=5000")).await;
    let update = &body["presence"]["events"][0];
    assert_eq!(update["content"]["presence"], "unavailable");
    assert_eq!(update["content"]["status_msg"], "lunch");

    let (status, got) = server.get(&status_path, bob.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["presence"], "unavailable");
    // Carol shares no room with Alice: neither the endpoint nor her sync shows Alice.
    assert_error(
        &server.get(&status_path, carol.token()).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let body = sync(&server, &carol, "").await;
    assert!(
        body["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["sender"] != alice.user_id.as_str())
    );
    // Nobody sets another user's presence; nonsense states are refused.
    assert_error(
        &server
            .put(&status_path, bob.token(), json!({ "presence": "online" }))
            .await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let bad = server
        .put(&status_path, alice.token(), json!({ "presence": "dancing" }))
        .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{}", bad.1);
    let unknown = format!("{V3}/presence/@nobody:localhost/status");
    assert_error(
        &server.get(&unknown, alice.token()).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn presence_goes_offline_when_syncing_stops() {
    let server = TestServer::start_with(|config| config.presence.offline_timeout_secs = 1).await;
    let (alice, bob, _room) = pair(&server).await;
    sync(&server, &alice, "timeout=0").await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    // The ageing timer runs every few seconds; offline arrives within its period.
    let mut since = since;
    let mut seen = None;
    for _ in 0..5 {
        let body = sync(
            &server,
            &bob,
            &format!("since={since}&timeout=5000&set_presence=offline"),
        )
        .await;
        since = body["next_batch"].as_str().unwrap().to_owned();
        if let Some(event) = body["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["sender"] == alice.user_id.as_str())
        {
            seen = Some(event["content"]["presence"].clone());
            break;
        }
    }
    assert_eq!(seen, Some(json!("offline")));
}

#[tokio::test]
async fn senders_see_delivery_receipts_once_a_recipient_syncs() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, sent) = send_text(&server, &alice, &room, "t1", "did you get this?").await;
    let event_id = sent["event_id"].as_str().unwrap();
    // Bob's client receives the message...
    sync(&server, &bob, "").await;
    // ...and Alice learns it was delivered, with the same shape as a read receipt.
    let mut since = since;
    let mut delivered = None;
    for _ in 0..5 {
        let body = sync(&server, &alice, &format!("since={since}&timeout=5000")).await;
        since = body["next_batch"].as_str().unwrap().to_owned();
        if let Some(receipt) = ephemeral(&body, &room, "m.receipt") {
            delivered = receipt["content"][event_id]["io.hearth.delivered"][&bob.user_id]
                .get("ts")
                .cloned();
            if delivered.is_some() {
                break;
            }
        }
    }
    assert!(delivered.is_some(), "no delivery receipt");
    // Bob does not get receipts about his own deliveries.
    let body = sync(&server, &bob, "").await;
    let receipts = ephemeral(&body, &room, "m.receipt")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(!receipts.contains("io.hearth.delivered"), "{receipts}");
}

#[tokio::test]
async fn delivery_receipts_can_be_switched_off() {
    let server = TestServer::start_with(|config| config.sync.delivery_receipts = false).await;
    let (alice, bob, room) = pair(&server).await;
    send_text(&server, &alice, &room, "t1", "hello").await;
    sync(&server, &bob, "").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let body = sync(&server, &alice, "").await;
    let receipts = ephemeral(&body, &room, "m.receipt")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(!receipts.contains("io.hearth.delivered"), "{receipts}");
}

#[tokio::test]
async fn each_sender_sees_delivery_of_their_own_messages() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let carol = server.register("carol").await;
    join(&server, &carol, &room).await;
    let (_, first) = send_text(&server, &alice, &room, "t1", "from alice").await;
    let (_, second) = send_text(&server, &carol, &room, "t2", "from carol").await;
    sync(&server, &bob, "").await;
    for (who, event) in [(&alice, &first), (&carol, &second)] {
        let event_id = event["event_id"].as_str().unwrap();
        let mut found = false;
        for _ in 0..20 {
            let body = sync(&server, who, "").await;
            if ephemeral(&body, &room, "m.receipt")
                .is_some_and(|r| r["content"][event_id]["io.hearth.delivered"][&bob.user_id].is_object())
            {
                found = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(found, "{} never saw delivery of {event_id}", who.user_id);
    }
}

#[tokio::test]
async fn deliveries_pending_at_shutdown_are_written() {
    let server = TestServer::start().await;
    let (alice, bob, room) = pair(&server).await;
    let (_, sent) = send_text(&server, &alice, &room, "t1", "just before the restart").await;
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    sync(&server, &bob, "").await;
    // Stop at once, before the batch writer's next write would have run.
    let server = server.restart().await;
    let body = sync(&server, &alice, "").await;
    let receipt = ephemeral(&body, &room, "m.receipt").expect("a receipt after the restart");
    assert!(
        receipt["content"][&event_id]["io.hearth.delivered"][&bob.user_id].is_object(),
        "{receipt}"
    );
}
