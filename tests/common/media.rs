//! Media helpers shared by the media test files: uploads, downloads, thumbnails, and images
//! made in memory (photos, animated GIFs, decompression bombs, EXIF orientation).

#![allow(dead_code)]

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage, Rgba, RgbaImage};
use reqwest::{StatusCode, header};
use serde_json::Value;

use super::TestServer;

/// Uploads `bytes`; returns the status and JSON body.
pub async fn upload(
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

pub async fn upload_ok(server: &TestServer, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let (status, body) = upload(server, Some(token), bytes, Some(content_type), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["content_uri"].as_str().unwrap().to_owned()
}

pub fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `mxc://server/id` → `server/id`.
pub fn mxc_path(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").expect("an mxc URI")
}

pub async fn get_media(server: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    get_with(server, token, path, &[]).await
}

pub async fn get_with(
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

pub async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngExt;
    let mut bytes = vec![0u8; len];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

pub fn photo(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    }))
}

pub fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
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

pub fn crc32(bytes: &[u8]) -> u32 {
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
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode(&photo(1, 1), ImageFormat::Png);
    // Signature (8), then IHDR: length (4), "IHDR" (4), width (4), height (4), 5 more, CRC (4).
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

pub async fn thumbnail(server: &TestServer, token: &str, mxc: &str, query: &str) -> reqwest::Response {
    get_media(
        server,
        Some(token),
        &format!("/_matrix/client/v1/media/thumbnail/{}?{query}", mxc_path(mxc)),
    )
    .await
}

/// Inserts an EXIF APP1 segment with this orientation (6: rotate 90° clockwise) after a
/// JPEG's start-of-image marker, as phone cameras write it.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
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
