//! The black-box test harness: a real Hearth on a real socket, backed by the database the
//! environment asks for.
//!
//! `HEARTH_TEST_DATABASE=sqlite` (the default) gives each server a fresh SQLite file;
//! `HEARTH_TEST_DATABASE=postgres` gives each a fresh PostgreSQL database on
//! `HEARTH_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`). A requested backend
//! that cannot be reached fails the test: it is never silently skipped.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod appservice;
pub mod federation;
pub mod keys;
pub mod media;
pub mod rooms;
pub mod schema;

use std::net::SocketAddr;

use hearth::{config::Config, server::Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;

pub const SHARED_SECRET: &str = "test shared secret";
pub const PASSWORD: &str = "correct horse battery staple";

/// Which backend this run tests.
pub fn backend() -> String {
    std::env::var("HEARTH_TEST_DATABASE").unwrap_or_else(|_| "sqlite".to_owned())
}

/// A URL for a database no other test uses.
pub async fn fresh_database_url(dir: &std::path::Path) -> String {
    match backend().as_str() {
        "sqlite" => format!("sqlite://{}?mode=rwc", dir.join("hearth.db").display()),
        "postgres" => {
            let base = std::env::var("HEARTH_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
            let name = format!("hearth_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&format!("{base}/postgres"))
                .await
                .expect("HEARTH_TEST_DATABASE=postgres but PostgreSQL is unreachable");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("create test database");
            format!("{base}/{name}")
        }
        other => panic!("HEARTH_TEST_DATABASE must be sqlite or postgres, not {other}"),
    }
}

/// Which media store this run tests: `HEARTH_TEST_MEDIA=local` (the default) or `s3`, on the
/// S3-compatible server at `HEARTH_TEST_S3_ENDPOINT` (default `http://127.0.0.1:9100`); each
/// server gets a fresh bucket.
pub fn media_backend() -> String {
    std::env::var("HEARTH_TEST_MEDIA").unwrap_or_else(|_| "local".to_owned())
}

async fn fresh_media_store(config: &mut Config) {
    match media_backend().as_str() {
        "local" => {}
        "s3" => {
            let endpoint =
                std::env::var("HEARTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9100".to_owned());
            let bucket = format!("hearth-test-{}", uuid::Uuid::new_v4().simple());
            // The S3 server must be up: a requested backend is never silently skipped.
            let response = reqwest::Client::new()
                .put(format!("{endpoint}/{bucket}"))
                .send()
                .await
                .expect("HEARTH_TEST_MEDIA=s3 but the S3 server is unreachable");
            assert!(response.status().is_success(), "create bucket: {}", response.status());
            config.media.s3 = Some(hearth::config::S3Config {
                endpoint: Some(endpoint),
                bucket,
                region: Some("us-east-1".to_owned()),
                access_key_id: Some("hearth-test".to_owned()),
                secret_access_key: Some("hearth-test-secret".to_owned()),
                prefix: "media".to_owned(),
            });
        }
        other => panic!("HEARTH_TEST_MEDIA must be local or s3, not {other}"),
    }
}

/// A config for tests: loopback, a random port, generous rate limits.
pub fn test_config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.registration.shared_secret = Some(SHARED_SECRET.to_owned());
    // Tests send, join and create quickly; the rate limit tests set their own limits.
    let generous = hearth::config::RateLimit {
        per_second: 1000.0,
        burst_count: 1000,
    };
    let limits = &mut config.rate_limits;
    for limit in [
        &mut limits.message,
        &mut limits.room_creation,
        &mut limits.invites,
        &mut limits.invites_received,
        &mut limits.joins,
        &mut limits.media_upload,
        &mut limits.to_device,
        &mut limits.preview_url,
    ] {
        *limit = generous;
    }
    limits.login.burst_count = 1000;
    limits.registration.burst_count = 1000;
    config.log = "warn".to_owned();
    config
}

/// A server stopped by [`TestServer::stop_for_now`]: its database and config, to start again.
pub struct Stopped {
    config: Config,
    dir: tempfile::TempDir,
}

impl Stopped {
    pub async fn start(self) -> TestServer {
        TestServer::launch(self.config, self.dir).await
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The federation listener, when the test turned federation on.
    pub federation_addr: Option<SocketAddr>,
    pub base: String,
    pub http: reqwest::Client,
    /// The running server's services (to reach what has no HTTP endpoint, such as the
    /// appservice registrations' reload).
    pub services: hearth::services::Services,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    config: Config,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let (config, dir) = Self::prepare(adjust).await;
        Self::launch(config, dir).await
    }

    /// A fresh data directory and database, and the test config pointing at them.
    async fn prepare(adjust: impl FnOnce(&mut Config)) -> (Config, tempfile::TempDir) {
        // Hearth's reqwest is built without a default TLS provider; tests' clients share it.
        hearth::outbound::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.data_dir = dir.path().to_owned();
        config.database.url = Some(fresh_database_url(dir.path()).await);
        fresh_media_store(&mut config).await;
        adjust(&mut config);
        config.validate().expect("test config is valid");
        (config, dir)
    }

    /// Two servers side by side, each with its own name, signing key, database and loopback
    /// address (`hearth-a.test` on 127.0.0.2, `hearth-b.test` on 127.0.0.3): what federation
    /// tests start from. `adjust` sees each config with its server's index (0 or 1).
    pub async fn start_pair(adjust: impl Fn(usize, &mut Config)) -> (Self, Self) {
        let start = |index: usize| {
            let adjust = &adjust;
            Self::start_with(move |config| {
                config.server_name =
                    ruma::OwnedServerName::try_from(["hearth-a.test", "hearth-b.test"][index]).unwrap();
                config.listen = format!("127.0.0.{}:0", index + 2).parse().unwrap();
                adjust(index, config);
            })
        };
        (start(0).await, start(1).await)
    }

    pub fn server_name(&self) -> &str {
        self.config.server_name.as_str()
    }

    /// Stops the server and starts it again on the same database (on a new port).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// [`restart`](Self::restart) with the config changed by `adjust`.
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut stopped = self.stop_for_now().await;
        adjust(&mut stopped.config);
        stopped.start().await
    }

    /// Stops the server, keeping its database and config to start it again later.
    pub async fn stop_for_now(mut self) -> Stopped {
        self.shutdown_and_wait().await;
        Stopped {
            config: self.config.clone(),
            dir: std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap()),
        }
    }

    /// A server whose committed changes `subscriber` follows from the start, as federation
    /// senders and appservice queues will.
    pub async fn start_observed(subscriber: &std::sync::Arc<dyn hearth::base::Subscriber>) -> Self {
        let (config, dir) = Self::prepare(|_| {}).await;
        let server = Server::bind(config.clone()).await.expect("server starts");
        server.state().subscribe(std::sync::Arc::downgrade(subscriber));
        Self::serve(server, config, dir)
    }

    async fn launch(config: Config, dir: tempfile::TempDir) -> Self {
        let server = Server::bind(config.clone()).await.expect("server starts");
        Self::serve(server, config, dir)
    }

    fn serve(server: Server, config: Config, dir: tempfile::TempDir) -> Self {
        let addr = server.local_addr();
        let federation_addr = server.federation_addr();
        let services = server.state().services.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async {
                    rx.await.ok();
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            federation_addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            services,
            shutdown: Some(tx),
            task: Some(task),
            config,
            _dir: dir,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown_and_wait().await;
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Sends a request; returns the status and the JSON body (Null when empty or not JSON).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method_name = method.to_string();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is sent");
        checked(method_name, path, response).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Sends raw bytes as the body.
    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        let method_name = method.to_string();
        let mut request = self.http.request(method, format!("{}{path}", self.base)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        checked(method_name, path, response).await
    }

    /// Registers `username` through the dummy flow and returns its session.
    pub async fn register(&self, username: &str) -> Session {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({ "username": username, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {username}: {body}");
        Session::from_json(&body)
    }

    /// Logs in with the password and returns the new session.
    pub async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": username },
                "password": password,
            }),
        )
        .await
    }

    /// Registers through the shared-secret admin API.
    pub async fn register_admin(&self, username: &str, admin: bool) -> Session {
        let (status, body) = self.get("/_synapse/admin/v1/register", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let nonce = body["nonce"].as_str().unwrap().to_owned();
        let mac = shared_secret_mac(SHARED_SECRET, &nonce, username, PASSWORD, admin);
        let (status, body) = self
            .post(
                "/_synapse/admin/v1/register",
                None,
                json!({ "nonce": nonce, "username": username, "password": PASSWORD, "admin": admin, "mac": mac }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Session::from_json(&body)
    }
}

/// Reads a response as JSON (Null when empty or not JSON) after checking it against the spec's
/// schema for the endpoint and status ([`schema::check`]).
async fn checked(method: String, path: &str, response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    schema::check(&method, path, status.as_u16(), &body, is_json);
    (status, body)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn shared_secret_mac(secret: &str, nonce: &str, username: &str, password: &str, admin: bool) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(username.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Session {
    pub fn from_json(body: &Value) -> Self {
        Self {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            access_token: body["access_token"].as_str().expect("access_token").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

/// Asserts a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(result.0, status, "status of {}", result.1);
    assert_eq!(result.1["errcode"], errcode, "errcode of {}", result.1);
    assert!(result.1["error"].is_string(), "error message in {}", result.1);
}

/// The password stage of user-interactive auth.
pub fn password_auth(user_id: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user_id },
        "password": PASSWORD,
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}
