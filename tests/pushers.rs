//! Pushers and delivery to push gateways: a real HTTP gateway inside the test process
//! receives the notifications; rejected pushkeys remove the pusher; a gateway that is down is
//! retried, also across a restart; pushers go with their device; SSRF refusals.

use crate::common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, join},
};
use axum::{Json, Router, extract::State, http::StatusCode as AxumStatus, routing::post};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How the test gateway answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Accept,
    RejectAll,
    Fail,
}

#[derive(Clone)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    mode: Arc<Mutex<Mode>>,
    attempts: Arc<Mutex<usize>>,
    url: String,
}

impl Gateway {
    async fn start() -> Self {
        let gateway = Self {
            received: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
            attempts: Arc::default(),
            url: String::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(gateway.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, ..gateway }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` notifications arrived (at most `secs` seconds).
    async fn wait_for(&self, count: usize, secs: u64) -> Vec<Value> {
        for _ in 0..secs * 20 {
            if self.received.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }
}

async fn notify(State(gateway): State<Gateway>, Json(body): Json<Value>) -> (AxumStatus, Json<Value>) {
    *gateway.attempts.lock().unwrap() += 1;
    let mode = *gateway.mode.lock().unwrap();
    match mode {
        Mode::Fail => (AxumStatus::SERVICE_UNAVAILABLE, Json(json!({}))),
        Mode::RejectAll => {
            let keys: Vec<Value> = body["notification"]["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|device| device["pushkey"].clone())
                .collect();
            (AxumStatus::OK, Json(json!({ "rejected": keys })))
        }
        Mode::Accept => {
            // What Hearth sends must be what the push gateway spec describes.
            let violations = common::schema::push_notification_violations(&body);
            assert!(violations.is_empty(), "push to the gateway: {violations:?} in {body}");
            gateway.received.lock().unwrap().push(body);
            (AxumStatus::OK, Json(json!({ "rejected": [] })))
        }
    }
}

async fn start_server() -> TestServer {
    TestServer::start_with(|config| {
        config.push.ip_range_allowlist = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
}

fn pusher(url: &str, pushkey: &str, format: Option<&str>) -> Value {
    let mut data = json!({ "url": url, "custom": "kept" });
    if let Some(format) = format {
        data["format"] = Value::from(format);
    }
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag1",
        "lang": "en",
        "data": data,
    })
}

async fn set_pusher(server: &TestServer, who: &Session, body: Value) -> (StatusCode, Value) {
    server.post(&format!("{V3}/pushers/set"), who.token(), body).await
}

async fn pushers_of(server: &TestServer, who: &Session) -> Vec<Value> {
    let (status, body) = server.get(&format!("{V3}/pushers"), who.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["pushers"].as_array().unwrap().clone()
}

/// alice (with a pusher) and bob in a DM.
async fn dm(server: &TestServer) -> (Session, Session, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = create_room(
        server,
        &bob,
        json!({ "preset": "trusted_private_chat", "invite": [alice.user_id], "name": "Chat" }),
    )
    .await;
    assert_eq!(join(server, &alice, &room).await.0, StatusCode::OK);
    (alice, bob, room)
}

async fn say(server: &TestServer, who: &Session, room: &str, txn: &str, body: &str) -> String {
    let (status, answer) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            who.token(),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn notifications_reach_the_gateway_in_the_documented_shape() {
    let gateway = Gateway::start().await;
    let server = start_server().await;
    let (alice, bob, room) = dm(&server).await;
    let (status, body) = set_pusher(&server, &alice, pusher(&gateway.url, "key-1", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = pushers_of(&server, &alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["pushkey"], "key-1");
    assert_eq!(listed[0]["data"]["url"], gateway.url.as_str());
    assert_eq!(listed[0]["data"]["custom"], "kept");
    assert_eq!(listed[0]["profile_tag"], "tag1");
    assert_eq!(listed[0]["kind"], "http");

    let event_id = say(&server, &bob, &room, "1", "hello alice").await;
    let received = gateway.wait_for(1, 10).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let notification = &received[0]["notification"];
    assert_eq!(notification["event_id"], event_id.as_str());
    assert_eq!(notification["room_id"], room.as_str());
    assert_eq!(notification["type"], "m.room.message");
    assert_eq!(notification["sender"], bob.user_id.as_str());
    assert_eq!(notification["room_name"], "Chat");
    assert_eq!(notification["sender_display_name"], "bob");
    assert_eq!(notification["content"]["body"], "hello alice");
    assert_eq!(notification["counts"]["unread"], 1);
    assert_eq!(notification["prio"], "high", "a DM sets the sound tweak");
    let device = &notification["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "key-1");
    assert_eq!(device["data"]["custom"], "kept");
    assert!(
        device["data"].get("url").is_none(),
        "the URL is not sent to the gateway"
    );
    assert_eq!(device["tweaks"]["sound"], "default");
    assert!(device["pushkey_ts"].as_i64().unwrap() > 0);

    // event_id_only: no content, sender or names.
    let (status, _) = set_pusher(&server, &alice, pusher(&gateway.url, "key-1", Some("event_id_only"))).await;
    assert_eq!(status, StatusCode::OK);
    let second = say(&server, &bob, &room, "2", "secret words").await;
    let received = gateway.wait_for(2, 10).await;
    let notification = &received[1]["notification"];
    assert_eq!(notification["event_id"], second.as_str());
    assert_eq!(notification["counts"]["unread"], 1);
    assert!(notification.get("content").is_none(), "{notification}");
    assert!(notification.get("sender").is_none());
    // bob's own message pushes nothing to bob (no pusher) and alice's own pushes nothing to her.
    say(&server, &alice, &room, "3", "my own words").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.received().len(), 2);
}

#[tokio::test]
async fn an_invite_push_names_its_target_and_the_rooms_alias() {
    let gateway = Gateway::start().await;
    let server = start_server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, body) = set_pusher(&server, &alice, pusher(&gateway.url, "key-1", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = create_room(&server, &bob, json!({ "room_alias_name": "lounge" })).await;
    let (status, body) = server
        .post(
            &format!("{V3}/rooms/{room}/invite"),
            bob.token(),
            json!({ "user_id": alice.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let received = gateway.wait_for(1, 10).await;
    let notification = &received[0]["notification"];
    assert_eq!(notification["type"], "m.room.member");
    assert_eq!(notification["content"]["membership"], "invite");
    assert_eq!(notification["user_is_target"], true);
    assert_eq!(notification["room_alias"], "#lounge:localhost");
    assert_eq!(notification["sender_display_name"], "bob");
}

#[tokio::test]
async fn reading_sends_a_badge_update() {
    let gateway = Gateway::start().await;
    let server = start_server().await;
    let (alice, bob, room) = dm(&server).await;
    let (status, _) = set_pusher(&server, &alice, pusher(&gateway.url, "key", None)).await;
    assert_eq!(status, StatusCode::OK);
    let event_id = say(&server, &bob, &room, "1", "hello").await;
    let received = gateway.wait_for(1, 10).await;
    assert_eq!(received[0]["notification"]["counts"]["unread"], 1);
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{}", common::rooms::enc(&event_id)),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let received = gateway.wait_for(2, 10).await;
    assert_eq!(received.len(), 2, "{received:?}");
    let badge = &received[1]["notification"];
    assert_eq!(badge["counts"]["unread"], 0, "{badge}");
    assert!(badge.get("event_id").is_none(), "counts only: {badge}");
    assert_eq!(badge["devices"][0]["pushkey"], "key");
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let gateway = Gateway::start().await;
    let server = start_server().await;
    let (alice, bob, room) = dm(&server).await;
    let (status, _) = set_pusher(&server, &alice, pusher(&gateway.url, "stale", None)).await;
    assert_eq!(status, StatusCode::OK);
    gateway.set_mode(Mode::RejectAll);
    say(&server, &bob, &room, "1", "are you there").await;
    for _ in 0..100 {
        if pushers_of(&server, &alice).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pushers_of(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn a_down_gateway_is_retried_and_pending_pushes_survive_a_restart() {
    let gateway = Gateway::start().await;
    let server = start_server().await;
    let (alice, bob, room) = dm(&server).await;
    let (status, _) = set_pusher(&server, &alice, pusher(&gateway.url, "key", None)).await;
    assert_eq!(status, StatusCode::OK);
    gateway.set_mode(Mode::Fail);
    let first = say(&server, &bob, &room, "1", "one").await;
    // Retried with backoff while it fails.
    for _ in 0..100 {
        if *gateway.attempts.lock().unwrap() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(*gateway.attempts.lock().unwrap() >= 2, "retried");
    // A restart loses nothing.
    let server = server.restart().await;
    let second = say(&server, &bob, &room, "2", "two").await;
    gateway.set_mode(Mode::Accept);
    let received = gateway.wait_for(2, 15).await;
    let ids: Vec<&str> = received
        .iter()
        .map(|n| n["notification"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "in order, each once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.received().len(), 2);
}

#[tokio::test]
async fn one_dead_gateway_does_not_delay_another() {
    let dead = Gateway::start().await;
    dead.set_mode(Mode::Fail);
    let alive = Gateway::start().await;
    let server = start_server().await;
    let (alice, bob, room) = dm(&server).await;
    let (status, _) = set_pusher(&server, &alice, pusher(&dead.url, "dead", None)).await;
    assert_eq!(status, StatusCode::OK);
    let mut second = pusher(&alive.url, "alive", None);
    second["app_id"] = json!("org.example.other");
    let (status, _) = set_pusher(&server, &alice, second).await;
    assert_eq!(status, StatusCode::OK);
    say(&server, &bob, &room, "1", "ping").await;
    let received = alive.wait_for(1, 5).await;
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn pushers_are_replaced_removed_and_go_with_their_device() {
    let gateway = Gateway::start().await;
    let server = start_server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, _) = set_pusher(&server, &alice, pusher(&gateway.url, "shared", None)).await;
    assert_eq!(status, StatusCode::OK);
    // Same app and pushkey for another user: it moves to them unless `append`.
    let (status, _) = set_pusher(&server, &bob, pusher(&gateway.url, "shared", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(pushers_of(&server, &alice).await.is_empty());
    let mut appended = pusher(&gateway.url, "shared", None);
    appended["append"] = json!(true);
    let (status, _) = set_pusher(&server, &alice, appended).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pushers_of(&server, &alice).await.len(), 1);
    assert_eq!(pushers_of(&server, &bob).await.len(), 1);
    // Removal: kind null.
    let (status, body) = set_pusher(
        &server,
        &bob,
        json!({ "kind": null, "app_id": "org.example.app", "pushkey": "shared" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(pushers_of(&server, &bob).await.is_empty());
    // Logging out removes the device's pushers.
    let (status, _) = server.post(&format!("{V3}/logout"), alice.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.login("alice", common::PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let again = Session::from_json(&body);
    assert!(pushers_of(&server, &again).await.is_empty());
}

#[tokio::test]
async fn bad_pushers_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let gateway = Gateway::start().await;
    // The default policy refuses the server's own network.
    assert_error(
        &set_pusher(&server, &alice, pusher(&gateway.url, "k", None)).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    for url in [
        "https://push.example.org/wrong/path",
        "not a url",
        "ftp://push.example.org/_matrix/push/v1/notify",
        "http://169.254.169.254/_matrix/push/v1/notify",
        "http://[::1]/_matrix/push/v1/notify",
    ] {
        assert_error(
            &set_pusher(&server, &alice, pusher(url, "k", None)).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        );
    }
    let mut email = pusher("https://push.example.org/_matrix/push/v1/notify", "a@example.org", None);
    email["kind"] = json!("email");
    assert_error(
        &set_pusher(&server, &alice, email).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let mut long = pusher(
        "https://push.example.org/_matrix/push/v1/notify",
        &"k".repeat(600),
        None,
    );
    let (status, _) = set_pusher(&server, &alice, long.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    long["pushkey"] = json!("ok");
    long["app_id"] = json!("a".repeat(65));
    let (status, _) = set_pusher(&server, &alice, long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Missing fields and malformed bodies.
    let (status, body) = set_pusher(&server, &alice, json!({ "kind": "http", "app_id": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .raw(Method::POST, &format!("{V3}/pushers/set"), alice.token(), b"{".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(pushers_of(&server, &alice).await.is_empty(), "nothing was stored");
    // At most 32 pushers per user; updating one of them is still fine.
    let public = "https://push.example.org/_matrix/push/v1/notify";
    for i in 0..32 {
        let (status, _) = set_pusher(&server, &alice, pusher(public, &format!("key{i}"), None)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_error(
        &set_pusher(&server, &alice, pusher(public, "one-too-many", None)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, _) = set_pusher(&server, &alice, pusher(public, "key3", Some("event_id_only"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pushers_of(&server, &alice).await.len(), 32);
    for i in 0..32 {
        let (status, _) = set_pusher(
            &server,
            &alice,
            json!({ "kind": null, "app_id": "org.example.app", "pushkey": format!("key{i}") }),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_error(
        &server
            .post(
                &format!("{V3}/pushers/set"),
                None,
                pusher("https://push.example.org/_matrix/push/v1/notify", "k", None),
            )
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server.get(&format!("{V3}/pushers"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // A name that resolves into the server's own network is set (names may change), but
    // nothing is ever sent there.
    let port = gateway.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let by_name = format!("http://localhost:{port}/_matrix/push/v1/notify");
    let (status, _) = set_pusher(&server, &alice, pusher(&by_name, "k", None)).await;
    assert_eq!(status, StatusCode::OK);
    let bob = server.register("bob").await;
    let room = create_room(
        &server,
        &bob,
        json!({ "preset": "trusted_private_chat", "invite": [alice.user_id] }),
    )
    .await;
    assert_eq!(join(&server, &alice, &room).await.0, StatusCode::OK);
    say(&server, &bob, &room, "1", "hello").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*gateway.attempts.lock().unwrap(), 0, "refused by the address policy");
}
