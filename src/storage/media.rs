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

/// Other servers' media kept here (marked by `last_access_ts`).
impl Storage {
    /// Records another server's media item fetched for our clients (a second fetch of the
    /// same item changes nothing).
    pub async fn insert_remote_media(&self, media: &NewMedia<'_>) -> Result<(), StorageError> {
        let now = now_ms();
        self.write(
            sqlx::query(
                "INSERT INTO media (origin, media_id, uploader, content_type, filename, size, sha256, created_ts,
                                    uploaded_ts, last_access_ts)
                 VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $7, $7)
                 ON CONFLICT (origin, media_id) DO NOTHING",
            )
            .bind(media.origin)
            .bind(media.media_id)
            .bind(media.content_type)
            .bind(media.filename)
            .bind(media.size)
            .bind(media.sha256)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// Notes that a remote media item was served (at most one write an hour per item).
    pub async fn touch_remote_media(&self, origin: &str, media_id: &str) -> Result<(), StorageError> {
        let now = now_ms();
        self.write(
            sqlx::query(
                "UPDATE media SET last_access_ts = $3
                 WHERE origin = $1 AND media_id = $2 AND last_access_ts < $4",
            )
            .bind(origin)
            .bind(media_id)
            .bind(now)
            .bind(now - 60 * 60 * 1000),
        )
        .await?;
        Ok(())
    }

    /// Bytes of remote media kept: originals and their thumbnails.
    pub async fn remote_media_bytes(&self) -> Result<i64, StorageError> {
        let originals: Option<i64> =
            sqlx::query_scalar("SELECT CAST(SUM(size) AS BIGINT) FROM media WHERE last_access_ts IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        let thumbnails: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(t.size) AS BIGINT) FROM media_thumbnails t
             JOIN media m ON m.origin = t.origin AND m.media_id = t.media_id
             WHERE m.last_access_ts IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(originals.unwrap_or(0) + thumbnails.unwrap_or(0))
    }

    /// Forgets the `count` least recently served remote media items (never `keep`) and
    /// their thumbnails; returns how many went and the blobs nothing refers to any more (to
    /// delete from the store).
    pub async fn evict_remote_media(
        &self,
        count: i64,
        keep: (&str, &str),
    ) -> Result<(usize, Vec<String>), StorageError> {
        let mut tx = self.begin_write().await?;
        let victims: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT origin, media_id, sha256 FROM media
             WHERE last_access_ts IS NOT NULL AND NOT (origin = $2 AND media_id = $3)
             ORDER BY last_access_ts LIMIT $1",
        )
        .bind(count)
        .bind(keep.0)
        .bind(keep.1)
        .fetch_all(&mut *tx)
        .await?;
        let mut blobs = Vec::new();
        for (origin, media_id, sha256) in &victims {
            let thumbnails: Vec<String> =
                sqlx::query_scalar("SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
                    .bind(origin)
                    .bind(media_id)
                    .fetch_all(&mut *tx)
                    .await?;
            sqlx::query("DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM media WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .execute(&mut *tx)
                .await?;
            blobs.extend(thumbnails);
            blobs.extend(sha256.clone());
        }
        blobs.sort();
        blobs.dedup();
        // Identical bytes are stored once: a blob still named elsewhere stays.
        let mut unreferenced = Vec::new();
        for sha256 in blobs {
            let used: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) WHERE EXISTS (SELECT 1 FROM media WHERE sha256 = $1)
                    OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1)",
            )
            .bind(&sha256)
            .fetch_optional(&mut *tx)
            .await?;
            if used.is_none() {
                unreferenced.push(sha256);
            }
        }
        tx.commit().await?;
        Ok((victims.len(), unreferenced))
    }
}
