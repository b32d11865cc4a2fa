//! The transaction queue: what an appservice is sent, in order, with its `hs_token`; kept
//! through its outages and the server's restarts; and the ephemeral data it asked for.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::json;

use super::{as_user, join_as, register_ghost, start_with_appservice};
use crate::common::{
    appservice::{FakeAppservice, Options},
    rooms::{create_room, enc, send_text},
};

#[tokio::test]
async fn events_in_the_appservices_rooms_reach_it_in_order_and_others_do_not() {
    let fake = FakeAppservice::start("tg", "tg", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("hana").await;
    register_ghost(&server, &fake, "tg_ivan").await;
    let bridged = create_room(&server, &user, json!({ "invite": ["@tg_ivan:localhost"] })).await;
    let private = create_room(&server, &user, json!({})).await;
    let join = as_user(
        &format!("/_matrix/client/v3/join/{}", enc(&bridged)),
        "@tg_ivan:localhost",
    );
    assert_eq!(
        server.post(&join, Some(&fake.as_token), json!({})).await.0,
        StatusCode::OK
    );

    for n in 0..30 {
        send_text(&server, &user, &bridged, &format!("b{n}"), &format!("message {n}")).await;
        if n % 10 == 0 {
            send_text(&server, &user, &private, &format!("p{n}"), "private").await;
        }
    }
    fake.wait_for("30 messages", |fake| fake.message_bodies().len() >= 30)
        .await;
    let expected: Vec<String> = (0..30).map(|n| format!("message {n}")).collect();
    assert_eq!(fake.message_bodies(), expected, "in stream order, each once");
    let events = fake.events();
    assert!(
        events.iter().all(|event| event["room_id"] == bridged.as_str()),
        "no event of the other room"
    );
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "m.room.member" && event["state_key"] == "@tg_ivan:localhost"),
        "the ghost's invite and join"
    );
    assert_eq!(fake.wrong_token_requests(), 0, "every request carried the hs_token");
    let txn_ids: Vec<u64> = fake.accepted().iter().map(|(txn, _)| txn.parse().unwrap()).collect();
    assert!(
        txn_ids.windows(2).all(|pair| pair[0] < pair[1]),
        "increasing IDs: {txn_ids:?}"
    );
}

#[tokio::test]
async fn an_appservice_that_is_down_gets_everything_in_order_after_a_restart_and_nothing_twice() {
    let fake = FakeAppservice::start("down", "down", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("ines").await;
    register_ghost(&server, &fake, "down_jo").await;
    let room = create_room(&server, &user, json!({ "invite": ["@down_jo:localhost"] })).await;
    join_as(&server, &fake, &room, "@down_jo:localhost").await;
    fake.wait_for("the ghost's invite", |fake| !fake.events().is_empty())
        .await;

    fake.set_down(true);
    for n in 0..12 {
        send_text(&server, &user, &room, &format!("t{n}"), &format!("while down {n}")).await;
    }
    // A transaction was stored and tried (and refused) at least once before the restart.
    fake.wait_for("a refused try", |fake| fake.refused() > 0).await;
    let server = server.restart().await;
    fake.attach(&server.base);
    for n in 12..15 {
        send_text(&server, &user, &room, &format!("t{n}"), &format!("while down {n}")).await;
    }
    fake.set_down(false);
    fake.wait_for("15 messages after the restart", |fake| {
        fake.message_bodies().len() >= 15
    })
    .await;
    let expected: Vec<String> = (0..15).map(|n| format!("while down {n}")).collect();
    assert_eq!(fake.message_bodies(), expected, "in order, none lost, none twice");

    // A transaction ID is never reused for different content, and an event is in one only.
    let mut bodies: HashMap<String, serde_json::Value> = HashMap::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    for (txn, body) in fake.accepted() {
        if let Some(earlier) = bodies.insert(txn.clone(), body.clone()) {
            assert_eq!(earlier, body, "transaction {txn} sent again with other content");
        }
        for event in body["events"].as_array().unwrap() {
            let id = event["event_id"].as_str().unwrap().to_owned();
            if let Some(other) = owner.insert(id.clone(), txn.clone()) {
                assert_eq!(other, txn, "{id} in two transactions");
            }
        }
    }
}

#[tokio::test]
async fn the_queue_backs_off_while_the_appservice_fails_and_catches_up_in_batches() {
    let fake = FakeAppservice::start("busy", "busy", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("kai").await;
    register_ghost(&server, &fake, "busy_lu").await;
    let room = create_room(&server, &user, json!({ "invite": ["@busy_lu:localhost"] })).await;
    join_as(&server, &fake, &room, "@busy_lu:localhost").await;
    fake.set_down(true);
    for n in 0..250 {
        send_text(&server, &user, &room, &format!("t{n}"), &format!("burst {n}")).await;
    }
    // Backoff: 1 s, then 2 s, … so within ~3 s a handful of tries, not hundreds.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let tries = fake.refused();
    assert!((1..=4).contains(&tries), "{tries} tries in 3 s");
    fake.set_down(false);
    fake.wait_for("250 messages", |fake| fake.message_bodies().len() >= 250)
        .await;
    let expected: Vec<String> = (0..250).map(|n| format!("burst {n}")).collect();
    assert_eq!(fake.message_bodies(), expected);
    let sizes: Vec<usize> = fake
        .accepted()
        .iter()
        .map(|(_, body)| body["events"].as_array().unwrap().len())
        .collect();
    assert!(
        sizes.iter().all(|&size| size <= 100),
        "at most 100 events a transaction: {sizes:?}"
    );
    assert!(
        sizes.len() <= 6,
        "caught up in a few batches, not one request per event: {sizes:?}"
    );
}

#[tokio::test]
async fn typing_receipts_presence_and_to_device_messages_reach_an_appservice_that_asked() {
    let fake = FakeAppservice::start(
        "eph",
        "eph",
        Options {
            receive_ephemeral: true,
            msc3202: true,
            msc4190: true,
            ..Options::default()
        },
    )
    .await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("lena").await;
    let ghost = register_ghost(&server, &fake, "eph_max").await;
    let room = create_room(
        &server,
        &user,
        json!({ "invite": ["@eph_max:localhost", "@ephbot:localhost"] }),
    )
    .await;
    let token = Some(fake.as_token.as_str());
    for who in [ghost.as_str(), "@ephbot:localhost"] {
        let join = as_user(&format!("/_matrix/client/v3/join/{}", enc(&room)), who);
        assert_eq!(server.post(&join, token, json!({})).await.0, StatusCode::OK);
    }

    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&user.user_id));
    server
        .put(
            &typing,
            Some(&user.access_token),
            json!({ "typing": true, "timeout": 10000 }),
        )
        .await;
    fake.wait_for("typing", |fake| {
        fake.ephemeral().iter().any(|item| {
            item["type"] == "m.typing"
                && item["room_id"] == room.as_str()
                && item["content"]["user_ids"][0] == user.user_id.as_str()
        })
    })
    .await;

    let (_, sent) = send_text(&server, &user, &room, "r1", "read me").await;
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let receipt = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        enc(&room),
        enc(&event_id)
    );
    assert_eq!(
        server.post(&receipt, Some(&user.access_token), json!({})).await.0,
        StatusCode::OK
    );
    fake.wait_for("the read receipt", |fake| {
        fake.ephemeral().iter().any(|item| {
            item["type"] == "m.receipt" && item["content"][&event_id]["m.read"][&user.user_id]["ts"].is_i64()
        })
    })
    .await;

    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&user.user_id));
    server
        .put(
            &presence,
            Some(&user.access_token),
            json!({ "presence": "online", "status_msg": "bridging" }),
        )
        .await;
    fake.wait_for("presence", |fake| {
        fake.ephemeral()
            .iter()
            .any(|item| item["type"] == "m.presence" && item["sender"] == user.user_id.as_str())
    })
    .await;

    // To-device messages for a device of the appservice's (MSC2409, as encrypted bridges need).
    let device = as_user("/_matrix/client/v3/devices/BOTDEV", "@ephbot:localhost");
    assert_eq!(server.put(&device, token, json!({})).await.0, StatusCode::CREATED);
    let to_device = json!({ "messages": { "@ephbot:localhost": { "BOTDEV": { "hello": "bridge" } } } });
    let path = "/_matrix/client/v3/sendToDevice/m.test/td1";
    assert_eq!(
        server.put(path, Some(&user.access_token), to_device).await.0,
        StatusCode::OK
    );
    fake.wait_for("the to-device message", |fake| {
        fake.accepted().iter().any(|(_, body)| {
            body["de.sorunome.msc2409.to_device"]
                .as_array()
                .is_some_and(|messages| {
                    messages.iter().any(|m| {
                        m["to_device_id"] == "BOTDEV"
                            && m["content"]["hello"] == "bridge"
                            && m["sender"] == user.user_id.as_str()
                    })
                })
        })
    })
    .await;

    // MSC3202: the bot's device list news and its devices' one-time key counts.
    let other = server.login("lena", crate::common::PASSWORD).await;
    assert_eq!(other.0, StatusCode::OK);
    fake.wait_for("lena's new device in device_lists", |fake| {
        fake.accepted().iter().any(|(_, body)| {
            body["org.matrix.msc3202.device_lists"]["changed"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == user.user_id.as_str()))
                && body["org.matrix.msc3202.device_one_time_keys_count"]["@ephbot:localhost"]["BOTDEV"].is_object()
        })
    })
    .await;

    // An appservice that did not ask gets none of it.
    let quiet = FakeAppservice::start("quiet", "quiet", Options::default()).await;
    let server = start_with_appservice(&quiet).await;
    let user = server.register("lena").await;
    register_ghost(&server, &quiet, "quiet_q").await;
    let room = create_room(&server, &user, json!({ "invite": ["@quiet_q:localhost"] })).await;
    join_as(&server, &quiet, &room, "@quiet_q:localhost").await;
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&user.user_id));
    server
        .put(
            &typing,
            Some(&user.access_token),
            json!({ "typing": true, "timeout": 10000 }),
        )
        .await;
    send_text(&server, &user, &room, "q1", "after typing").await;
    quiet
        .wait_for("the message", |fake| fake.message_bodies().len() == 1)
        .await;
    assert!(quiet.ephemeral().is_empty(), "{:?}", quiet.accepted());
}

#[tokio::test]
async fn a_registration_with_the_wrong_hs_token_delivers_nothing_until_fixed_and_reloaded() {
    let fake = FakeAppservice::start("mis", "mis", Options::default()).await;
    let right = std::fs::read_to_string(&fake.registration_path).unwrap();
    std::fs::write(&fake.registration_path, right.replace(&fake.hs_token, "hs-mis-wrong")).unwrap();
    let server = start_with_appservice(&fake).await;
    let user = server.register("quinn").await;
    register_ghost(&server, &fake, "mis_rae").await;
    let room = create_room(&server, &user, json!({ "invite": ["@mis_rae:localhost"] })).await;
    join_as(&server, &fake, &room, "@mis_rae:localhost").await;
    for n in 0..5 {
        send_text(&server, &user, &room, &format!("m{n}"), &format!("queued {n}")).await;
    }
    fake.wait_for("a call with the wrong token", |fake| fake.wrong_token_requests() > 0)
        .await;
    assert!(
        fake.accepted().is_empty(),
        "the appservice took nothing with the wrong token"
    );

    // The operator fixes the file and reloads: everything queued arrives, in order.
    std::fs::write(&fake.registration_path, right).unwrap();
    server.services.appservices.reload().await.unwrap();
    fake.wait_for("the queued messages", |fake| fake.message_bodies().len() >= 5)
        .await;
    let expected: Vec<String> = (0..5).map(|n| format!("queued {n}")).collect();
    assert_eq!(fake.message_bodies(), expected);
}

#[tokio::test]
async fn a_queue_behind_judges_membership_as_of_each_event() {
    let fake = FakeAppservice::start("late", "late", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let user = server.register("rita").await;
    register_ghost(&server, &fake, "late_sam").await;
    register_ghost(&server, &fake, "late_tom").await;
    let left = create_room(&server, &user, json!({ "preset": "public_chat" })).await;
    let joined = create_room(&server, &user, json!({ "preset": "public_chat" })).await;
    join_as(&server, &fake, &left, "@late_sam:localhost").await;
    fake.wait_for("sam's join", |fake| !fake.events().is_empty()).await;

    // While the appservice is down, sam leaves one room and tom joins the other.
    fake.set_down(true);
    send_text(&server, &user, &left, "l1", "before sam left").await;
    send_text(&server, &user, &joined, "j1", "before tom joined").await;
    let leave = as_user(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&left)),
        "@late_sam:localhost",
    );
    assert_eq!(
        server.post(&leave, Some(&fake.as_token), json!({})).await.0,
        StatusCode::OK
    );
    join_as(&server, &fake, &joined, "@late_tom:localhost").await;
    send_text(&server, &user, &left, "l2", "after sam left").await;
    send_text(&server, &user, &joined, "j2", "after tom joined").await;
    fake.set_down(false);

    fake.wait_for("the messages", |fake| fake.message_bodies().len() >= 2)
        .await;
    // Nothing more is coming: the queue is idle once tom's last message is in.
    fake.wait_for("tom's room", |fake| {
        fake.message_bodies().iter().any(|b| b == "after tom joined")
    })
    .await;
    assert_eq!(
        fake.message_bodies(),
        ["before sam left", "after tom joined"],
        "up to sam's leave, from tom's join"
    );
}

#[tokio::test]
async fn ghosts_may_have_names_users_may_not() {
    let fake = FakeAppservice::start("disc", "_disc", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    for name in ["_disc_12345", "_disc_Alice"] {
        let (status, body) = server
            .post(
                "/_matrix/client/v3/register",
                Some(&fake.as_token),
                json!({ "type": "m.login.application_service", "username": name, "inhibit_login": true }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(
            body["user_id"],
            format!("@{name}:localhost"),
            "no case folding for ghosts"
        );
    }
    let user = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "_disc_x", "password": "correct horse", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(user.0, StatusCode::BAD_REQUEST, "{}", user.1);
}
