//! The media scenario: upload and download throughput for one large file, over the standard
//! endpoints (`POST /_matrix/media/v3/upload`, `GET /_matrix/client/v1/media/download`), so
//! the same run measures any homeserver that serves authenticated media.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, future::try_join_all};
use serde::Serialize;
use serde_json::Value;

use crate::{
    client::{Server, User},
    stats::{ProcessSample, sample_process},
};

#[derive(Debug, Serialize)]
pub struct MediaResult {
    pub file_mib: usize,
    pub rounds: usize,
    /// MiB/s per round: request sent → `content_uri` returned (the server has stored it).
    pub upload_mib_per_s: Vec<f64>,
    /// MiB/s per round: request sent → last byte received, one download at a time.
    pub download_mib_per_s: Vec<f64>,
    /// Downloads at once in the parallel round, and their combined MiB/s.
    pub parallel_downloads: usize,
    pub parallel_mib_per_s: f64,
    /// The server's RSS before and after (it should not hold files in memory).
    pub before: Option<ProcessSample>,
    pub after: Option<ProcessSample>,
}

impl MediaResult {
    pub fn row(&self) -> String {
        let median = |values: &[f64]| {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted.get(sorted.len() / 2).copied().unwrap_or_default()
        };
        let rss = match (self.before, self.after) {
            (Some(before), Some(after)) => {
                format!("; server RSS {} → {} MiB", before.rss_kib / 1024, after.rss_kib / 1024)
            }
            _ => String::new(),
        };
        format!(
            "{} MiB × {}: upload {:.0} MiB/s, download {:.0} MiB/s (medians); {} parallel downloads {:.0} MiB/s{rss}",
            self.file_mib,
            self.rounds,
            median(&self.upload_mib_per_s),
            median(&self.download_mib_per_s),
            self.parallel_downloads,
            self.parallel_mib_per_s
        )
    }
}

/// `rounds` uploads of a fresh `mib`-MiB file (each different, so deduplication never skips
/// the write), each downloaded once; then `parallel` downloads of the last one at once.
pub async fn media(
    server: &Server,
    user: &User,
    mib: usize,
    rounds: usize,
    parallel: usize,
    server_pid: Option<u32>,
) -> Result<MediaResult> {
    let before = sample_process(server_pid);
    let size = mib * 1024 * 1024;
    let mut content: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut uploads = Vec::new();
    let mut downloads = Vec::new();
    let mut last = String::new();
    for round in 0..rounds {
        content[..8].copy_from_slice(&(round as u64).to_le_bytes());
        let body = content.clone();
        let started = Instant::now();
        let response = server
            .http
            .post(format!("{}/_matrix/media/v3/upload?filename=bench.bin", server.base))
            .bearer_auth(&user.token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("upload: {status} {value}");
        }
        uploads.push(mib as f64 / started.elapsed().as_secs_f64());
        let mxc = value["content_uri"].as_str().context("content_uri")?;
        last = mxc.trim_start_matches("mxc://").to_owned();
        let started = Instant::now();
        let received = download(server, user, &last).await?;
        downloads.push(mib as f64 / started.elapsed().as_secs_f64());
        if received != size {
            bail!("downloaded {received} bytes of {size}");
        }
    }
    let started = Instant::now();
    let sizes = try_join_all((0..parallel).map(|_| download(server, user, &last))).await?;
    let parallel_mib_per_s = (mib * parallel) as f64 / started.elapsed().as_secs_f64();
    if sizes.iter().any(|received| *received != size) {
        bail!("a parallel download came back short");
    }
    Ok(MediaResult {
        file_mib: mib,
        rounds,
        upload_mib_per_s: uploads,
        download_mib_per_s: downloads,
        parallel_downloads: parallel,
        parallel_mib_per_s,
        before,
        after: sample_process(server_pid),
    })
}

/// Downloads `server/media_id`, counting the bytes as they stream (nothing kept).
async fn download(server: &Server, user: &User, path: &str) -> Result<usize> {
    let response = server
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{path}", server.base))
        .bearer_auth(&user.token)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("download: {}", response.status());
    }
    let mut stream = response.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        received += chunk?.len();
    }
    Ok(received)
}
