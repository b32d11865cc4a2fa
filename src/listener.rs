//! The TCP listener, with a cap on open connections so that clients can never take the file
//! descriptors the database and the data directory need. Past the cap, new connections wait
//! in the kernel's accept queue until one closes, instead of being accepted and starving
//! SQLite (`unable to open database file`) or failing in `accept` with `EMFILE`. A second,
//! per-address cap keeps one host from taking all of them.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutBody;

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
                        _address_slot: None,
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

/// A client connection; its slots under the caps free when it is dropped.
pub struct CappedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    _address_slot: Option<AddressSlot>,
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

/// Probes after 60 s of silence, every 15 s, 4 times: a dead peer is dropped after ~2 min.
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(15))
    .with_retries(4);

/// What a connection may take: time for headers, for each piece of a body, and how many
/// connections one address may hold.
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    /// The header (and idle keep-alive) timeout of exempt addresses: a reverse proxy keeps
    /// idle connections in a pool, and must never find one closed under it.
    pub exempt_header_timeout: Duration,
    pub body_timeout: Duration,
    pub per_address: Arc<PerAddressLimit>,
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets every open connection
/// finish the request it is on (long-polls and WebSockets are woken by the caller) and returns.
pub async fn serve(
    mut listener: CappedListener,
    router: axum::Router,
    limits: Arc<ConnectionLimits>,
    tls: Option<Arc<crate::tls::TlsFiles>>,
    shutdown: impl Future<Output = ()>,
) {
    use axum::serve::Listener as _;
    use tower::Service as _;

    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let (closing, closing_seen) = tokio::sync::watch::channel(());
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let mut stream = stream;
        let Some(slot) = limits.per_address.admit(address.ip()) else {
            tracing::debug!(%address, "too many connections from one address");
            connections.spawn(refuse(stream));
            continue;
        };
        let header_timeout = if slot.exempt {
            limits.exempt_header_timeout
        } else {
            limits.header_timeout
        };
        // The slot travels with the socket, into a WebSocket after an upgrade too.
        stream._address_slot = Some(slot);
        // Small frames (WebSocket pushes, sync responses) go out at once: Nagle's algorithm
        // with delayed ACKs would hold some back for 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        // A peer that vanished without closing (a phone out of coverage) is noticed within
        // about two minutes even while its long-poll or WebSocket has nothing to send.
        if let Err(error) = socket2::SockRef::from(&stream.inner).set_tcp_keepalive(&KEEPALIVE) {
            tracing::debug!(%error, "could not set TCP keepalive");
        }
        let Ok(service) = make_service.call(address).await;
        let connection = Connection {
            service,
            body_timeout: limits.body_timeout,
            header_timeout,
            closing: closing_seen.clone(),
            address,
        };
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        connections.spawn(async move {
            match acceptor {
                None => connection.serve(stream).await,
                // The handshake gets the same time as the request headers would.
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => connection.serve(stream).await,
                    Ok(Err(error)) => tracing::debug!(%error, %address, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%address, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    let _ = closing.send(());
    connections.close();
    // A client that stopped reading a response must not hold the shutdown open.
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open at shutdown were dropped"
        );
    }
}

/// One accepted connection, before it is served (over TLS or not).
struct Connection {
    service: axum::middleware::AddExtension<axum::Router, axum::extract::ConnectInfo<SocketAddr>>,
    body_timeout: Duration,
    header_timeout: Duration,
    closing: tokio::sync::watch::Receiver<()>,
    address: SocketAddr,
}

impl Connection {
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            service,
            body_timeout,
            header_timeout,
            mut closing,
            address,
        } = self;
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let request = request.map(|body| axum::body::Body::new(TimeoutBody::new(body_timeout, body)));
            tower::ServiceExt::oneshot(service.clone(), request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = closing.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, %address, "connection ended with an error");
        }
    }
}

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Answers a connection over its address's limit with a 429 and closes it.
async fn refuse(mut stream: CappedStream) {
    use tokio::io::AsyncWriteExt as _;
    const BODY: &str =
        r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many connections from your address","retry_after_ms":5000}"#;
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.inner.write_all(response.as_bytes()).await?;
        stream.inner.shutdown().await?;
        // Read what the client sent before closing: unread bytes would make the kernel reset
        // the connection, and the reset can overtake the answer.
        let mut sink = [0u8; 1024];
        while tokio::io::AsyncReadExt::read(&mut stream.inner, &mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Counts the connections open from each address. The map holds only addresses with a
/// connection open, so it is never larger than the listener's cap.
pub struct PerAddressLimit {
    max: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddressLimit {
    /// `max` = 0: no limit.
    pub fn new(max: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self {
            max,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `address`, or `None` when it has its fill.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let address = canonical(address);
        if self.exempt.iter().any(|net| net.contains(&address)) {
            return Some(AddressSlot {
                limit: None,
                address,
                exempt: true,
            });
        }
        if self.max == 0 {
            return Some(AddressSlot {
                limit: None,
                address,
                exempt: false,
            });
        }
        let mut open = self.open.lock().expect("the connection map is never poisoned");
        let count = open.entry(address).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            limit: Some(self.clone()),
            address,
            exempt: false,
        })
    }
}

/// An IPv4 client reached over an IPv6 socket counts as its IPv4 address; an IPv6 client as
/// its /64 (one host usually has a whole /64 to pick addresses from).
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        IpAddr::V4(_) => address,
    }
}

/// One connection's place under its address's limit, given back when dropped.
pub struct AddressSlot {
    limit: Option<Arc<PerAddressLimit>>,
    address: IpAddr,
    /// From an exempt address (a reverse proxy).
    exempt: bool,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(limit) = &self.limit else { return };
        let mut open = limit.open.lock().expect("the connection map is never poisoned");
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Whether reading a body failed because the client stopped sending it
/// (`limits.body_timeout_secs`); the error may come wrapped in axum's.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{PerAddressLimit, connection_cap};

    #[test]
    fn an_address_gets_its_share_and_no_more() {
        let limit = PerAddressLimit::new(2, vec!["10.0.0.0/8".parse().unwrap()]);
        let a = "192.0.2.1".parse().unwrap();
        let first = limit.admit(a).expect("first");
        let _second = limit.admit(a).expect("second");
        assert!(limit.admit(a).is_none());
        // The same address over IPv6 is the same client.
        assert!(limit.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
        assert!(limit.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert!(limit.admit(a).is_some());
        // One IPv6 /64 is one host.
        let _v6 = limit.admit("2001:db8::1".parse().unwrap()).expect("first");
        let _v6b = limit.admit("2001:db8::2".parse().unwrap()).expect("second");
        assert!(limit.admit("2001:db8::ffff:1".parse().unwrap()).is_none());
        assert!(limit.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        // Exempt addresses are not counted at all.
        let proxy = "10.1.2.3".parse().unwrap();
        let slots: Vec<_> = (0..10).map(|_| limit.admit(proxy).expect("exempt")).collect();
        drop(slots);
        assert!(limit.open.lock().unwrap().get(&proxy).is_none());
    }

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
