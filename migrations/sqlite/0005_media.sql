-- The media repository. File bytes live in a blob store (a directory or an S3 bucket) keyed by
-- their sha256, so identical uploads are stored once; these tables hold what the bytes are.

-- One row per media ID, local or (once federation caches remote media) remote. An async upload
-- (`/media/v1/create`) reserves its ID here with `sha256` NULL until the bytes arrive; such a
-- reservation dies at `expires_ts`.
CREATE TABLE media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    uploader TEXT,
    content_type TEXT,
    filename TEXT,
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT,
    expires_ts BIGINT,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_by_uploader ON media (uploader, created_ts);
CREATE INDEX media_pending ON media (expires_ts) WHERE sha256 IS NULL;

-- Thumbnails made from a media item, each a blob of its own.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    method TEXT NOT NULL,
    animated BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method, animated)
);

-- URL previews, cached as the JSON served, until `expires_ts`.
CREATE TABLE url_previews (
    url TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
