//! Where media bytes live: content-addressed blobs, named by their sha256, on local disk or in
//! an S3-compatible bucket. Identical content is stored once; blobs are never changed.

use std::{io, ops::Range, path::PathBuf};

use axum::body::Body;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, aws::AmazonS3Builder,
    path::Path as ObjectPath,
};
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::config::S3Config;

/// Parts of a multipart upload to S3 (the minimum part size is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;
const READ_BUFFER: usize = 256 * 1024;

pub enum BlobStore {
    /// Under `root`, as `ab/cd/abcd…` (two levels of fan-out keep directories small).
    Local { root: PathBuf },
    S3 {
        store: Box<dyn ObjectStore>,
        prefix: String,
    },
}

impl BlobStore {
    pub fn local(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(Self::Local { root })
    }

    pub fn s3(config: &S3Config) -> Result<Self, object_store::Error> {
        crate::outbound::install_crypto_provider();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // Self-hosted stores (MinIO, Garage, moto) address buckets by path.
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        Ok(Self::S3 {
            store: Box::new(builder.build()?),
            prefix: config.prefix.trim_matches('/').to_owned(),
        })
    }

    fn local_path(root: &std::path::Path, sha256: &str) -> PathBuf {
        root.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256)
    }

    fn object_path(prefix: &str, sha256: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(format!("blobs/{sha256}"))
        } else {
            ObjectPath::from(format!("{prefix}/blobs/{sha256}"))
        }
    }

    /// Stores a spooled file under its hash (a no-op when that content is already stored).
    pub async fn put_file(&self, sha256: &str, file: TempPath) -> io::Result<()> {
        match self {
            Self::Local { root } => {
                let target = Self::local_path(root, sha256);
                if tokio::fs::try_exists(&target).await? {
                    return Ok(());
                }
                tokio::fs::create_dir_all(target.parent().expect("blob paths have a parent")).await?;
                // A rename: the spool directory is on the same file system, so this is atomic
                // and copies nothing.
                tokio::task::spawn_blocking(move || file.persist(&target).map_err(|error| error.error))
                    .await
                    .map_err(io::Error::other)?
            }
            Self::S3 { store, prefix } => {
                let path = Self::object_path(prefix, sha256);
                if exists(store.as_ref(), &path).await? {
                    return Ok(());
                }
                let mut source = tokio::fs::File::open(&file).await?;
                let size = source.metadata().await?.len();
                if size <= PART_BYTES as u64 {
                    let mut bytes = Vec::with_capacity(size as usize);
                    source.read_to_end(&mut bytes).await?;
                    store
                        .put(&path, PutPayload::from(bytes))
                        .await
                        .map_err(io::Error::other)?;
                    return Ok(());
                }
                let upload = store.put_multipart(&path).await.map_err(io::Error::other)?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                let mut buffer = vec![0; READ_BUFFER];
                let written: io::Result<()> = async {
                    loop {
                        let read = source.read(&mut buffer).await?;
                        if read == 0 {
                            return Ok(());
                        }
                        // At most two parts in flight: bounded memory, and still overlapped.
                        writer.wait_for_capacity(2).await.map_err(io::Error::other)?;
                        writer.write(&buffer[..read]);
                    }
                }
                .await;
                match written {
                    Ok(()) => writer.finish().await.map(drop).map_err(io::Error::other),
                    Err(error) => {
                        // The parts already sent would otherwise stay in the bucket (and be billed).
                        if let Err(abort) = writer.abort().await {
                            tracing::warn!(error = %abort, "could not abort a failed multipart upload");
                        }
                        Err(error)
                    }
                }
            }
        }
    }

    /// Stores bytes already in memory (thumbnails, preview images).
    pub async fn put_bytes(&self, sha256: &str, bytes: Bytes) -> io::Result<()> {
        match self {
            Self::Local { root } => {
                let target = Self::local_path(root, sha256);
                if tokio::fs::try_exists(&target).await? {
                    return Ok(());
                }
                let dir = target.parent().expect("blob paths have a parent").to_owned();
                tokio::fs::create_dir_all(&dir).await?;
                tokio::task::spawn_blocking(move || {
                    let mut file = tempfile::NamedTempFile::new_in(&dir)?;
                    io::Write::write_all(&mut file, &bytes)?;
                    file.persist(&target).map(drop).map_err(|error| error.error)
                })
                .await
                .map_err(io::Error::other)?
            }
            Self::S3 { store, prefix } => {
                let path = Self::object_path(prefix, sha256);
                store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(io::Error::other)?;
                Ok(())
            }
        }
    }

    /// Streams `range` of a blob (all of it when `None`); the range must lie within the blob.
    pub async fn stream(&self, sha256: &str, range: Option<Range<u64>>) -> io::Result<Body> {
        match self {
            Self::Local { root } => {
                let mut file = tokio::fs::File::open(Self::local_path(root, sha256)).await?;
                let body = match range {
                    Some(range) => {
                        file.seek(io::SeekFrom::Start(range.start)).await?;
                        Body::from_stream(ReaderStream::with_capacity(
                            file.take(range.end - range.start),
                            READ_BUFFER,
                        ))
                    }
                    None => Body::from_stream(ReaderStream::with_capacity(file, READ_BUFFER)),
                };
                Ok(body)
            }
            Self::S3 { store, prefix } => {
                let options = GetOptions {
                    range: range.map(GetRange::Bounded),
                    ..GetOptions::default()
                };
                let result = store
                    .get_opts(&Self::object_path(prefix, sha256), options)
                    .await
                    .map_err(io::Error::other)?;
                Ok(Body::from_stream(result.into_stream().map_err(io::Error::other)))
            }
        }
    }

    /// Deletes a blob (gone already is fine).
    pub async fn delete(&self, sha256: &str) -> io::Result<()> {
        match self {
            Self::Local { root } => match tokio::fs::remove_file(Self::local_path(root, sha256)).await {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
            Self::S3 { store, prefix } => match store.delete(&Self::object_path(prefix, sha256)).await {
                Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
                Err(error) => Err(io::Error::other(error)),
            },
        }
    }

    /// A whole blob in memory, if it is at most `limit` bytes (for thumbnailing).
    pub async fn read(&self, sha256: &str, limit: u64) -> io::Result<Option<Bytes>> {
        let body = self.stream(sha256, None).await?;
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(io::Error::other)?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Ok(None);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(bytes)))
    }

    /// Checks that the store takes writes (at start-up, so a wrong bucket, endpoint or key
    /// fails there, not at the first upload).
    pub async fn check(&self) -> io::Result<()> {
        match self {
            Self::Local { root } => tokio::fs::metadata(root).await.map(drop),
            Self::S3 { store, prefix } => {
                let path = if prefix.is_empty() {
                    ObjectPath::from("hearth-store-check")
                } else {
                    ObjectPath::from(format!("{prefix}/hearth-store-check"))
                };
                store
                    .put(&path, PutPayload::from_static(b"Hearth writes media here"))
                    .await
                    .map(drop)
                    .map_err(io::Error::other)
            }
        }
    }
}

async fn exists(store: &dyn ObjectStore, path: &ObjectPath) -> io::Result<bool> {
    match store.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(error) => Err(io::Error::other(error)),
    }
}
