//! The media endpoints: upload (`/_matrix/media/v3/upload`, async `/_matrix/media/v1/create`
//! then `PUT`), authenticated download and thumbnails (`/_matrix/client/v1/media/*`), the
//! deprecated unauthenticated ones (off unless `media.serve_unauthenticated`), config and URL
//! previews. Uploads and downloads stream: these handlers are hand-written rather than ruma's
//! typed ones, which would hold whole files in memory.

use std::time::Duration;

use axum::{
    Json,
    body::Body,
    extract::{FromRequestParts, RawPathParams, RawQuery, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedMxcUri, UInt,
    api::{
        client::{
            authenticated_media::get_media_config,
            media::{create_content, create_mxc_uri},
        },
        error::ErrorKind,
    },
};
use serde_json::Value;

use crate::api::state::AppState;
use crate::api::{
    extract::{Authed, query_param},
    ruma::RumaResponse,
};
use crate::{
    config::ThumbnailMethod,
    error::{ApiError, ApiResult},
    media::check_media_id,
    media::range::{RangeRequest, parse_range},
    storage::{NewMedia, Reservation, now_ms},
};

/// `Content-Security-Policy` on every media response (the spec's recommendation).
const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// Types served `inline`; everything else is an `attachment` (the spec's list).
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// How long a download waits for an async upload by default, and at most.
const DEFAULT_WAIT_MS: u64 = 20_000;
const MAX_WAIT_MS: u64 = 120_000;

/// `{serverName}/{mediaId}[/{fileName}]` from the path, validated.
pub struct MediaPath {
    server_name: String,
    media_id: String,
    file_name: Option<String>,
}

impl FromRequestParts<AppState> for MediaPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid_param("Path parameters must be valid UTF-8"))?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_owned())
        };
        let server_name = get("server_name").unwrap_or_default();
        if <&ruma::ServerName>::try_from(server_name.as_str()).is_err() {
            return Err(ApiError::invalid_param(format!("`{server_name}` is not a server name")));
        }
        let media_id = get("media_id").unwrap_or_default();
        check_media_id(&media_id)?;
        Ok(Self {
            server_name,
            media_id,
            file_name: get("file_name"),
        })
    }
}

/// `POST /_matrix/media/v3/upload?filename=…`: the body is the file.
pub async fn upload(
    State(state): State<AppState>,
    Authed(sender): Authed,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<RumaResponse<create_content::v3::Response>> {
    state.rate_limits.check_user(&state.rate_limits.media_upload, &sender)?;
    let (content_type, filename) = upload_metadata(&state, &headers, query.as_deref()).await?;
    let user = sender.user_id.as_str();
    state
        .media
        .check_quota(&state.storage, user, declared_length(&headers))
        .await?;
    let spooled = state.media.spool(body).await?;
    let origin = state.config.server_name.as_str();
    let media_id = state
        .media
        .store_new(
            &state.storage,
            origin,
            user,
            content_type.as_deref(),
            filename.as_deref(),
            spooled,
        )
        .await?;
    Ok(RumaResponse(create_content::v3::Response::new(mxc_uri(
        origin, &media_id,
    ))))
}

/// `POST /_matrix/media/v1/create`: reserves a media ID to upload to later.
pub async fn create(
    State(state): State<AppState>,
    Authed(sender): Authed,
) -> ApiResult<RumaResponse<create_mxc_uri::v1::Response>> {
    state.rate_limits.check_user(&state.rate_limits.media_upload, &sender)?;
    let origin = state.config.server_name.as_str();
    let media_id = crate::media::Media::new_media_id();
    let expires = now_ms() + (state.media.config.unused_upload_expiry_secs * 1000) as i64;
    let reserved = state
        .storage
        .reserve_media(
            origin,
            &media_id,
            sender.user_id.as_str(),
            expires,
            state.media.config.max_pending_uploads,
        )
        .await?;
    if let Reservation::TooManyPending(pending) = reserved {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(Default::default()),
            format!("You have {pending} media IDs waiting for uploads already; upload to those first"),
        ));
    }
    let mut response = create_mxc_uri::v1::Response::new(mxc_uri(origin, &media_id));
    response.unused_expires_at = UInt::new(expires as u64).map(MilliSecondsSinceUnixEpoch);
    Ok(RumaResponse(response))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the bytes of a reserved ID.
pub async fn upload_to(
    State(state): State<AppState>,
    Authed(sender): Authed,
    path: MediaPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    if path.server_name != state.config.server_name.as_str() {
        return Err(ApiError::not_found(
            "Media IDs of other servers cannot be uploaded to here",
        ));
    }
    let user = sender.user_id.as_str();
    // Refused before the body is read: wrong user, unknown, expired or already used IDs.
    let outcome = state
        .storage
        .check_reservation(&path.server_name, &path.media_id, user)
        .await?;
    crate::media::reservation_error(outcome)?;
    let (content_type, filename) = upload_metadata(&state, &headers, query.as_deref()).await?;
    state
        .media
        .check_quota(&state.storage, user, declared_length(&headers))
        .await?;
    let spooled = state.media.spool(body).await?;
    state
        .media
        .store_reserved(
            &state.storage,
            NewMedia {
                origin: &path.server_name,
                media_id: &path.media_id,
                uploader: Some(user),
                content_type: content_type.as_deref(),
                filename: filename.as_deref(),
                size: 0,
                sha256: "",
            },
            spooled,
        )
        .await?;
    // ruma's `create_content_async::v3::Response` cannot be built outside ruma (no
    // constructor, non-exhaustive): its body is the empty object.
    Ok(Json(Value::Object(serde_json::Map::new())))
}

/// `mxc://{origin}/{media_id}`.
fn mxc_uri(origin: &str, media_id: &str) -> OwnedMxcUri {
    OwnedMxcUri::from(format!("mxc://{origin}/{media_id}"))
}

/// The declared type and file name of an upload; `413` at once when `Content-Length` is
/// already past the limit.
async fn upload_metadata(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> ApiResult<(Option<String>, Option<String>)> {
    let limit = state.media.config.max_upload_bytes;
    if declared_length(headers) > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("The upload is larger than this server's limit of {limit} bytes"),
        ));
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|value| !value.is_empty() && value.len() <= 255 && value.contains('/'))
                .ok_or_else(|| ApiError::invalid_param("The Content-Type header is not a media type"))?;
            Some(value.to_owned())
        }
    };
    let filename = query_param(query, "filename").filter(|name| !name.is_empty());
    if let Some(name) = &filename
        && (name.len() > 1024 || name.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_param(
            "The file name must be at most 1024 bytes, without control characters",
        ));
    }
    Ok((content_type, filename))
}

fn declared_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`.
pub async fn download(
    State(state): State<AppState>,
    _: Authed,
    path: MediaPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_download(&state, path, query.as_deref(), &headers).await
}

/// `GET /_matrix/media/v3/download/...`: deprecated and unauthenticated; off by default.
pub async fn legacy_download(
    State(state): State<AppState>,
    path: MediaPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    legacy_allowed(&state)?;
    serve_download(&state, path, query.as_deref(), &headers).await
}

async fn serve_download(
    state: &AppState,
    path: MediaPath,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let wait = wait_param(query)?;
    let media = find_media(state, &path, wait).await?;
    let filename = path.file_name.or(media.filename.clone());
    serve_blob(
        state,
        Blob {
            sha256: media.sha256.as_deref().unwrap_or_default(),
            content_type: media.content_type.as_deref(),
            size: media.size.unwrap_or_default() as u64,
            filename: filename.as_deref(),
        },
        headers,
    )
    .await
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`.
pub async fn thumbnail(
    State(state): State<AppState>,
    _: Authed,
    path: MediaPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_thumbnail(&state, path, query.as_deref(), &headers).await
}

/// `GET /_matrix/media/v3/thumbnail/...`: deprecated and unauthenticated; off by default.
pub async fn legacy_thumbnail(
    State(state): State<AppState>,
    path: MediaPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    legacy_allowed(&state)?;
    serve_thumbnail(&state, path, query.as_deref(), &headers).await
}

async fn serve_thumbnail(
    state: &AppState,
    path: MediaPath,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let dimension = |name: &str| -> ApiResult<u32> {
        let value = query_param(query, name).ok_or_else(|| ApiError::missing_param(format!("`{name}` is required")))?;
        value
            .parse::<u32>()
            .ok()
            .filter(|value| *value > 0)
            .ok_or_else(|| ApiError::invalid_param(format!("`{name}` must be a positive whole number")))
    };
    let (width, height) = (dimension("width")?, dimension("height")?);
    let method = match query_param(query, "method").as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(other) => {
            return Err(ApiError::invalid_param(format!(
                "`method` is `crop` or `scale`, not `{other}`"
            )));
        }
    };
    let animated = match query_param(query, "animated").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_param("`animated` is `true` or `false`")),
    };
    let wait = wait_param(query)?;
    let media = find_media(state, &path, wait).await?;
    let served = state
        .media
        .thumbnail(&state.storage, &media, width, height, method, animated)
        .await?;
    serve_blob(
        state,
        Blob {
            sha256: &served.sha256,
            content_type: Some(&served.content_type),
            size: served.size as u64,
            filename: None,
        },
        headers,
    )
    .await
}

/// The media item to serve: one of ours (waiting up to `wait` for an async upload), or another
/// server's, fetched from it on the first request and kept.
async fn find_media(state: &AppState, path: &MediaPath, wait: Duration) -> ApiResult<crate::storage::MediaRow> {
    let ours = state.config.server_name.as_str();
    if path.server_name == ours {
        return state
            .media
            .find(&state.storage, ours, &path.server_name, &path.media_id, wait)
            .await;
    }
    let kept = || async {
        let row = state.storage.media(&path.server_name, &path.media_id).await?;
        ApiResult::Ok(row.filter(|row| row.sha256.is_some()))
    };
    if let Some(row) = kept().await? {
        state.storage.touch_remote_media(&row.origin, &row.media_id).await?;
        return Ok(row);
    }
    let Some(federation) = &state.federation else {
        return Err(ApiError::not_found("Federation is off: no media from other servers"));
    };
    let origin =
        ruma::ServerName::parse(&path.server_name).map_err(|_| ApiError::invalid_param("Not a server name"))?;
    // One fetch per item at a time: the others wait for it, then find it kept.
    let _fetching = fetch_lock(&format!("{}/{}", path.server_name, path.media_id)).await;
    if let Some(row) = kept().await? {
        return Ok(row);
    }
    let file = federation
        .fetch_media(&origin, &path.media_id, state.media.config.max_upload_bytes)
        .await?;
    state
        .media
        .store_remote(
            &state.storage,
            &path.server_name,
            &path.media_id,
            file.content_type.as_deref(),
            file.filename.as_deref(),
            file.bytes,
        )
        .await?;
    kept().await?.ok_or_else(ApiError::internal)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: one of our media items for another
/// server, as `multipart/mixed` (metadata, then the file).
pub async fn federation_download(
    state: AppState,
    request: crate::api::ruma::Ruma<ruma::api::federation::authenticated_media::get_content::v1::Request>,
) -> ApiResult<Response> {
    request.origin()?;
    let ours = state.config.server_name.as_str();
    let wait = request.body.timeout_ms.min(Duration::from_millis(MAX_WAIT_MS));
    let media = state
        .media
        .find(&state.storage, ours, ours, &request.body.media_id, wait)
        .await?;
    let sha256 = media.sha256.clone().unwrap_or_default();
    multipart(
        &state,
        &sha256,
        media.content_type.as_deref(),
        media.filename.as_deref(),
    )
    .await
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: a thumbnail of one of our media
/// items for another server, as `multipart/mixed`.
pub async fn federation_thumbnail(
    state: AppState,
    request: crate::api::ruma::Ruma<ruma::api::federation::authenticated_media::get_content_thumbnail::v1::Request>,
) -> ApiResult<Response> {
    request.origin()?;
    let body = &request.body;
    let ours = state.config.server_name.as_str();
    let dimension = |value: UInt| {
        u32::try_from(u64::from(value))
            .ok()
            .filter(|value| *value > 0)
            .ok_or_else(|| ApiError::invalid_param("`width` and `height` must be positive whole numbers"))
    };
    let (width, height) = (dimension(body.width)?, dimension(body.height)?);
    let method = match body.method.as_ref().map(|m| m.as_str()) {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(other) => {
            return Err(ApiError::invalid_param(format!(
                "`method` is `crop` or `scale`, not `{other}`"
            )));
        }
    };
    let wait = body.timeout_ms.min(Duration::from_millis(MAX_WAIT_MS));
    let media = state
        .media
        .find(&state.storage, ours, ours, &body.media_id, wait)
        .await?;
    let served = state
        .media
        .thumbnail(
            &state.storage,
            &media,
            width,
            height,
            method,
            body.animated.unwrap_or(false),
        )
        .await?;
    multipart(&state, &served.sha256, Some(&served.content_type), None).await
}

/// A federation media answer: a `multipart/mixed` body of the (empty) metadata and the blob,
/// streamed from the store.
async fn multipart(
    state: &AppState,
    sha256: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
) -> ApiResult<Response> {
    use futures_util::StreamExt;
    let content_type = content_type.unwrap_or("application/octet-stream");
    let boundary = crate::accounts::tokens::random_string(32);
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\nContent-Disposition: {}\r\n\r\n",
        content_disposition(content_type, filename)
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let blob = state.media.store.stream(sha256, None).await.map_err(|error| {
        tracing::error!(%error, sha256, "a stored media file cannot be read");
        ApiError::internal()
    })?;
    let stream = futures_util::stream::once(async move { Ok::<_, axum::Error>(bytes::Bytes::from(head)) })
        .chain(blob.into_data_stream())
        .chain(futures_util::stream::once(async move { Ok(bytes::Bytes::from(tail)) }));
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header_value(&format!("multipart/mixed; boundary={boundary}")),
    );
    Ok(response)
}

/// A lock per remote media item being fetched.
async fn fetch_lock(key: &str) -> tokio::sync::OwnedMutexGuard<()> {
    type Locks = std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: std::sync::LazyLock<Locks> = std::sync::LazyLock::new(Default::default);
    let lock = {
        let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
        locks.entry(key.to_owned()).or_default().clone()
    };
    lock.lock_owned().await
}

fn legacy_allowed(state: &AppState) -> ApiResult<()> {
    if state.media.config.serve_unauthenticated {
        Ok(())
    } else {
        // The spec lets servers answer as if the media did not exist.
        Err(ApiError::not_found(
            "Unauthenticated media is off on this server; use /_matrix/client/v1/media",
        ))
    }
}

fn wait_param(query: Option<&str>) -> ApiResult<Duration> {
    let millis = match query_param(query, "timeout_ms") {
        None => DEFAULT_WAIT_MS,
        Some(value) => value
            .parse::<u64>()
            .map_err(|_| ApiError::invalid_param("`timeout_ms` must be a whole number of milliseconds"))?,
    };
    Ok(Duration::from_millis(millis.min(MAX_WAIT_MS)))
}

struct Blob<'a> {
    sha256: &'a str,
    content_type: Option<&'a str>,
    size: u64,
    filename: Option<&'a str>,
}

/// Streams a blob with the media security headers, honouring a single-range `Range` header
/// (`206`), or `416` for a range outside the file.
async fn serve_blob(state: &AppState, blob: Blob<'_>, headers: &HeaderMap) -> ApiResult<Response> {
    let content_type = blob.content_type.unwrap_or("application/octet-stream");
    let range = match headers.get(header::RANGE).and_then(|value| value.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, blob.size) {
            RangeRequest::Whole => None,
            RangeRequest::Part(range) => Some(range),
            RangeRequest::Unsatisfiable => {
                let mut response = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    ErrorKind::Unknown,
                    format!("The range is outside the content ({} bytes)", blob.size),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_RANGE, header_value(&format!("bytes */{}", blob.size)));
                return Ok(response);
            }
        },
    };
    let body = state
        .media
        .store
        .stream(blob.sha256, range.clone())
        .await
        .map_err(|error| {
            tracing::error!(%error, sha256 = blob.sha256, "a stored media file cannot be read");
            ApiError::internal()
        })?;
    let mut response = Response::new(body);
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, header_value(content_type));
    response_headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(content_type, blob.filename)),
    );
    response_headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response_headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response_headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Content never changes under a media ID; only the client that asked may cache it.
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    response_headers.insert(header::ETAG, header_value(&format!("\"{}\"", blob.sha256)));
    match range {
        Some(range) => {
            response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
            response_headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{}", range.start, range.end - 1, blob.size)),
            );
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        None => {
            response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
        }
    }
    Ok(response)
}

use http::HeaderName;

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// `inline` for the spec's inline-safe types, `attachment` for the rest, with the file name
/// escaped per RFC 6266: a quoted ASCII `filename`, and `filename*` (UTF-8, percent-encoded)
/// whenever the name is not plain ASCII.
fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let base_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let disposition = if INLINE_TYPES.contains(&base_type.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename else {
        return disposition.to_owned();
    };
    let plain = name.bytes().all(|byte| (0x20..0x7f).contains(&byte));
    if plain {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{disposition}; filename=\"{quoted}\"")
    } else {
        let encoded: String = name
            .bytes()
            .map(|byte| {
                if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                    char::from(byte).to_string()
                } else {
                    format!("%{byte:02X}")
                }
            })
            .collect();
        format!("{disposition}; filename*=utf-8''{encoded}")
    }
}

/// `GET /_matrix/client/v1/media/config` (and the deprecated `/_matrix/media/v3/config`).
pub async fn config(State(state): State<AppState>, _: Authed) -> RumaResponse<get_media_config::v1::Response> {
    let size = UInt::new(state.media.config.max_upload_bytes).unwrap_or(UInt::MAX);
    RumaResponse(get_media_config::v1::Response::new(size))
}

/// `GET /_matrix/client/v1/media/preview_url?url=…` (and the deprecated `/_matrix/media/v3/`).
pub async fn preview_url(
    State(state): State<AppState>,
    Authed(sender): Authed,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    state.rate_limits.check_user(&state.rate_limits.preview_url, &sender)?;
    let url = query_param(query.as_deref(), "url").ok_or_else(|| ApiError::missing_param("`url` is required"))?;
    let preview = state
        .media
        .preview(&state.storage, state.config.server_name.as_str(), &url)
        .await?;
    Ok(Json(preview))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(
            content_disposition("text/html", Some("a.html")),
            "attachment; filename=\"a.html\""
        );
        assert_eq!(
            content_disposition("text/plain; charset=utf-8", Some("say \"hi\".txt")),
            "inline; filename=\"say \\\"hi\\\".txt\""
        );
        assert_eq!(
            content_disposition("application/pdf", Some("résumé.pdf")),
            "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"
        );
    }
}
