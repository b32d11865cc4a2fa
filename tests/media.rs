//! The media repository through the public API: uploads (direct and async), downloads with
//! Range requests, thumbnails, bad images, URL previews and their SSRF refusals. Runs on the
//! media store `HEARTH_TEST_MEDIA` names (local disk or S3) and the database
//! `HEARTH_TEST_DATABASE` names.

mod common;

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, response::IntoResponse, routing::get};
use common::{TestServer, assert_error};
use image::{DynamicImage, ImageFormat, RgbImage, Rgba, RgbaImage};
use reqwest::{StatusCode, header};
use serde_json::Value;

/// Uploads `bytes`; returns the status and JSON body.
async fn upload(
    server: &TestServer,
    token: Option<&str>,
    bytes: Vec<u8>,
    content_type: Option<&str>,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let mut url = format!("{}/_matrix/media/v3/upload", server.base);
    if let Some(name) = filename {
        url.push_str(&format!("?filename={}", urlencode(name)));
    }
    let mut request = server.http.post(url).body(bytes);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload_ok(server: &TestServer, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let (status, body) = upload(server, Some(token), bytes, Some(content_type), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["content_uri"].as_str().unwrap().to_owned()
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `mxc://server/id` → `server/id`.
fn mxc_path(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").expect("an mxc URI")
}

async fn get_media(server: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    get_with(server, token, path, &[]).await
}

async fn get_with(
    server: &TestServer,
    token: Option<&str>,
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> reqwest::Response {
    let mut request = server.http.get(format!("{}{path}", server.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    request.send().await.unwrap()
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngExt;
    let mut bytes = vec![0u8; len];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn photo(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    }))
}

fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite).unwrap();
        for index in 0..frames {
            let frame = RgbaImage::from_pixel(width, height, Rgba([index * 80, 0, 255 - index * 80, 255]));
            encoder
                .encode_frame(image::Frame::from_parts(
                    frame,
                    0,
                    0,
                    image::Delay::from_numer_denom_ms(100, 1),
                ))
                .unwrap();
        }
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid PNG whose header claims `width`×`height` (a decompression bomb's calling card).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode(&photo(1, 1), ImageFormat::Png);
    // Signature (8), then IHDR: length (4), "IHDR" (4), width (4), height (4), 5 more, CRC (4).
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

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

async fn thumbnail(server: &TestServer, token: &str, mxc: &str, query: &str) -> reqwest::Response {
    get_media(
        server,
        Some(token),
        &format!("/_matrix/client/v1/media/thumbnail/{}?{query}", mxc_path(mxc)),
    )
    .await
}

#[tokio::test]
async fn thumbnails_come_in_the_usual_sizes_for_every_image_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let source = photo(1000, 800);
    for (format, content_type, thumbnail_type) in [
        (ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
        (ImageFormat::Png, "image/png", "image/png"),
        (ImageFormat::Gif, "image/gif", "image/png"),
        (ImageFormat::WebP, "image/webp", "image/png"),
    ] {
        let mxc = upload_ok(&server, token, encode(&source, format), content_type).await;
        for (query, expected) in [
            ("width=32&height=32&method=crop", (32, 32)),
            ("width=96&height=96&method=crop", (96, 96)),
            ("width=50&height=50&method=crop", (96, 96)),
            ("width=320&height=240&method=scale", (300, 240)),
            ("width=640&height=480", (600, 480)),
            ("width=800&height=600&method=scale", (750, 600)),
        ] {
            // Twice: made on the first request, served from the store on the second.
            for _ in 0..2 {
                let response = thumbnail(&server, token, &mxc, query).await;
                assert_eq!(response.status(), StatusCode::OK, "{content_type} {query}");
                assert_eq!(response.headers()[header::CONTENT_TYPE], thumbnail_type);
                assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
                let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
                assert_eq!((image.width(), image.height()), expected, "{content_type} {query}");
            }
        }
        // Larger than any thumbnail: the original itself, never upscaled.
        let response = thumbnail(&server, token, &mxc, "width=2000&height=2000&method=scale").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
    }
    // An image smaller than the thumbnail is its own thumbnail.
    let small = encode(&photo(20, 20), ImageFormat::Png);
    let mxc = upload_ok(&server, token, small.clone(), "image/png").await;
    let response = thumbnail(&server, token, &mxc, "width=96&height=96&method=crop").await;
    assert_eq!(response.bytes().await.unwrap().as_ref(), small.as_slice());
}

/// Inserts an EXIF APP1 segment with this orientation (6: rotate 90° clockwise) after a
/// JPEG's start-of-image marker, as phone cameras write it.
fn with_exif_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&[0x00, 0x01]); // one IFD entry
    tiff.extend_from_slice(&[
        0x01,
        0x12,
        0x00,
        0x03,
        0x00,
        0x00,
        0x00,
        0x01,
        0x00,
        orientation,
        0x00,
        0x00,
    ]);
    tiff.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let length = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[tokio::test]
async fn thumbnails_follow_the_exif_orientation() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    // Stored 400×200, to be shown turned a quarter: upright it is 200×400.
    let sideways = with_exif_orientation(&encode(&photo(400, 200), ImageFormat::Jpeg), 6);
    let mxc = upload_ok(&server, token, sideways, "image/jpeg").await;
    let response = thumbnail(&server, token, &mxc, "width=320&height=240&method=scale").await;
    assert_eq!(response.status(), StatusCode::OK);
    let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (120, 240));
    let response = thumbnail(&server, token, &mxc, "width=96&height=96&method=crop").await;
    let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (96, 96));
}

#[tokio::test]
async fn animated_thumbnails_when_asked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let mxc = upload_ok(&server, token, animated_gif(400, 300, 3), "image/gif").await;
    let response = thumbnail(&server, token, &mxc, "width=320&height=240&animated=true").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/gif");
    let bytes = response.bytes().await.unwrap();
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes.to_vec())).unwrap();
    let frames = image::AnimationDecoder::into_frames(decoder).collect_frames().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].buffer().dimensions(), (320, 240));
    // Not asked for: a still image.
    let response = thumbnail(&server, token, &mxc, "width=320&height=240").await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    // Even when the animation is smaller than the thumbnail: its first frame, at its size.
    let small = upload_ok(&server, token, animated_gif(40, 30, 3), "image/gif").await;
    let response = thumbnail(&server, token, &small, "width=96&height=96&method=crop").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (40, 30));
    let (status, body) = error_of(thumbnail(&server, token, &mxc, "width=32&height=32&animated=maybe").await).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

#[tokio::test]
async fn bad_images_get_an_error_and_the_server_carries_on() {
    let server = TestServer::start_with(|config| config.media.max_image_pixels = 4_000_000).await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let query = "width=96&height=96&method=crop";

    let jpeg = encode(&photo(600, 400), ImageFormat::Jpeg);
    let truncated = upload_ok(&server, token, jpeg[..jpeg.len() / 3].to_vec(), "image/jpeg").await;
    let png = encode(&photo(600, 400), ImageFormat::Png);
    let truncated_png = upload_ok(&server, token, png[..png.len() / 2].to_vec(), "image/png").await;
    let not_an_image = upload_ok(&server, token, b"this is not a PNG".to_vec(), "image/png").await;
    let wrong_type = upload_ok(&server, token, b"plain words".to_vec(), "text/plain").await;
    for mxc in [&truncated, &truncated_png, &not_an_image, &wrong_type] {
        let (status, body) = error_of(thumbnail(&server, token, mxc, query).await).await;
        assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_UNKNOWN");
    }
    // A header claiming 100,000 × 100,000 pixels is never decoded.
    let bomb = upload_ok(&server, token, png_claiming(100_000, 100_000), "image/png").await;
    let (status, body) = error_of(thumbnail(&server, token, &bomb, query).await).await;
    assert_error(&(status, body.clone()), StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // Just past the configured limit is refused too, before decoding.
    let big = upload_ok(
        &server,
        token,
        encode(&photo(2001, 2000), ImageFormat::Png),
        "image/png",
    )
    .await;
    let (status, body) = error_of(thumbnail(&server, token, &big, query).await).await;
    assert_error(&(status, body.clone()), StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");

    // Malformed requests.
    let good = upload_ok(&server, token, jpeg.clone(), "image/jpeg").await;
    for (query, errcode) in [
        ("height=32", "M_MISSING_PARAM"),
        ("width=32", "M_MISSING_PARAM"),
        ("width=0&height=32", "M_INVALID_PARAM"),
        ("width=-5&height=32", "M_INVALID_PARAM"),
        ("width=32&height=32&method=stretch", "M_INVALID_PARAM"),
    ] {
        let (status, body) = error_of(thumbnail(&server, token, &good, query).await).await;
        assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, errcode);
    }
    let response = get_media(
        &server,
        None,
        &format!("/_matrix/client/v1/media/thumbnail/{}?{query}", mxc_path(&good)),
    )
    .await;
    let (status, body) = error_of(response).await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // And the server still serves good images.
    let response = thumbnail(&server, token, &good, query).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A web server inside the test, on every local address: `/page` (Open Graph tags and an
/// image), `/cat.png`, `/redirect` (to an address the default policy denies), `/sneaky` (whose
/// `og:image` is at such an address: `/inner.png` on 127.0.0.2), `/big` and `/slow`.
struct Site {
    base: String,
    page_hits: Arc<AtomicUsize>,
    inner_hits: Arc<AtomicUsize>,
}

async fn start_site() -> Site {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let hits = Arc::new(AtomicUsize::new(0));
    let page_hits = hits.clone();
    let inner = Arc::new(AtomicUsize::new(0));
    let inner_hits = inner.clone();
    let cat = encode(&photo(640, 480), ImageFormat::Png);
    let inner_cat = cat.clone();
    let app = Router::new()
        .route(
            "/sneaky",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    format!(r#"<meta property="og:title" content="Sneaky"><meta property="og:image" content="http://127.0.0.2:{port}/inner.png">"#),
                )
            }),
        )
        .route(
            "/inner.png",
            get(move || {
                inner.fetch_add(1, Ordering::SeqCst);
                let cat = inner_cat.clone();
                async move { ([(header::CONTENT_TYPE, "image/png")], cat) }
            }),
        )
        .route(
            "/page",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        r#"<html><head><title>Fallback</title>
                        <meta property="og:title" content="Cats &amp; dogs">
                        <meta property="og:description" content="All about pets">
                        <meta property="og:image" content="/cat.png">
                        </head><body>hi</body></html>"#,
                    )
                }
            }),
        )
        .route(
            "/cat.png",
            get(move || {
                let cat = cat.clone();
                async move { ([(header::CONTENT_TYPE, "image/png")], cat) }
            }),
        )
        .route(
            "/redirect",
            get(move || async move {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("http://127.0.0.2:{}/page", addr.port()))],
                )
                    .into_response()
            }),
        )
        .route(
            "/big",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "x".repeat(2_000_000)) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site {
        base: format!("http://{addr}"),
        page_hits,
        inner_hits,
    }
}

async fn preview(server: &TestServer, token: &str, url: &str) -> (StatusCode, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/media/preview_url?url={}", urlencode(url)),
            Some(token),
        )
        .await
}

#[tokio::test]
async fn url_previews_read_open_graph_and_keep_the_image() {
    let site = start_site().await;
    let server = TestServer::start_with(|config| {
        config.media.url_preview.ip_range_allowlist = vec!["127.0.0.1/32".parse().unwrap()];
        config.media.url_preview.max_bytes = 1_000_000;
        config.media.url_preview.timeout_secs = 1;
    })
    .await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let (status, body) = preview(&server, token, &format!("{}/page#section", site.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["og:title"], "Cats & dogs");
    assert_eq!(body["og:description"], "All about pets");
    assert_eq!(body["og:image:width"], 640);
    assert_eq!(body["og:image:height"], 480);
    assert_eq!(body["og:image:type"], "image/png");
    let image = body["og:image"].as_str().unwrap();
    let response = thumbnail(&server, token, image, "width=320&height=240").await;
    assert_eq!(response.status(), StatusCode::OK);

    // Cached: the page is not fetched again.
    let (status, again) = preview(&server, token, &format!("{}/page", site.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, body);
    assert_eq!(site.page_hits.load(Ordering::SeqCst), 1);

    // An image URL previews as the image.
    let (status, body) = preview(&server, token, &format!("{}/cat.png", site.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["og:image:width"], 640);

    // A redirect to a denied address is refused.
    let (status, body) = preview(&server, token, &format!("{}/redirect", site.base)).await;
    assert_error(&(status, body.clone()), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // So is an og:image at one: the page previews without it, and it is never fetched.
    let (status, body) = preview(&server, token, &format!("{}/sneaky", site.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["og:title"], "Sneaky");
    assert!(body.get("og:image").is_none(), "{body}");
    assert_eq!(site.inner_hits.load(Ordering::SeqCst), 0);
    // Over-long URLs are refused before anything is fetched.
    let long = format!("{}/page?{}", site.base, "a".repeat(3000));
    let (status, body) = preview(&server, token, &long).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Too large, too slow, unreachable: 502.
    let (status, body) = preview(&server, token, &format!("{}/big", site.base)).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_GATEWAY, "M_TOO_LARGE");
    let (status, body) = preview(&server, token, &format!("{}/slow", site.base)).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    let (status, body) = preview(&server, token, &format!("{}/missing", site.base)).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_GATEWAY, "M_UNKNOWN");
}

#[tokio::test]
async fn url_previews_refuse_the_servers_own_network() {
    let site = start_site().await;
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.as_str();
    let port = site.base.rsplit(':').next().unwrap();
    for url in [
        format!("{}/page", site.base),
        format!("http://localhost:{port}/page"),
        format!("http://[::1]:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, body) = preview(&server, token, &url).await;
        assert_error(&(status, body.clone()), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    assert_eq!(site.page_hits.load(Ordering::SeqCst), 0);
    let (status, body) = preview(&server, token, "not a url").await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let (status, body) = server.get("/_matrix/client/v1/media/preview_url", Some(token)).await;
    assert_error(&(status, body.clone()), StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v1/media/preview_url?url={}", urlencode(&site.base)),
            None,
        )
        .await;
    assert_error(&(status, body.clone()), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
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
