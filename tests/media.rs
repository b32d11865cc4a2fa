//! The media repository through the public API: uploads (direct and async) and downloads
//! with Range requests, their headers, limits and errors, and a restart. Thumbnails and URL
//! previews are in `media_images.rs`. Runs on the media store `HEARTH_TEST_MEDIA` names (local
//! disk or S3) and the database `HEARTH_TEST_DATABASE` names.

use std::time::Duration;

use crate::common::{TestServer, assert_error, media::*};
use image::ImageFormat;
use reqwest::{StatusCode, header};

#[tokio::test]
async fn files_round_trip_byte_for_byte_with_safe_headers() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let empty = Vec::new();
    let kib = random_bytes(1024);
    let large = random_bytes(50 * 1024 * 1024);
    for (bytes, content_type) in [
        (&empty, "application/octet-stream"),
        (&kib, "text/plain"),
        (&large, "video/mp4"),
    ] {
        let mxc = upload_ok(&server, &alice.access_token, bytes.clone(), content_type).await;
        let response = get_media(
            &server,
            Some(&bob.access_token),
            &format!("/_matrix/client/v1/media/download/{}", mxc_path(&mxc)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], content_type);
        assert_eq!(headers[header::CONTENT_LENGTH], bytes.len().to_string().as_str());
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("sandbox")
        );
        assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
        assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
        let body = response.bytes().await.unwrap();
        assert!(body.as_ref() == bytes.as_slice(), "{content_type}: the bytes differ");
    }

    // The same content again: a new media ID, the same bytes.
    let first = upload_ok(&server, &alice.access_token, kib.clone(), "text/plain").await;
    let second = upload_ok(&server, &bob.access_token, kib.clone(), "text/plain").await;
    assert_ne!(first, second);
    for mxc in [first, second] {
        let response = get_media(
            &server,
            Some(&alice.access_token),
            &format!("/_matrix/client/v1/media/download/{}", mxc_path(&mxc)),
        )
        .await;
        assert_eq!(response.bytes().await.unwrap().as_ref(), kib.as_slice());
    }
}

#[tokio::test]
async fn file_names_and_dispositions() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = upload(
        &server,
        Some(&alice.access_token),
        b"<script>alert(1)</script>".to_vec(),
        Some("text/html"),
        Some("page \"one\".html"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = mxc_path(body["content_uri"].as_str().unwrap()).to_owned();
    let response = get_media(
        &server,
        Some(&alice.access_token),
        &format!("/_matrix/client/v1/media/download/{path}"),
    )
    .await;
    // HTML is never inline; the quote in the name is escaped.
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"page \\\"one\\\".html\""
    );
    // A name in the path wins; non-ASCII names are percent-encoded UTF-8.
    let response = get_media(
        &server,
        Some(&alice.access_token),
        &format!("/_matrix/client/v1/media/download/{path}/{}", urlencode("résumé.html")),
    )
    .await;
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html"
    );
    // Images are inline.
    let mxc = upload_ok(
        &server,
        &alice.access_token,
        encode(&photo(4, 4), ImageFormat::Png),
        "image/png",
    )
    .await;
    let response = get_media(
        &server,
        Some(&alice.access_token),
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&mxc)),
    )
    .await;
    assert_eq!(response.headers()[header::CONTENT_DISPOSITION], "inline");
}

#[tokio::test]
async fn range_requests_seek() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = random_bytes(100_000);
    let mxc = upload_ok(&server, &alice.access_token, bytes.clone(), "audio/ogg").await;
    let path = format!("/_matrix/client/v1/media/download/{}", mxc_path(&mxc));
    let token = Some(alice.access_token.as_str());
    for (range, expected, content_range) in [
        ("bytes=10-19", 10..20, "bytes 10-19/100000"),
        ("bytes=99990-", 99_990..100_000, "bytes 99990-99999/100000"),
        ("bytes=-5", 99_995..100_000, "bytes 99995-99999/100000"),
        ("bytes=50000-200000", 50_000..100_000, "bytes 50000-99999/100000"),
        // The largest end a u64 holds (found by fuzzing: it overflowed).
        ("bytes=0-18446744073709551615", 0..100_000, "bytes 0-99999/100000"),
    ] {
        let response = get_with(&server, token, &path, &[(header::RANGE, range)]).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(response.headers()[header::CONTENT_RANGE], content_range);
        assert_eq!(
            response.headers()[header::CONTENT_LENGTH],
            (expected.end - expected.start).to_string().as_str()
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[expected], "{range}");
    }
    let response = get_with(&server, token, &path, &[(header::RANGE, "bytes=100000-")]).await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */100000");
    // Several ranges, or a malformed one: the whole file.
    for range in ["bytes=0-1,5-6", "bytes=z-"] {
        let response = get_with(&server, token, &path, &[(header::RANGE, range)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{range}");
        assert_eq!(response.bytes().await.unwrap().len(), 100_000);
    }
}

#[tokio::test]
async fn uploads_need_a_token_and_respect_the_limits() {
    let server = TestServer::start_with(|config| {
        config.media.max_upload_bytes = 10_000;
        config.media.max_bytes_per_user = 15_000;
    })
    .await;
    let alice = server.register("alice").await;
    let (status, body) = upload(&server, None, b"hi".to_vec(), Some("text/plain"), None).await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let (status, body) = upload(&server, Some("nonsense"), b"hi".to_vec(), Some("text/plain"), None).await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

    let (status, body) = upload(&server, Some(&alice.access_token), random_bytes(10_001), None, None).await;
    assert_error(&(status, body.clone()), StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // Without a Content-Length (chunked), the limit still holds as the bytes arrive.
    let chunks =
        futures_util::stream::iter((0..11).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(random_bytes(1000)))));
    let response = server
        .http
        .post(format!("{}/_matrix/media/v3/upload", server.base))
        .bearer_auth(&alice.access_token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_error(&(status, body.clone()), StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    let (status, body) = upload(
        &server,
        Some(&alice.access_token),
        b"x".to_vec(),
        Some("nonsense"),
        None,
    )
    .await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (status, body) = upload(
        &server,
        Some(&alice.access_token),
        b"x".to_vec(),
        Some("text/plain"),
        Some("bad\nname"),
    )
    .await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // The quota: 10,000 bytes fit, 5,001 more do not.
    upload_ok(&server, &alice.access_token, random_bytes(10_000), "text/plain").await;
    let (status, body) = upload(&server, Some(&alice.access_token), random_bytes(5_001), None, None).await;
    assert_error(&(status, body.clone()), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    upload_ok(&server, &alice.access_token, random_bytes(5_000), "text/plain").await;

    let (status, body) = server
        .get("/_matrix/client/v1/media/config", Some(&alice.access_token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.upload.size"], 10_000);
    let (status, body) = server.get("/_matrix/client/v1/media/config", None).await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn downloads_need_a_token_and_a_valid_existing_id() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mxc = upload_ok(&server, &alice.access_token, b"hello".to_vec(), "text/plain").await;
    let path = format!("/_matrix/client/v1/media/download/{}", mxc_path(&mxc));
    let (status, body) = error_of(get_media(&server, None, &path).await).await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let token = Some(alice.access_token.as_str());
    let (status, body) = error_of(
        get_media(
            &server,
            token,
            "/_matrix/client/v1/media/download/localhost/NoSuchMedia",
        )
        .await,
    )
    .await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) =
        error_of(get_media(&server, token, "/_matrix/client/v1/media/download/other.example/abc").await).await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
    for bad in ["localhost/..%2F..%2Fetc", "localhost/a.b", "not a server/abc"] {
        let (status, body) =
            error_of(get_media(&server, token, &format!("/_matrix/client/v1/media/download/{bad}")).await).await;
        assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
    let (status, body) = error_of(get_media(&server, token, &format!("{path}?timeout_ms=soon")).await).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // The deprecated unauthenticated endpoints are off by default.
    let legacy = format!("/_matrix/media/v3/download/{}", mxc_path(&mxc));
    let (status, body) = error_of(get_media(&server, None, &legacy).await).await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) = error_of(
        get_media(
            &server,
            None,
            &format!("/_matrix/media/v3/thumbnail/{}?width=32&height=32", mxc_path(&mxc)),
        )
        .await,
    )
    .await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn unauthenticated_endpoints_can_be_switched_on() {
    let server = TestServer::start_with(|config| config.media.serve_unauthenticated = true).await;
    let alice = server.register("alice").await;
    let png = encode(&photo(200, 100), ImageFormat::Png);
    let mxc = upload_ok(&server, &alice.access_token, png.clone(), "image/png").await;
    let response = get_media(&server, None, &format!("/_matrix/media/v3/download/{}", mxc_path(&mxc))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), png.as_slice());
    let response = get_media(
        &server,
        None,
        &format!(
            "/_matrix/media/v3/thumbnail/{}?width=32&height=32&method=crop",
            mxc_path(&mxc)
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let thumbnail = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (32, 32));
}

#[tokio::test]
async fn async_uploads_reserve_an_id_for_one_upload() {
    let server = TestServer::start_with(|config| config.media.max_pending_uploads = 2).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, body) = server
        .post(
            "/_matrix/media/v1/create",
            Some(&alice.access_token),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mxc = body["content_uri"].as_str().unwrap().to_owned();
    assert!(body["unused_expires_at"].as_i64().unwrap() > 0);
    let path = mxc_path(&mxc).to_owned();
    let download = format!("/_matrix/client/v1/media/download/{path}");

    // Not uploaded yet: a short wait ends in 504 M_NOT_YET_UPLOADED.
    let (status, body) =
        error_of(get_media(&server, Some(&bob.access_token), &format!("{download}?timeout_ms=100")).await).await;
    assert_error(
        &(status, body.clone()),
        StatusCode::GATEWAY_TIMEOUT,
        "M_NOT_YET_UPLOADED",
    );

    // Bob may not fill alice's ID.
    let put = |token: String, bytes: Vec<u8>| {
        let server = &server;
        let path = path.clone();
        async move {
            let response = server
                .http
                .put(format!(
                    "{}/_matrix/media/v3/upload/{path}?filename=note.txt",
                    server.base
                ))
                .bearer_auth(token)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(bytes)
                .send()
                .await
                .unwrap();
            error_of(response).await
        }
    };
    let (status, body) = put(bob.access_token.clone(), b"bob's".to_vec()).await;
    assert_error(&(status, body.clone()), StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // A download waiting for the upload gets it when it lands.
    let waiting = {
        let http = server.http.clone();
        let url = format!("{}{download}?timeout_ms=10000", server.base);
        let token = bob.access_token.clone();
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = put(alice.access_token.clone(), b"hello later".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "inline; filename=\"note.txt\""
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello later");

    // One upload per ID.
    let (status, body) = put(alice.access_token.clone(), b"again".to_vec()).await;
    assert_error(
        &(status, body.clone()),
        StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
    );

    // At most two unused IDs at once.
    for _ in 0..2 {
        let (status, _) = server
            .post(
                "/_matrix/media/v1/create",
                Some(&alice.access_token),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = server
        .post(
            "/_matrix/media/v1/create",
            Some(&alice.access_token),
            serde_json::json!({}),
        )
        .await;
    assert_error(
        &(status, body.clone()),
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    let (status, body) = server
        .post("/_matrix/media/v1/create", None, serde_json::json!({}))
        .await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // Unknown IDs, and IDs of other servers.
    let response = server
        .http
        .put(format!("{}/_matrix/media/v3/upload/localhost/NoSuchId", server.base))
        .bearer_auth(&alice.access_token)
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn unused_upload_ids_expire() {
    let server = TestServer::start_with(|config| config.media.unused_upload_expiry_secs = 1).await;
    let alice = server.register("alice").await;
    let (_, body) = server
        .post(
            "/_matrix/media/v1/create",
            Some(&alice.access_token),
            serde_json::json!({}),
        )
        .await;
    let path = mxc_path(body["content_uri"].as_str().unwrap()).to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = server
        .http
        .put(format!("{}/_matrix/media/v3/upload/{path}", server.base))
        .bearer_auth(&alice.access_token)
        .body("late")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) = error_of(
        get_media(
            &server,
            Some(&alice.access_token),
            &format!("/_matrix/client/v1/media/download/{path}?timeout_ms=0"),
        )
        .await,
    )
    .await;
    assert_error(&(status, body.clone()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn media_survives_a_restart() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = random_bytes(300_000);
    let mxc = upload_ok(&server, &alice.access_token, bytes.clone(), "application/pdf").await;
    let server = server.restart().await;
    let response = get_media(
        &server,
        Some(&alice.access_token),
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&mxc)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_DISPOSITION], "attachment");
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
}
