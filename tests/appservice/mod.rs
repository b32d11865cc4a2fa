//! Application services: registrations, the appservice's identity (tokens, masquerading,
//! devices), what its namespaces reserve, and what it may do that users may not. The queue
//! of transactions is in `queue.rs`; queries, ping and third-party lookups in `queries.rs`.

mod queries;
mod queue;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{
    TestServer,
    appservice::{FakeAppservice, Options},
    assert_error,
    rooms::{create_room, enc, messages},
};

/// A server with `fake` registered (and told where the server is).
pub async fn start_with_appservice(fake: &FakeAppservice) -> TestServer {
    let path = fake.registration_path.clone();
    let server = TestServer::start_with(move |config| config.appservices.config_files = vec![path]).await;
    fake.attach(&server.base);
    server
}

/// `path` with the appservice acting as `user` (`?user_id=`).
pub fn as_user(path: &str, user: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}user_id={}", enc(user))
}

/// Registers `localpart` as the appservice (no password, no UIA, no device).
pub async fn register_ghost(server: &TestServer, fake: &FakeAppservice, localpart: &str) -> String {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            Some(&fake.as_token),
            json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("access_token").is_none(), "inhibit_login: {body}");
    body["user_id"].as_str().unwrap().to_owned()
}

/// The appservice's `user` joins `room`.
pub async fn join_as(server: &TestServer, fake: &FakeAppservice, room: &str, user: &str) {
    let join = as_user(&format!("/_matrix/client/v3/join/{}", enc(room)), user);
    let (status, body) = server.post(&join, Some(&fake.as_token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{user} joins {room}: {body}");
}

#[tokio::test]
async fn an_appservice_registers_its_users_and_acts_as_them_within_its_namespace() {
    let fake = FakeAppservice::start("irc", "irc", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let token = Some(fake.as_token.as_str());

    // Its own user exists without registering.
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", token).await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (StatusCode::OK, Some("@ircbot:localhost")),
        "{body}"
    );

    assert!(body.get("device_id").is_none(), "no device goes with the token: {body}");
    // Frameworks add `user_id` when registering a ghost, which does not exist yet.
    let (status, body) = server
        .post(
            &as_user("/_matrix/client/v3/register", "@irc_zoe:localhost"),
            token,
            json!({ "type": "m.login.application_service", "username": "irc_zoe", "inhibit_login": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let ghost = register_ghost(&server, &fake, "irc_alice").await;
    assert_eq!(ghost, "@irc_alice:localhost");
    let (status, body) = server
        .get(&as_user("/_matrix/client/v3/account/whoami", &ghost), token)
        .await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (StatusCode::OK, Some(ghost.as_str())),
        "{body}"
    );
    // The deprecated query parameter still carries the token.
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/account/whoami?access_token={}", fake.as_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Outside its namespace, or a user it never registered: nothing granted.
    let outsider = server.register("dave").await;
    let (status, body) = server
        .get(&as_user("/_matrix/client/v3/account/whoami", &outsider.user_id), token)
        .await;
    assert_error(&(status, body), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unregistered = server
        .get(
            &as_user("/_matrix/client/v3/account/whoami", "@irc_nobody:localhost"),
            token,
        )
        .await;
    assert_error(&unregistered, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let outside = server
        .post(
            "/_matrix/client/v3/register",
            token,
            json!({ "type": "m.login.application_service", "username": "mallory" }),
        )
        .await;
    assert_error(&outside, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    assert_eq!(
        server
            .get("/_matrix/client/v3/profile/@mallory:localhost", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Wrong tokens, and the appservice login type without one.
    let wrong = server
        .get("/_matrix/client/v3/account/whoami", Some("as-irc-wrong"))
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let hs_token = server
        .get("/_matrix/client/v3/account/whoami", Some(&fake.hs_token))
        .await;
    assert_error(&hs_token, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let no_token = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "type": "m.login.application_service", "username": "irc_bob" }),
        )
        .await;
    assert_error(&no_token, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let user_token = server
        .post(
            "/_matrix/client/v3/register",
            Some(&outsider.access_token),
            json!({ "type": "m.login.application_service", "username": "irc_bob" }),
        )
        .await;
    assert_error(&user_token, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let malformed = server
        .get("/_matrix/client/v3/account/whoami?user_id=not-a-user-id", token)
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Logging a ghost in: a device and a token of its own.
    let (status, login) = server
        .post(
            "/_matrix/client/v3/login",
            token,
            json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "irc_alice" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", login["access_token"].as_str())
        .await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (StatusCode::OK, Some(ghost.as_str()))
    );
    let stranger = server
        .post(
            "/_matrix/client/v3/login",
            token,
            json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "dave" } }),
        )
        .await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "M_EXCLUSIVE");
    let (_, types) = server.get("/_matrix/client/v3/login", None).await;
    assert!(
        types["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.application_service")
    );
}

#[tokio::test]
async fn exclusive_namespaces_keep_users_and_aliases_for_the_appservice() {
    let fake = FakeAppservice::start("slack", "slack", Options::default()).await;
    let server = start_with_appservice(&fake).await;
    let register = |username: &'static str| {
        let server = &server;
        async move {
            server
                .post(
                    "/_matrix/client/v3/register",
                    None,
                    json!({ "username": username, "password": "correct horse", "auth": { "type": "m.login.dummy" } }),
                )
                .await
        }
    };
    assert_error(&register("slack_eve").await, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    assert_error(&register("slackbot").await, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    let available = server
        .get("/_matrix/client/v3/register/available?username=slack_eve", None)
        .await;
    assert_error(&available, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    assert_eq!(register("slacker").await.0, StatusCode::OK, "outside the regex");

    let user = server.register("erin").await;
    let claimed = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&user.access_token),
            json!({ "room_alias_name": "slack_general" }),
        )
        .await;
    assert_error(&claimed, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    let room = create_room(&server, &user, json!({})).await;
    let put = server
        .put(
            &format!("/_matrix/client/v3/directory/room/{}", enc("#slack_general:localhost")),
            Some(&user.access_token),
            json!({ "room_id": room }),
        )
        .await;
    assert_error(&put, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    assert_eq!(
        server
            .get(
                &format!("/_matrix/client/v3/directory/room/{}", enc("#slack_general:localhost")),
                None
            )
            .await
            .0,
        StatusCode::NOT_FOUND,
        "nothing was created"
    );
    // The appservice itself may.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&fake.as_token),
            json!({ "room_alias_name": "slack_general" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_appservice_manages_its_users_devices_and_acts_on_them() {
    let fake = FakeAppservice::start(
        "wa",
        "wa",
        Options {
            msc4190: true,
            ..Options::default()
        },
    )
    .await;
    let server = start_with_appservice(&fake).await;
    let token = Some(fake.as_token.as_str());
    let ghost = register_ghost(&server, &fake, "wa_carl").await;

    // MSC4190: created without user-interactive auth (201), named again (200).
    let path = as_user("/_matrix/client/v3/devices/BRIDGEDEV", &ghost);
    let (status, body) = server.put(&path, token, json!({ "display_name": "bridge" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        server.put(&path, token, json!({ "display_name": "renamed" })).await.0,
        StatusCode::OK
    );
    let (status, device) = server.get(&path, token).await;
    assert_eq!(
        (status, device["display_name"].as_str()),
        (StatusCode::OK, Some("renamed"))
    );

    // MSC4326: acting on that device.
    let whoami = format!(
        "{}&device_id=BRIDGEDEV",
        as_user("/_matrix/client/v3/account/whoami", &ghost)
    );
    let (status, body) = server.get(&whoami, token).await;
    assert_eq!(
        (status, body["device_id"].as_str()),
        (StatusCode::OK, Some("BRIDGEDEV")),
        "{body}"
    );
    let missing = format!(
        "{}&device_id=NOSUCH",
        as_user("/_matrix/client/v3/account/whoami", &ghost)
    );
    assert_error(
        &server.get(&missing, token).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN_DEVICE",
    );
    let keys = json!({ "one_time_keys": { "curve25519:AAAA": "a2V5" } });
    let upload = format!(
        "{}&device_id=BRIDGEDEV",
        as_user("/_matrix/client/v3/keys/upload", &ghost)
    );
    let (status, counts) = server.post(&upload, token, keys).await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert_eq!(counts["one_time_key_counts"]["curve25519"], 1, "on the device named");

    // Deleted without user-interactive auth.
    let (status, body) = server
        .request(reqwest::Method::DELETE, &path, token, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.get(&path, token).await.0, StatusCode::NOT_FOUND);

    // Without MSC4190 in its registration, an appservice gets the usual rules.
    let plain = FakeAppservice::start("plain", "plain", Options::default()).await;
    let server = start_with_appservice(&plain).await;
    let ghost = register_ghost(&server, &plain, "plain_pat").await;
    let path = as_user("/_matrix/client/v3/devices/NEWDEV", &ghost);
    let (status, _) = server.put(&path, Some(&plain.as_token), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no device is created");
}

#[tokio::test]
async fn timestamps_are_massaged_for_appservices_only_and_rate_limits_spared_when_registered() {
    let fake = FakeAppservice::start(
        "hist",
        "hist",
        Options {
            unlimited: true,
            ..Options::default()
        },
    )
    .await;
    let path = fake.registration_path.clone();
    let server = TestServer::start_with(move |config| {
        config.appservices.config_files = vec![path];
        config.rate_limits.message = hearth::config::RateLimit {
            per_second: 0.1,
            burst_count: 3,
        };
    })
    .await;
    let user = server.register("fay").await;
    let room = create_room(&server, &user, json!({ "preset": "public_chat" })).await;
    let ghost = register_ghost(&server, &fake, "hist_gus").await;
    let token = Some(fake.as_token.as_str());
    let (status, body) = server
        .post(
            &as_user(&format!("/_matrix/client/v3/join/{}", enc(&room)), &ghost),
            token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let past = 1_600_000_000_000_i64;
    for n in 0..10 {
        let path = as_user(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t{n}?ts={}",
                enc(&room),
                past + n
            ),
            &ghost,
        );
        let (status, body) = server
            .put(&path, token, json!({ "msgtype": "m.text", "body": format!("old {n}") }))
            .await;
        assert_eq!(status, StatusCode::OK, "message {n} (rate_limited: false): {body}");
    }
    let state = as_user(
        &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/?ts={past}", enc(&room)),
        &ghost,
    );
    // The ghost lacks the power for a topic: refused like anyone's, whatever the ts.
    assert_eq!(
        server.put(&state, token, json!({ "topic": "t" })).await.0,
        StatusCode::FORBIDDEN
    );

    // An ordinary user's `ts` is ignored.
    let ignored = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/u1?ts={past}",
        enc(&room)
    );
    let (status, _) = server
        .put(
            &ignored,
            Some(&user.access_token),
            json!({ "msgtype": "m.text", "body": "now" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, history) = messages(&server, &user, &room, "dir=b&limit=20").await;
    let chunk = history["chunk"].as_array().unwrap();
    let ts_of = |body: &str| {
        chunk
            .iter()
            .find(|event| event["content"]["body"] == body)
            .and_then(|event| event["origin_server_ts"].as_i64())
            .unwrap()
    };
    assert_eq!(ts_of("old 0"), past);
    assert_eq!(ts_of("old 9"), past + 9);
    assert!(ts_of("now") > past + 1_000_000, "a user's ts is not honoured");

    // The user is limited (3 a burst, one every 10 s).
    let mut limited = false;
    for n in 0..6 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/v{n}", enc(&room));
        let (status, _) = server
            .put(
                &path,
                Some(&user.access_token),
                json!({ "msgtype": "m.text", "body": "x" }),
            )
            .await;
        limited |= status == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(limited, "the ordinary user meets the limit");
}

#[tokio::test]
async fn registration_files_are_checked_at_start_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = |id: &str, regex: &str| {
        format!(
            "id: {id}\nurl: null\nas_token: as-{id}\nhs_token: hs-{id}\nsender_localpart: {id}bot\n\
             namespaces:\n  users: [{{exclusive: true, regex: '{regex}'}}]\n"
        )
    };
    let bad_regex = write("bad.yaml", &good("bad", "@bad_(["));
    let dir_path = dir.path().to_owned();
    let start = |files: Vec<std::path::PathBuf>| {
        let dir_path = dir_path.clone();
        async move {
            let mut config = crate::common::test_config();
            config.data_dir = dir_path.clone();
            config.database.url = Some(crate::common::fresh_database_url(&dir_path).await);
            config.appservices.config_files = files;
            hearth::server::Server::bind(config)
                .await
                .err()
                .map(|error| format!("{error:#}"))
        }
    };
    let error = start(vec![bad_regex.clone()])
        .await
        .expect("a bad regex stops the start");
    assert!(error.contains("bad regex") && error.contains("bad"), "{error}");
    let one = write("one.yaml", &good("one", "@one_.*"));
    let twin = write("twin.yaml", &good("one", "@twin_.*"));
    let error = start(vec![one.clone(), twin])
        .await
        .expect("duplicate IDs stop the start");
    assert!(error.contains("the same id twice"), "{error}");
    let overlap = write("overlap.yaml", &good("two", "@one_.*"));
    let error = start(vec![one.clone(), overlap])
        .await
        .expect("overlapping namespaces stop the start");
    assert!(error.contains("exclusively"), "{error}");
    let unreadable = start(vec![dir.path().join("missing.yaml")])
        .await
        .expect("a missing file stops the start");
    assert!(unreadable.contains("missing.yaml"), "{unreadable}");

    // Reloading: a bad set is refused and the old one kept; a good one replaces it.
    let server = TestServer::start_with({
        let one = one.clone();
        move |config| config.appservices.config_files = vec![one]
    })
    .await;
    let whoami = |token: &'static str| server.get("/_matrix/client/v3/account/whoami", Some(token));
    assert_eq!(whoami("as-one").await.0, StatusCode::OK);
    std::fs::write(&one, good("one", "@one_([")).unwrap();
    assert!(server.services.appservices.reload().await.is_err());
    assert_eq!(whoami("as-one").await.0, StatusCode::OK, "the old registration stays");
    std::fs::write(&one, good("three", "@three_.*")).unwrap();
    server.services.appservices.reload().await.unwrap();
    assert_error(&whoami("as-one").await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let (status, body) = whoami("as-three").await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (StatusCode::OK, Some("@threebot:localhost")),
        "{body}"
    );
}
