//! `media`, `media_thumbnails`, `url_previews`: what the media repository knows about the blobs
//! it stores (the bytes themselves are in [`crate::media::store`]).

use sqlx::FromRow;

use super::{Backend, Storage, StorageError, now_ms};

/// One media item. `sha256` is `None` while an async upload's ID waits for its bytes.
#[derive(Debug, Clone, FromRow)]
pub struct MediaRow {
    pub origin: String,
    pub media_id: String,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub expires_ts: Option<i64>,
}

/// What an upload stores about its bytes.
#[derive(Debug, Clone)]
pub struct NewMedia<'a> {
    pub origin: &'a str,
    pub media_id: &'a str,
    pub uploader: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub size: i64,
    pub sha256: &'a str,
}

#[derive(Debug, Clone, FromRow)]
pub struct ThumbnailRow {
    pub width: i64,
    pub height: i64,
    pub method: String,
    pub animated: i64,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// How reserving an async upload ID went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    /// The user already holds this many unused IDs.
    TooManyPending(i64),
}

/// How attaching bytes to a reserved ID went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Stored,
    /// No such ID, or its reservation expired.
    NotFound,
    /// Reserved by someone else.
    NotYours,
    /// The bytes were already uploaded.
    AlreadyUploaded,
}

const MEDIA_COLUMNS: &str = "origin, media_id, uploader, content_type, filename, size, sha256, created_ts, expires_ts";

impl Storage {
    pub async fn media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRow>, StorageError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE origin = $1 AND media_id = $2"
        )))
        .bind(origin)
        .bind(media_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a finished upload.
    pub async fn insert_media(&self, media: &NewMedia<'_>) -> Result<(), StorageError> {
        let now = now_ms();
        self.write(
            sqlx::query(
                "INSERT INTO media (origin, media_id, uploader, content_type, filename, size, sha256, created_ts,
                                uploaded_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(media.origin)
            .bind(media.media_id)
            .bind(media.uploader)
            .bind(media.content_type)
            .bind(media.filename)
            .bind(media.size)
            .bind(media.sha256)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// Reserves an ID for an async upload, unless the user already holds `max_pending` unused
    /// ones. Expired reservations (anyone's) are dropped first.
    pub async fn reserve_media(
        &self,
        origin: &str,
        media_id: &str,
        uploader: &str,
        expires_ts: i64,
        max_pending: i64,
    ) -> Result<Reservation, StorageError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM media WHERE sha256 IS NULL AND expires_ts <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts > $2")
                .bind(uploader)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        if pending >= max_pending {
            return Ok(Reservation::TooManyPending(pending));
        }
        sqlx::query(
            "INSERT INTO media (origin, media_id, uploader, created_ts, expires_ts) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(origin)
        .bind(media_id)
        .bind(uploader)
        .bind(now)
        .bind(expires_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reservation::Reserved)
    }

    /// Whether `uploader` may put bytes on the reserved ID now (checked before reading them).
    pub async fn check_reservation(
        &self,
        origin: &str,
        media_id: &str,
        uploader: &str,
    ) -> Result<Completion, StorageError> {
        let row = self.media(origin, media_id).await?;
        Ok(reservation_state(row.as_ref(), uploader))
    }

    /// Attaches the uploaded bytes to a reserved ID: exactly one upload per ID wins.
    pub async fn complete_media(&self, media: &NewMedia<'_>) -> Result<Completion, StorageError> {
        let uploader = media.uploader.unwrap_or_default();
        let mut tx = self.begin_write().await?;
        // SQLite's write transaction already excludes other writers; PostgreSQL locks the row.
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let row: Option<MediaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE origin = $1 AND media_id = $2{lock}"
        )))
        .bind(media.origin)
        .bind(media.media_id)
        .fetch_optional(&mut *tx)
        .await?;
        let state = reservation_state(row.as_ref(), uploader);
        if state != Completion::Stored {
            return Ok(state);
        }
        sqlx::query(
            "UPDATE media SET content_type = $3, filename = $4, size = $5, sha256 = $6, uploaded_ts = $7,
                              expires_ts = NULL
             WHERE origin = $1 AND media_id = $2",
        )
        .bind(media.origin)
        .bind(media.media_id)
        .bind(media.content_type)
        .bind(media.filename)
        .bind(media.size)
        .bind(media.sha256)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Completion::Stored)
    }

    /// Bytes the user has uploaded, counting each upload (deduplicated or not).
    pub async fn media_bytes_of(&self, uploader: &str) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media WHERE uploader = $1 AND sha256 IS NOT NULL",
        )
        .bind(uploader)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn thumbnails(&self, origin: &str, media_id: &str) -> Result<Vec<ThumbnailRow>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT width, height, method, animated, content_type, size, sha256
             FROM media_thumbnails WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin)
        .bind(media_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a thumbnail; a concurrent request that made the same one first wins.
    pub async fn insert_thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        thumbnail: &ThumbnailRow,
    ) -> Result<(), StorageError> {
        self.write(
            sqlx::query(
                "INSERT INTO media_thumbnails (origin, media_id, width, height, method, animated, content_type, size,
                                           sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (origin, media_id, width, height, method, animated) DO NOTHING",
            )
            .bind(origin)
            .bind(media_id)
            .bind(thumbnail.width)
            .bind(thumbnail.height)
            .bind(&thumbnail.method)
            .bind(thumbnail.animated)
            .bind(&thumbnail.content_type)
            .bind(thumbnail.size)
            .bind(&thumbnail.sha256),
        )
        .await?;
        Ok(())
    }

    /// A cached preview that has not expired, as the JSON served.
    pub async fn url_preview(&self, url: &str) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT response FROM url_previews WHERE url = $1 AND expires_ts > $2")
                .bind(url)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn store_url_preview(&self, url: &str, response: &str, expires_ts: i64) -> Result<(), StorageError> {
        let now = now_ms();
        self.write(
            sqlx::query(
                "INSERT INTO url_previews (url, response, fetched_ts, expires_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (url) DO UPDATE SET response = excluded.response, fetched_ts = excluded.fetched_ts,
                                             expires_ts = excluded.expires_ts",
            )
            .bind(url)
            .bind(response)
            .bind(now)
            .bind(expires_ts),
        )
        .await?;
        // Expired entries of other URLs go too, so the table holds only what can be served.
        self.write(sqlx::query("DELETE FROM url_previews WHERE expires_ts <= $1").bind(now))
            .await?;
        Ok(())
    }
}

fn reservation_state(row: Option<&MediaRow>, uploader: &str) -> Completion {
    match row {
        None => Completion::NotFound,
        Some(row) if row.sha256.is_some() => Completion::AlreadyUploaded,
        Some(row) if row.expires_ts.is_some_and(|expires| expires <= now_ms()) => Completion::NotFound,
        Some(row) if row.uploader.as_deref() != Some(uploader) => Completion::NotYours,
        Some(_) => Completion::Stored,
    }
}
