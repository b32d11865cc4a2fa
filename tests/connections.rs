//! The cap on open client connections (`limits.max_connections`): past it, a new connection
//! waits until one closes instead of being served at the database's expense.

use std::time::Duration;

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
