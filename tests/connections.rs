//! The cap on open client connections (`limits.max_connections`): past it, a new connection
//! waits until one closes instead of being served at the database's expense.
//! Slow and idle clients are closed (`limits.header_timeout_secs`, `limits.body_timeout_secs`) and
//! one address cannot hold more than `limits.max_connections_per_ip`.

use std::time::{Duration, Instant};

use crate::common::TestServer;
use reqwest::StatusCode;

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let server = TestServer::start_with(|config| config.limits.max_connections = 2).await;
    // Two clients connect and say nothing: they hold both slots.
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let client = reqwest::Client::new();
    let versions = format!("{}/_matrix/client/versions", server.base);
    let waiting = client.get(&versions).timeout(Duration::from_millis(500)).send().await;
    assert!(
        waiting.is_err_and(|error| error.is_timeout()),
        "a third connection was served"
    );

    // One hangs up: the next client is served.
    drop(first);
    let response = client
        .get(&versions)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Opens a raw connection, optionally from another loopback address (each counts as its own
/// host for the per-address limit).
async fn raw_connection(server: &TestServer, from: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// The status of `GET /versions` from another loopback address.
async fn versions_from(server: &TestServer, from: [u8; 4]) -> StatusCode {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    client
        .get(format!("{}/_matrix/client/versions", server.base))
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits for the server to close `stream`, returning what it sent first and how long it took.
async fn until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> (String, Duration) {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buffer)).await {
            Err(_) => panic!("the connection was still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), started.elapsed()),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

#[tokio::test]
async fn a_client_that_dribbles_headers_is_closed_while_others_are_served() {
    let server = TestServer::start_with(|config| {
        config.limits.header_timeout_secs = 2;
        config.limits.connection_limit_exempt = Vec::new();
    })
    .await;
    // Ten connections send a request's headers one byte every 300 ms: without a deadline
    // each would hold its connection for as long as it likes.
    let mut dribblers = Vec::new();
    for _ in 0..10 {
        let (mut reader, mut writer) = raw_connection(&server, [127, 0, 0, 1]).await.into_split();
        let writing = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for byte in b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n" {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let closed = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let started = Instant::now();
            let mut buffer = [0u8; 1024];
            while let Ok(Ok(read)) = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buffer)).await {
                if read == 0 {
                    return Some(started.elapsed());
                }
            }
            None
        });
        dribblers.push((writing, closed));
    }
    // Meanwhile an ordinary client is served at once.
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    for (writing, closed) in dribblers {
        let after = closed
            .await
            .unwrap()
            .expect("a dribbling connection was closed within 10 s");
        assert!(after >= Duration::from_millis(1500), "closed too early: {after:?}");
        writing.abort();
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(|config| {
        config.limits.header_timeout_secs = 1;
        config.limits.exempt_idle_timeout_secs = 5;
        config.limits.connection_limit_exempt = vec!["127.0.0.3/32".parse().unwrap()];
    })
    .await;
    // A reverse proxy (an exempt address) keeps its idle connections longer: its pool must
    // not meet one closed under it.
    let mut proxy = raw_connection(&server, [127, 0, 0, 3]).await;
    proxy
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let proxy_closed = tokio::spawn(async move { until_closed(&mut proxy, Duration::from_secs(10)).await });
    let mut stream = raw_connection(&server, [127, 0, 0, 1]).await;
    stream
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The response comes, then the connection stays open for the next request only as long
    // as the header timeout allows.
    let (received, after) = until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(after >= Duration::from_millis(800), "closed at once: {after:?}");
    assert!(after < Duration::from_secs(4), "{after:?}");
    let (received, after) = proxy_closed.await.unwrap();
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        after >= Duration::from_secs(4),
        "the proxy's connection closed after {after:?}"
    );
}

#[tokio::test]
async fn long_polls_and_websockets_outlive_the_header_timeout() {
    let server = TestServer::start_with(|config| config.limits.header_timeout_secs = 1).await;
    let alice = server.register("alice").await;
    let (status, first) = server.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    // A long-poll that waits three header timeouts still gets its answer.
    let started = Instant::now();
    let since = first["next_batch"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=3000");
    let (status, _) = server.get(&path, alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(2500));

    // A WebSocket that says nothing for three header timeouts is still open.
    let mut socket = crate::websocket::connect(&server, &alice, "").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pong = crate::websocket::request(&mut socket, "p", "ping", serde_json::json!({})).await;
    assert_eq!(pong["result"], serde_json::json!({}));
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = TestServer::start_with(|config| {
        config.limits.max_connections_per_ip = 3;
        config.limits.connection_limit_exempt = vec!["127.0.0.3/32".parse().unwrap()];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw_connection(&server, [127, 0, 0, 1]).await);
    }
    // A fourth from the same address is told why and closed.
    let mut fourth = raw_connection(&server, [127, 0, 0, 1]).await;
    let (received, _) = until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 429"), "{received}");
    let body = &received[received.find("\r\n\r\n").unwrap() + 4..];
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].is_u64());

    // Other addresses are served, and an exempt one (a reverse proxy) has no limit.
    for from in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        assert_eq!(versions_from(&server, from).await, StatusCode::OK);
    }
    let mut exempt = Vec::new();
    for _ in 0..5 {
        exempt.push(raw_connection(&server, [127, 0, 0, 3]).await);
    }
    assert_eq!(versions_from(&server, [127, 0, 0, 3]).await, StatusCode::OK);

    // When one of the first address's connections closes, it may open another.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(versions_from(&server, [127, 0, 0, 1]).await, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(|config| {
        config.limits.body_timeout_secs = 1;
        config.limits.connection_limit_exempt = Vec::new();
    })
    .await;
    let mut stream = raw_connection(&server, [127, 0, 0, 1]).await;
    // A login whose body promises 100 bytes and sends 10.
    stream
        .write_all(
            b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":\"m",
        )
        .await
        .unwrap();
    let (received, after) = until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(received.contains("M_UNKNOWN"), "{received}");
    assert!(after >= Duration::from_millis(800), "{after:?}");
}

#[tokio::test]
async fn a_websocket_keeps_its_place_under_the_per_address_limit() {
    let server = TestServer::start_with(|config| {
        config.limits.max_connections_per_ip = 2;
        config.limits.connection_limit_exempt = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let alice = server.register("alice").await;
    // A WebSocket from 127.0.0.2: after the upgrade it is still one of that address's two.
    let url = format!(
        "ws://{}/_matrix/client/unstable/io.hearth.websocket/stream?access_token={}",
        server.addr, alice.access_token
    );
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "m.json".parse().unwrap());
    let tcp = raw_connection(&server, [127, 0, 0, 2]).await;
    let (_socket, _) = tokio_tungstenite::client_async(request, tcp).await.expect("upgraded");
    let _second = raw_connection(&server, [127, 0, 0, 2]).await;
    let mut third = raw_connection(&server, [127, 0, 0, 2]).await;
    let (received, _) = until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 429"), "{received}");
}
