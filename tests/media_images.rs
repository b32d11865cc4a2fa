//! Images in the media repository through the public API: thumbnails of every type and size,
//! EXIF orientation, animation, bad images, and URL previews with their SSRF refusals. Runs on
//! the media store `HEARTH_TEST_MEDIA` names (local disk or S3) and the database
//! `HEARTH_TEST_DATABASE` names.

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::{TestServer, assert_error, media::*};
use axum::{Router, response::IntoResponse, routing::get};
use image::ImageFormat;
use reqwest::{StatusCode, header};
use serde_json::Value;

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
