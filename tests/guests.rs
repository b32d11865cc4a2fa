//! Guest accounts (`registration.allow_guests`): they may read and talk in rooms that let
//! guests in (`m.room.guest_access: can_join`) and look after their own devices and keys, and
//! nothing else: no rooms of their own, invites, uploads, pushers, aliases or reports.

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, enc, join, send_text},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn guest(server: &TestServer) -> Session {
    let (status, body) = server.post(&format!("{V3}/register?kind=guest"), None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Session::from_json(&body)
}

async fn membership(server: &TestServer, who: &Session, room: &str, user: &str) -> Option<String> {
    let (status, body) = server
        .get(
            &format!("{V3}/rooms/{}/state/m.room.member/{user}", enc(room)),
            who.token(),
        )
        .await;
    (status == StatusCode::OK).then(|| body["membership"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn guests_cannot_make_rooms_invite_upload_push_alias_or_report() {
    let server = TestServer::start_with(|config| config.registration.allow_guests = true).await;
    let alice = server.register("alice").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "initial_state": [
            { "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }
        ]}),
    )
    .await;
    let guest = guest(&server).await;
    server.register("carol").await;
    assert_eq!(join(&server, &guest, &room).await.0, StatusCode::OK);
    let (_, sent) = send_text(&server, &alice, &room, "t1", "hello").await;
    let event = sent["event_id"].as_str().unwrap();

    let forbidden = [
        (Method::POST, format!("{V3}/createRoom"), json!({})),
        (
            Method::POST,
            format!("{V3}/rooms/{}/invite", enc(&room)),
            json!({ "user_id": alice.user_id }),
        ),
        (
            Method::POST,
            "/_matrix/media/v3/upload".to_owned(),
            json!({ "not": "an image" }),
        ),
        (
            Method::POST,
            format!("{V3}/pushers/set"),
            json!({ "kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "a",
                    "device_display_name": "d", "lang": "en", "data": { "url": "http://127.0.0.1/_matrix/push/v1/notify" } }),
        ),
        (
            Method::PUT,
            format!("{V3}/directory/room/{}", enc("#guestroom:localhost")),
            json!({ "room_id": room }),
        ),
        (
            Method::POST,
            format!("{V3}/rooms/{}/report/{}", enc(&room), enc(event)),
            json!({ "reason": "spam" }),
        ),
        (
            Method::PUT,
            format!("{V3}/profile/{}/avatar_url", enc(&guest.user_id)),
            json!({ "avatar_url": "mxc://localhost/abc" }),
        ),
        (Method::GET, format!("{V3}/pushrules/"), json!({})),
        // An invite sent as a member state event is an invite all the same.
        (
            Method::PUT,
            format!(
                "{V3}/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc("@carol:localhost")
            ),
            json!({ "membership": "invite" }),
        ),
        (Method::GET, format!("{V3}/joined_rooms"), json!({})),
    ];
    for (method, path, body) in forbidden {
        let result = server.request(method.clone(), &path, guest.token(), Some(body)).await;
        assert_error(&result, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    }
    // Nothing was made: no alias, no report for the admins, the avatar unset.
    let (status, _) = server
        .get(&format!("{V3}/directory/room/{}", enc("#guestroom:localhost")), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, profile) = server.get(&format!("{V3}/profile/{}", enc(&guest.user_id)), None).await;
    assert!(profile.get("avatar_url").is_none(), "{profile}");

    // What guests may do, they can: talk, sync, name themselves, see their devices.
    assert_eq!(send_text(&server, &guest, &room, "g1", "hi").await.0, StatusCode::OK);
    let (status, _) = server.get(&format!("{V3}/sync"), guest.token()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&guest.user_id)),
            guest.token(),
            json!({ "displayname": "Visitor" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get(&format!("{V3}/devices"), guest.token()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, whoami) = server.get(&format!("{V3}/account/whoami"), guest.token()).await;
    assert_eq!((status, &whoami["is_guest"]), (StatusCode::OK, &json!(true)));
}

#[tokio::test]
async fn guests_join_only_rooms_that_let_guests_in_and_leave_when_that_ends() {
    let server = TestServer::start_with(|config| config.registration.allow_guests = true).await;
    let alice = server.register("alice").await;
    // A public room without m.room.guest_access: ordinary users join, guests do not.
    let public = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let guest = guest(&server).await;
    let refused = join(&server, &guest, &public).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    assert_eq!(membership(&server, &alice, &public, &guest.user_id).await, None);
    let bob = server.register("bob").await;
    assert_eq!(join(&server, &bob, &public).await.0, StatusCode::OK);

    // Once the room lets guests in, the guest joins and talks.
    let path = format!("{V3}/rooms/{}/state/m.room.guest_access/", enc(&public));
    let (status, _) = server
        .put(&path, alice.token(), json!({ "guest_access": "can_join" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(join(&server, &guest, &public).await.0, StatusCode::OK);
    assert_eq!(
        send_text(&server, &guest, &public, "g1", "hello").await.0,
        StatusCode::OK
    );

    // When it stops, the guest is made to leave (and bob, no guest, stays).
    let (status, _) = server
        .put(&path, alice.token(), json!({ "guest_access": "forbidden" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        membership(&server, &alice, &public, &guest.user_id).await.as_deref(),
        Some("leave")
    );
    assert_eq!(
        membership(&server, &alice, &public, &bob.user_id).await.as_deref(),
        Some("join")
    );
    let result = send_text(&server, &guest, &public, "g2", "still here?").await;
    assert_eq!(result.0, StatusCode::FORBIDDEN);
    let rejoin = join(&server, &guest, &public).await;
    assert_error(&rejoin, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
}
