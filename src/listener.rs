//! The TCP listener, with a cap on open connections so that clients can never take the file
//! descriptors the database and the data directory need. Past the cap, new connections wait
//! in the kernel's accept queue until one closes, instead of being accepted and starving
//! SQLite (`unable to open database file`) or failing in `accept` with `EMFILE`.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// File descriptors kept back from clients: the database pool, SQLite's WAL and journal
/// files, logs, media and outgoing requests.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard limit (as Synapse does at start) and
/// returns the soft limit in force, or `None` where it cannot be read.
pub fn raise_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// How many client connections may be open at once: `configured` (0 = no choice made), and
/// never more than the file limit leaves after the reserve.
pub fn connection_cap(configured: usize, file_limit: Option<u64>, database_connections: u32) -> usize {
    let reserve = RESERVED_FDS + 2 * u64::from(database_connections);
    let from_files = file_limit.map_or(usize::MAX, |limit| {
        usize::try_from(limit.saturating_sub(reserve).max(16)).unwrap_or(usize::MAX)
    });
    if configured == 0 {
        from_files
    } else {
        configured.min(from_files)
    }
}

/// A listener that holds at most `cap` connections open.
pub struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl CappedListener {
    pub fn new(inner: TcpListener, cap: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(cap.min(Semaphore::MAX_PERMITS))),
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let stream = CappedStream {
                        inner: stream,
                        _permit: permit,
                    };
                    return (stream, address);
                }
                Err(error) => {
                    // A connection that failed before we took it, or a transient shortage of
                    // descriptors: neither is worth stopping the server for.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A client connection; its slot under the cap frees when it is dropped.
pub struct CappedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl CappedStream {
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::connection_cap;

    #[test]
    fn the_cap_leaves_descriptors_for_the_database() {
        assert_eq!(connection_cap(0, Some(20_000), 16), 20_000 - 256 - 32);
        assert_eq!(connection_cap(1000, Some(20_000), 16), 1000);
        assert_eq!(connection_cap(50_000, Some(20_000), 16), 20_000 - 256 - 32);
        assert_eq!(connection_cap(0, None, 16), usize::MAX);
        // A tiny file limit still lets some clients in.
        assert_eq!(connection_cap(0, Some(100), 16), 16);
    }
}
