//! Media across servers: a client downloads and thumbnails another server's media through
//! its own server, which fetches it once (authenticated federation media, or the old
//! unauthenticated download for servers without it) and keeps it within a size cap.

use image::ImageFormat;
use reqwest::StatusCode;

use crate::common::{
    TestServer,
    federation::{FakeServer, NAMES, TestCa, start_federated},
    media::{encode, error_of, get_media, mxc_path, photo, random_bytes, upload_ok},
};

async fn download(server: &TestServer, token: &str, path: &str) -> (StatusCode, Vec<u8>, String) {
    let response = get_media(
        server,
        Some(token),
        &format!("/_matrix/client/v1/media/download/{path}"),
    )
    .await;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, response.bytes().await.unwrap().to_vec(), content_type)
}

#[tokio::test]
async fn another_servers_media_is_fetched_thumbnailed_and_kept() {
    let ca = TestCa::new();
    let servers = start_federated(2, &ca, &[], |_, _| {}).await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let picture = encode(&photo(640, 480), ImageFormat::Png);
    let mxc = upload_ok(a, &alice.access_token, picture.clone(), "image/png").await;
    let path = mxc_path(&mxc).to_owned();
    assert!(path.starts_with(NAMES[0]), "{path}");

    // Bob's server fetches it from A (multipart, authenticated) and serves it as it was.
    let (status, bytes, content_type) = download(b, &bob.access_token, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "image/png");
    assert_eq!(bytes, picture);
    // A thumbnail, made on B from the copy it keeps.
    let response = get_media(
        b,
        Some(&bob.access_token),
        &format!("/_matrix/client/v1/media/thumbnail/{path}?width=96&height=96&method=crop"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let thumbnail = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert!(
        thumbnail.width() <= 96 && thumbnail.height() <= 96,
        "{}x{}",
        thumbnail.width(),
        thumbnail.height()
    );

    // Media A does not have is 404 on B too; media of a server nobody can reach is 502.
    let (status, body) = error_of(
        get_media(
            b,
            Some(&bob.access_token),
            &format!("/_matrix/client/v1/media/download/{}/NoSuchMedia", NAMES[0]),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let (status, body) = error_of(
        get_media(
            b,
            Some(&bob.access_token),
            "/_matrix/client/v1/media/download/nowhere.invalid/SomeMedia",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    // No token, no media (as for local media).
    let response = get_media(b, None, &format!("/_matrix/client/v1/media/download/{path}")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // With A down, B still serves what it keeps.
    let mut servers = servers;
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let stopped = a.stop_for_now().await;
    let (status, bytes, _) = download(&b, &bob.access_token, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, picture);
    drop(stopped);
}

#[tokio::test]
async fn the_remote_media_cache_keeps_to_its_cap_and_old_servers_are_read_the_old_way() {
    let ca = TestCa::new();
    let old = FakeServer::start(&ca, "old.test", "127.0.0.9".parse().unwrap()).await;
    let servers = start_federated(2, &ca, &[old.peer()], |index, config| {
        if index == 1 {
            config.media.remote_cache_max_bytes = 150_000;
        }
    })
    .await;
    let (a, b) = (&servers[0], &servers[1]);
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    // A server without authenticated media: B falls back to the old download.
    let old_file = random_bytes(5_000);
    old.legacy_media
        .lock()
        .unwrap()
        .insert("OldMedia".to_owned(), ("application/pdf".to_owned(), old_file.clone()));
    let (status, bytes, content_type) = download(b, &bob.access_token, "old.test/OldMedia").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/pdf");
    assert_eq!(bytes, old_file);
    let (status, _, _) = download(b, &bob.access_token, "old.test/Missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Three files of 60 kB from A through a cache of 150 kB: the first read goes.
    let mut paths = Vec::new();
    for _ in 0..3 {
        let mxc = upload_ok(a, &alice.access_token, random_bytes(60_000), "application/octet-stream").await;
        let path = mxc_path(&mxc).to_owned();
        let (status, _, _) = download(b, &bob.access_token, &path).await;
        assert_eq!(status, StatusCode::OK);
        paths.push(path);
        // Reads apart in time, so the order of last use is clear.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut servers = servers;
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let stopped = a.stop_for_now().await;
    let (status, _, _) = download(&b, &bob.access_token, &paths[2]).await;
    assert_eq!(status, StatusCode::OK, "the newest is kept");
    let (status, _, _) = download(&b, &bob.access_token, &paths[0]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "the oldest was evicted, and A is down");
    drop(stopped);
}
