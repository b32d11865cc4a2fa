//! A minimal HTTP/1.1 receiver on loopback for what servers push to us (a push gateway's
//! notifications, an appservice's transactions): keep-alive, JSON bodies with a
//! Content-Length, each handed with its request path and arrival time to a callback that
//! picks the answer.

use std::{sync::Arc, time::Instant};

use anyhow::Result;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Called for each request: (path, JSON body, arrival) → the status and JSON answer.
pub type Handler = Arc<dyn Fn(&str, Value, Instant) -> (u16, &'static str) + Send + Sync>;

/// Listens on `address` (`127.0.0.1:0` for any port); returns the base URL.
pub async fn start(address: &str, handler: Handler) -> Result<String> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, handler.clone()));
        }
    });
    Ok(format!("http://{bound}"))
}

async fn serve(mut stream: TcpStream, handler: Handler) -> Result<()> {
    let mut buffer = Vec::new();
    loop {
        let header_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 8192];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let length: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        while buffer.len() < header_end + length {
            let mut chunk = [0; 8192];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        let arrived = Instant::now();
        let body: Value = serde_json::from_slice(&buffer[header_end..header_end + length]).unwrap_or_default();
        buffer.drain(..header_end + length);
        let (status, answer) = handler(&path, body, arrived);
        let response = format!(
            "HTTP/1.1 {status} -\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}
