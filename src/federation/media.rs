//! Media of other servers, fetched for our clients: authenticated federation media
//! (`/_matrix/federation/v1/media/download`, a `multipart/mixed` answer holding the bytes or
//! a URL to fetch them from), and for servers that predate it, the old unauthenticated
//! `/_matrix/media/v3/download` (as Synapse falls back).

use ruma::{
    ServerName,
    api::federation::authenticated_media::{FileOrLocation, get_content},
};

use super::Federation;
use crate::error::{ApiError, ApiResult};

/// Fetches of other servers' media at once, at most (each holds its file in memory).
static MEDIA_FETCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// A remote file, fetched whole.
pub struct RemoteFile {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// The error a client sees when another server's media cannot be had.
fn unavailable(message: String) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_GATEWAY,
        ruma::api::error::ErrorKind::Unknown,
        message,
    )
}

impl Federation {
    /// Fetches `media_id` from `origin`; 404 when it has no such media, 413 when it is
    /// larger than `max_bytes`, 502 when it cannot be reached.
    pub async fn fetch_media(&self, origin: &ServerName, media_id: &str, max_bytes: u64) -> ApiResult<RemoteFile> {
        if self.is_blocked(origin) {
            return Err(ApiError::not_found(
                "This server does not federate with the media's server",
            ));
        }
        // One fetch of other servers' media at a time per permit: each is held in memory.
        let _permit = MEDIA_FETCHES.acquire().await.map_err(|_| ApiError::internal())?;
        let request = get_content::v1::Request::new(media_id.to_owned());
        // The multipart answer's parts come on top of the file.
        let limit = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024);
        let file = match self.client.send_limited(origin, request, limit).await {
            Ok(response) => match response.content {
                FileOrLocation::File(content) => RemoteFile {
                    bytes: content.file,
                    content_type: content.content_type,
                    filename: content.content_disposition.and_then(|disposition| disposition.filename),
                },
                FileOrLocation::Location(url) => self.fetch_location(&url, max_bytes).await?,
                _ => return Err(unavailable("The media's server answered in an unknown form".to_owned())),
            },
            Err(error) if error.errcode() == Some("M_NOT_FOUND") => {
                return Err(ApiError::not_found("There is no media with this ID"));
            }
            Err(error) if error.errcode() == Some("M_UNRECOGNIZED") || error.status() == Some(404) => {
                // A server from before authenticated media.
                self.fetch_legacy(origin, media_id, max_bytes).await?
            }
            Err(error) => return Err(unavailable(format!("The media's server did not answer: {error}"))),
        };
        if file.bytes.len() as u64 > max_bytes {
            return Err(ApiError::too_large(max_bytes as usize));
        }
        Ok(file)
    }

    /// The old unauthenticated download, redirects followed.
    async fn fetch_legacy(&self, origin: &ServerName, media_id: &str, max_bytes: u64) -> ApiResult<RemoteFile> {
        // The media ID was checked: letters, digits, `-` and `_` only.
        let path = format!("/_matrix/media/v3/download/{origin}/{media_id}?allow_remote=false&allow_redirect=true");
        let response = self
            .client
            .get_unsigned(origin, &path, usize::try_from(max_bytes).unwrap_or(usize::MAX))
            .await
            .map_err(|error| unavailable(format!("The media's server did not answer: {error}")))?;
        let status = response.status();
        if status.is_redirection()
            && let Some(location) = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
        {
            return self.fetch_location(location, max_bytes).await;
        }
        if status == http::StatusCode::NOT_FOUND {
            return Err(ApiError::not_found("There is no media with this ID"));
        }
        if !status.is_success() {
            return Err(unavailable(format!("The media's server answered {status}")));
        }
        let (parts, body) = response.into_parts();
        Ok(file_from(&parts.headers, body))
    }

    /// Fetches a file from the URL a media server pointed to (through the address policy).
    async fn fetch_location(&self, url: &str, max_bytes: u64) -> ApiResult<RemoteFile> {
        let mut response =
            self.media_client.get(url).send().await.map_err(|error| {
                unavailable(format!("Could not fetch the media from where its server said: {error}"))
            })?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "The media's location answered {}",
                response.status()
            )));
        }
        let headers = response.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| unavailable(format!("The media download broke off: {error}")))?
        {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(ApiError::too_large(max_bytes as usize));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(file_from(&headers, bytes))
    }
}

/// A file from a plain HTTP answer: its type and the name in `Content-Disposition`.
fn file_from(headers: &http::HeaderMap, bytes: Vec<u8>) -> RemoteFile {
    let header = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let filename = header(http::header::CONTENT_DISPOSITION)
        .and_then(|value| ruma::http_headers::ContentDisposition::try_from(value.as_bytes()).ok())
        .and_then(|disposition| disposition.filename);
    RemoteFile {
        bytes,
        content_type: header(http::header::CONTENT_TYPE),
        filename,
    }
}
