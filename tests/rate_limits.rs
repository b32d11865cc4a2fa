//! Per-user rate limits (`rate_limits.*`): sending, room creation, invites (sent and
//! received), joins, media uploads, to-device messages and URL previews. Over a limit the
//! answer is 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`, nothing is done, and admins and
//! `rate_limits.exempt_users` are never limited.

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, enc, join, send_text},
};
use hearth::config::{Config, RateLimit};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TIGHT: RateLimit = RateLimit {
    per_second: 0.001,
    burst_count: 3,
};

#[track_caller]
fn assert_limited(result: &(StatusCode, Value)) {
    assert_error(result, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(
        result.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{}",
        result.1
    );
}

#[tokio::test]
async fn sending_is_limited_per_user_but_retries_and_admins_go_through() {
    let server = TestServer::start_with(|config| {
        config.rate_limits.message = TIGHT;
        config.rate_limits.exempt_users = vec!["@bot:localhost".to_owned()];
    })
    .await;
    let alice = server.register("alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let mut first = None;
    for n in 0..3 {
        let (status, body) = send_text(&server, &alice, &room, &format!("t{n}"), "hi").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        first.get_or_insert(body["event_id"].clone());
    }
    assert_limited(&send_text(&server, &alice, &room, "t3", "one too many").await);
    // State events and redactions count too.
    let topic = server
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)),
            alice.token(),
            json!({ "topic": "limited" }),
        )
        .await;
    assert_limited(&topic);
    // A retry of a send that went through gets its event, limit or not.
    let (status, retry) = send_text(&server, &alice, &room, "t0", "hi").await;
    assert_eq!((status, &retry["event_id"]), (StatusCode::OK, first.as_ref().unwrap()));
    // Nothing of the refused ones reached the room.
    let (_, messages) = server
        .get(
            &format!("{V3}/rooms/{}/messages?dir=b&limit=50", enc(&room)),
            alice.token(),
        )
        .await;
    let texts = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count();
    assert_eq!(texts, 3);
    let (_, topic_now) = server
        .get(&format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)), alice.token())
        .await;
    assert_ne!(topic_now["topic"], "limited");

    // Other users have their own buckets; admins and exempt users have none.
    let bob = server.register("bob").await;
    assert_eq!(join(&server, &bob, &room).await.0, StatusCode::OK);
    assert_eq!(send_text(&server, &bob, &room, "b", "hi").await.0, StatusCode::OK);
    for who in [server.register_admin("root", true).await, server.register("bot").await] {
        assert_eq!(join(&server, &who, &room).await.0, StatusCode::OK);
        for n in 0..6 {
            let (status, body) = send_text(&server, &who, &room, &format!("x{n}"), "hi").await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
}

#[tokio::test]
async fn room_creation_invites_and_joins_are_limited() {
    let server = TestServer::start_with(|config| {
        config.rate_limits.room_creation = TIGHT;
        config.rate_limits.invites = TIGHT;
        config.rate_limits.joins = TIGHT;
    })
    .await;
    let alice = server.register("alice").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        rooms.push(create_room(&server, &alice, json!({ "preset": "public_chat" })).await);
    }
    let refused = server.post(&format!("{V3}/createRoom"), alice.token(), json!({})).await;
    assert_limited(&refused);
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), alice.token()).await;
    assert_eq!(
        joined["joined_rooms"].as_array().unwrap().len(),
        3,
        "no fourth room was made"
    );

    // Invites: three from alice, then no more.
    let mut invitees = Vec::new();
    for name in ["b1", "b2", "b3", "b4"] {
        invitees.push(server.register(name).await);
    }
    let invite = |who: &Session| {
        let path = format!("{V3}/rooms/{}/invite", enc(&rooms[0]));
        let body = json!({ "user_id": who.user_id });
        let token = alice.access_token.clone();
        let server = &server;
        async move { server.post(&path, Some(&token), body).await }
    };
    for who in &invitees[..3] {
        assert_eq!(invite(who).await.0, StatusCode::OK);
    }
    assert_limited(&invite(&invitees[3]).await);

    // Joins: bob joins three rooms, the fourth is refused and he is not in it.
    let extra = create_room(
        &server,
        &server.register_admin("root", true).await,
        json!({ "preset": "public_chat" }),
    )
    .await;
    let bob = &invitees[0];
    for room in &rooms {
        assert_eq!(join(&server, bob, room).await.0, StatusCode::OK);
    }
    assert_limited(&join(&server, bob, &extra).await);
    let (_, member) = server
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&extra)), None)
        .await;
    assert!(member.get("joined").is_none_or(|j| j.get(&bob.user_id).is_none()));
}

#[tokio::test]
async fn one_user_cannot_be_flooded_with_invites_from_many() {
    let server = TestServer::start_with(|config| config.rate_limits.invites_received = TIGHT).await;
    let victim = server.register("victim").await;
    for n in 0..4 {
        let sender = server.register(&format!("spammer{n}")).await;
        let room = create_room(&server, &sender, json!({})).await;
        let result = server
            .post(
                &format!("{V3}/rooms/{}/invite", enc(&room)),
                sender.token(),
                json!({ "user_id": victim.user_id }),
            )
            .await;
        if n < 3 {
            assert_eq!(result.0, StatusCode::OK, "{}", result.1);
        } else {
            assert_limited(&result);
        }
    }
    // The same limit holds for invites made with createRoom.
    let late = server.register("late").await;
    let result = server
        .post(
            &format!("{V3}/createRoom"),
            late.token(),
            json!({ "invite": [victim.user_id] }),
        )
        .await;
    assert_limited(&result);
    // And for an invite sent as a member state event.
    let sender = server.register("stateful").await;
    let room = create_room(&server, &sender, json!({})).await;
    let result = server
        .put(
            &format!("{V3}/rooms/{}/state/m.room.member/{}", enc(&room), enc(&victim.user_id)),
            sender.token(),
            json!({ "membership": "invite" }),
        )
        .await;
    assert_limited(&result);
}

#[tokio::test]
async fn uploads_to_device_and_previews_are_limited() {
    let server = TestServer::start_with(|config| {
        config.rate_limits.media_upload = TIGHT;
        config.rate_limits.to_device = TIGHT;
        config.rate_limits.preview_url = TIGHT;
    })
    .await;
    let alice = server.register("alice").await;
    let upload = || {
        server.raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            alice.token(),
            b"bytes".to_vec(),
        )
    };
    for _ in 0..2 {
        assert_eq!(upload().await.0, StatusCode::OK);
    }
    let create = server.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
    assert_eq!(create.0, StatusCode::OK, "create counts as an upload");
    assert_limited(&upload().await);

    for n in 0..4 {
        let result = server
            .put(
                &format!("{V3}/sendToDevice/m.test/t{n}"),
                alice.token(),
                json!({ "messages": { alice.user_id.clone(): { "*": { "n": n } } } }),
            )
            .await;
        if n < 3 {
            assert_eq!(result.0, StatusCode::OK);
        } else {
            assert_limited(&result);
        }
    }

    // Previews: the limit is checked before any fetch, whatever the fetch would give.
    let preview = "/_matrix/client/v1/media/preview_url?url=http%3A%2F%2F127.0.0.1%3A1%2F";
    for _ in 0..3 {
        let (status, _) = server.get(preview, alice.token()).await;
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_limited(&server.get(preview, alice.token()).await);
}

#[test]
fn a_limit_that_never_refills_or_allows_nothing_is_refused_at_start() {
    for bad in [
        RateLimit {
            per_second: 0.0,
            burst_count: 3,
        },
        RateLimit {
            per_second: 1.0,
            burst_count: 0,
        },
        RateLimit {
            per_second: f64::NAN,
            burst_count: 3,
        },
    ] {
        let mut config = Config::default();
        config.rate_limits.joins = bad;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("rate_limits.joins"), "{error}");
    }
}
