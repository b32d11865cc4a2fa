//! The media repository: uploads (direct and async), downloads, thumbnails and URL previews.
//!
//! Bytes go to a [`BlobStore`] under their sha256, so identical files are stored once;
//! metadata (origin, media ID, uploader, type, name, size) goes to the database. An upload is
//! spooled to a file under the data directory while it is hashed and counted, then moved (local
//! store) or copied in parts (S3) into the store: a 50 MiB upload never sits in memory.

pub mod preview;
pub mod range;
pub mod store;
pub mod thumbnail;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use ruma::api::error::ErrorKind;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::{io::AsyncWriteExt, sync::Semaphore};

pub use self::store::BlobStore;
use self::thumbnail::ThumbnailError;
use crate::{
    config::{Config, MediaConfig, ThumbnailMethod},
    error::{ApiError, ApiResult},
    outbound::{AddressPolicy, guarded_client},
    storage::{Completion, MediaRow, NewMedia, Storage, StorageError, ThumbnailRow, now_ms},
};

/// How often a download waiting for an async upload looks again.
const PENDING_POLL: Duration = Duration::from_millis(250);

pub struct Media {
    pub config: MediaConfig,
    pub store: BlobStore,
    /// Uploads are written here first; on the local store's file system, so the final move is
    /// a rename.
    spool_dir: PathBuf,
    /// Images decoded at once (decoding is CPU- and memory-heavy).
    decoding: Arc<Semaphore>,
    /// Fetches pages for URL previews; `None` when previews are off.
    previews: Option<reqwest::Client>,
    /// Held (shared) from writing a blob until its row names it, and (alone) by eviction
    /// from finding blobs nothing names until they are deleted: identical bytes stored
    /// meanwhile are never deleted under a new row.
    blobs: tokio::sync::RwLock<()>,
}

/// An upload spooled to disk: its file, hash and size.
pub struct Spooled {
    pub file: TempPath,
    pub sha256: String,
    pub size: u64,
}

/// What a thumbnail request is served: a stored blob.
pub struct Served {
    pub sha256: String,
    pub content_type: String,
    pub size: i64,
}

impl Media {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let media = config.media.clone();
        let local_root = media.path.clone().unwrap_or_else(|| config.data_dir.join("media"));
        let spool_dir = local_root.join("spool");
        std::fs::create_dir_all(&spool_dir)
            .with_context(|| format!("cannot create the media spool directory {}", spool_dir.display()))?;
        remove_stale_spool_files(&spool_dir);
        let store = match &media.s3 {
            Some(s3) => BlobStore::s3(s3).context("cannot set up the S3 media store")?,
            None => BlobStore::local(local_root.join("blobs"))
                .with_context(|| format!("cannot create the media directory {}", local_root.display()))?,
        };
        let previews = media.url_preview.enabled.then(|| {
            guarded_client(
                AddressPolicy {
                    denylist: media.url_preview.ip_range_denylist.clone(),
                    allowlist: media.url_preview.ip_range_allowlist.clone(),
                },
                Duration::from_secs(media.url_preview.timeout_secs),
            )
        });
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Self {
            config: media,
            store,
            spool_dir,
            decoding: Arc::new(Semaphore::new(cores)),
            previews,
            blobs: tokio::sync::RwLock::new(()),
        })
    }

    /// A new media ID: 24 random letters and digits.
    pub fn new_media_id() -> String {
        use rand::RngExt;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        (0..24)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    /// Reads a request body to a spool file, hashing and counting as it goes; `413 M_TOO_LARGE`
    /// past the upload limit (the partial file is deleted).
    pub async fn spool(&self, body: Body) -> ApiResult<Spooled> {
        let limit = self.config.max_upload_bytes;
        let file = tempfile::NamedTempFile::new_in(&self.spool_dir).map_err(internal)?;
        let (file, path) = file.into_parts();
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                if crate::listener::is_body_timeout(&error) {
                    ApiError::body_timeout()
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "The upload was cut off")
                }
            })?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(internal)?;
        }
        file.flush().await.map_err(internal)?;
        if matches!(self.store, BlobStore::Local { .. }) {
            // The file becomes the stored blob by a rename: its bytes must be on disk before
            // the database says the media exists.
            file.into_inner().sync_data().await.map_err(internal)?;
        }
        Ok(Spooled {
            file: path,
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    /// Refuses an upload of `size` more bytes that would take `uploader` past their quota.
    pub async fn check_quota(&self, storage: &Storage, uploader: &str, size: u64) -> ApiResult<()> {
        let quota = self.config.max_bytes_per_user;
        if quota == 0 {
            return Ok(());
        }
        let used = storage.media_bytes_of(uploader).await? as u64;
        if used.saturating_add(size) > quota {
            return Err(ApiError::forbidden(format!(
                "This upload would exceed your media quota ({used} of {quota} bytes used)"
            )));
        }
        Ok(())
    }

    /// Stores a new upload under a new media ID, which it returns.
    pub async fn store_new(
        &self,
        storage: &Storage,
        origin: &str,
        uploader: &str,
        content_type: Option<&str>,
        filename: Option<&str>,
        spooled: Spooled,
    ) -> ApiResult<String> {
        self.check_quota(storage, uploader, spooled.size).await?;
        let Spooled { file, sha256, size } = spooled;
        let _blobs = self.blobs.read().await;
        self.store.put_file(&sha256, file).await.map_err(internal)?;
        let media_id = Self::new_media_id();
        storage
            .insert_media(&NewMedia {
                origin,
                media_id: &media_id,
                uploader: Some(uploader),
                content_type,
                filename,
                size: size as i64,
                sha256: &sha256,
            })
            .await?;
        Ok(media_id)
    }

    /// Keeps another server's media item, fetched for a client; then, past
    /// `remote_cache_max_bytes`, forgets the least recently served others.
    pub async fn store_remote(
        &self,
        storage: &Storage,
        origin: &str,
        media_id: &str,
        content_type: Option<&str>,
        filename: Option<&str>,
        bytes: Vec<u8>,
    ) -> ApiResult<()> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as i64;
        let blobs = self.blobs.read().await;
        self.store
            .put_bytes(&sha256, Bytes::from(bytes))
            .await
            .map_err(internal)?;
        storage
            .insert_remote_media(&NewMedia {
                origin,
                media_id,
                uploader: None,
                content_type,
                filename,
                size,
                sha256: &sha256,
            })
            .await?;
        drop(blobs);
        if let Err(error) = self.evict_remote(storage, (origin, media_id)).await {
            tracing::warn!(%error, "could not make room in the remote media cache");
        }
        Ok(())
    }

    /// Forgets remote media, least recently served first, until the cache fits its cap.
    async fn evict_remote(&self, storage: &Storage, keep: (&str, &str)) -> Result<(), StorageError> {
        let cap = self.config.remote_cache_max_bytes;
        if cap == 0 {
            return Ok(());
        }
        while storage.remote_media_bytes().await? as u64 > cap {
            let _alone = self.blobs.write().await;
            let (evicted, blobs) = storage.evict_remote_media(16, keep).await?;
            for blob in blobs {
                if let Err(error) = self.store.delete(&blob).await {
                    tracing::warn!(%error, blob, "could not delete an evicted media blob");
                }
            }
            if evicted == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Attaches an upload to an ID reserved by `/create`.
    pub async fn store_reserved(&self, storage: &Storage, media: NewMedia<'_>, spooled: Spooled) -> ApiResult<()> {
        let uploader = media.uploader.unwrap_or_default();
        self.check_quota(storage, uploader, spooled.size).await?;
        let Spooled { file, sha256, size } = spooled;
        let _blobs = self.blobs.read().await;
        self.store.put_file(&sha256, file).await.map_err(internal)?;
        let outcome = storage
            .complete_media(&NewMedia {
                size: size as i64,
                sha256: &sha256,
                ..media
            })
            .await?;
        reservation_error(outcome)
    }

    /// The media item to serve, waiting up to `wait` for an async upload still in progress
    /// (`504 M_NOT_YET_UPLOADED` after that).
    pub async fn find(
        &self,
        storage: &Storage,
        own_server: &str,
        origin: &str,
        media_id: &str,
        wait: Duration,
    ) -> ApiResult<MediaRow> {
        check_media_id(media_id)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(row) = storage.media(origin, media_id).await? else {
                return Err(if origin == own_server {
                    ApiError::not_found("There is no media with this ID")
                } else {
                    ApiError::not_found("Media from other servers is not available here yet (no federation)")
                });
            };
            if row.sha256.is_some() {
                return Ok(row);
            }
            if row.expires_ts.is_some_and(|expires| expires <= now_ms()) {
                return Err(ApiError::not_found("There is no media with this ID"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::NotYetUploaded,
                    "The media has not been uploaded yet",
                ));
            }
            tokio::time::sleep(PENDING_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    /// The thumbnail of `media` for a request of at least `width`×`height`: made and stored on
    /// the first request, read from the store after that. The original is served when it is no
    /// larger than what was asked, or larger than every configured size.
    pub async fn thumbnail(
        &self,
        storage: &Storage,
        media: &MediaRow,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
        animated: bool,
    ) -> ApiResult<Served> {
        let sha256 = media.sha256.clone().expect("served media has bytes");
        let content_type = media.content_type.clone().unwrap_or_default();
        let base_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let thumbnailable = ["image/jpeg", "image/png", "image/gif", "image/webp"];
        if !thumbnailable.contains(&base_type.as_str()) {
            return Err(cannot_thumbnail(format!(
                "Thumbnails are made of JPEG, PNG, GIF and WebP images, not of {}",
                if content_type.is_empty() {
                    "untyped content"
                } else {
                    &content_type
                }
            )));
        }
        let original = Served {
            sha256: sha256.clone(),
            content_type: content_type.clone(),
            size: media.size.unwrap_or_default(),
        };
        let Some(size) = thumbnail::choose(&self.config.thumbnail_sizes, width, height, method) else {
            // Nothing configured is large enough: the original is, if it is an image at all.
            self.probe(&sha256).await?;
            return Ok(original);
        };
        let method_name = match size.method {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        };
        let stored = storage.thumbnails(&media.origin, &media.media_id).await?;
        if let Some(row) = stored.into_iter().find(|row| {
            row.width == i64::from(size.width)
                && row.height == i64::from(size.height)
                && row.method == method_name
                && (row.animated != 0) == animated
        }) {
            return Ok(Served {
                sha256: row.sha256,
                content_type: row.content_type,
                size: row.size,
            });
        }
        let max_pixels = self.config.max_image_pixels;
        let made = self
            .decode_blob(&sha256, move |bytes| {
                thumbnail::make(&bytes, size, animated, max_pixels)
            })
            .await?;
        let _blobs = self.blobs.read().await;
        let served = match made {
            Some(made) => {
                let thumbnail_sha = hex::encode(Sha256::digest(&made.bytes));
                let size = made.bytes.len() as i64;
                self.store
                    .put_bytes(&thumbnail_sha, Bytes::from(made.bytes))
                    .await
                    .map_err(internal)?;
                Served {
                    sha256: thumbnail_sha,
                    content_type: made.content_type.to_owned(),
                    size,
                }
            }
            // The image is no larger than the thumbnail: it is its own thumbnail.
            None => original,
        };
        storage
            .insert_thumbnail(
                &media.origin,
                &media.media_id,
                &ThumbnailRow {
                    width: i64::from(size.width),
                    height: i64::from(size.height),
                    method: method_name.to_owned(),
                    animated: i64::from(animated),
                    content_type: served.content_type.clone(),
                    size: served.size,
                    sha256: served.sha256.clone(),
                },
            )
            .await?;
        Ok(served)
    }

    /// Checks that a blob is an image within the pixel limit.
    async fn probe(&self, sha256: &str) -> ApiResult<(u32, u32)> {
        let max_pixels = self.config.max_image_pixels;
        self.decode_blob(sha256, move |bytes| probe_within(&bytes, max_pixels))
            .await
    }

    /// Reads a blob and runs image work on it, a bounded number at a time (the permit is
    /// taken before the read, so waiting requests do not hold whole files in memory).
    async fn decode_blob<T: Send + 'static>(
        &self,
        sha256: &str,
        work: impl FnOnce(Bytes) -> Result<T, ThumbnailError> + Send + 'static,
    ) -> ApiResult<T> {
        let permit = self.decoding.clone().acquire_owned().await.map_err(internal)?;
        let bytes = self
            .store
            .read(sha256, self.config.max_upload_bytes)
            .await
            .map_err(internal)?
            .ok_or_else(|| too_large(self.config.max_upload_bytes))?;
        self.run_decoder(permit, move || work(bytes)).await
    }

    /// Runs image work on bytes already in memory, a bounded number at a time.
    async fn decode<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ThumbnailError> + Send + 'static,
    ) -> ApiResult<T> {
        let permit = self.decoding.clone().acquire_owned().await.map_err(internal)?;
        self.run_decoder(permit, work).await
    }

    /// Image work on the blocking pool; a panic in a decoder is an error for this request only.
    /// The permit goes with the work: a client that hangs up does not free its slot while
    /// the decoder still runs.
    async fn run_decoder<T: Send + 'static>(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        work: impl FnOnce() -> Result<T, ThumbnailError> + Send + 'static,
    ) -> ApiResult<T> {
        let work = move || {
            let _permit = permit;
            work()
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ThumbnailError::TooLarge)) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                format!(
                    "The image has more than {} pixels; it is not thumbnailed",
                    self.config.max_image_pixels
                ),
            )),
            Ok(Err(ThumbnailError::Unsupported(reason))) => {
                Err(cannot_thumbnail(format!("Cannot thumbnail this image: {reason}")))
            }
            Err(_) => {
                tracing::warn!("an image decoder panicked");
                Err(cannot_thumbnail("Cannot thumbnail this image".to_owned()))
            }
        }
    }
}

/// An image's dimensions, if it is one we read and within the pixel limit.
pub fn probe_within(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), ThumbnailError> {
    let (_, width, height) = thumbnail::probe(bytes)?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ThumbnailError::TooLarge);
    }
    Ok((width, height))
}

/// Deletes spooled uploads a crash left behind. Only files older than a day go: the directory
/// may be shared with other workers that are receiving uploads right now.
fn remove_stale_spool_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| {
                modified
                    .elapsed()
                    .is_ok_and(|age| age > Duration::from_secs(24 * 60 * 60))
            });
        if stale && let Err(error) = std::fs::remove_file(entry.path()) {
            tracing::warn!(%error, path = %entry.path().display(), "cannot remove a stale spooled upload");
        }
    }
}

/// Media IDs are letters, digits, `_` and `-` (the spec's defence against path traversal).
pub fn check_media_id(media_id: &str) -> ApiResult<()> {
    let valid = !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_param(
            "A media ID consists of letters, digits, `_` and `-`",
        ))
    }
}

pub fn reservation_error(outcome: Completion) -> ApiResult<()> {
    match outcome {
        Completion::Stored => Ok(()),
        Completion::NotFound => Err(ApiError::not_found("There is no unused media ID like this")),
        Completion::NotYours => Err(ApiError::forbidden("This media ID was created by another user")),
        Completion::AlreadyUploaded => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorKind::CannotOverwriteMedia,
            "This media ID already has content",
        )),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TooLarge,
        format!("The upload is larger than this server's limit of {limit} bytes"),
    )
}

fn cannot_thumbnail(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "media storage failed");
    ApiError::internal()
}
