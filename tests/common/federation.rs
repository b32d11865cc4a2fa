//! Federation test set-ups: a test CA that issues each server's TLS certificate, servers
//! started with federation on (TLS on loopback, each other's names overridden to their
//! addresses), and a hand-written "other server" with its own key that signs whatever the
//! test wants it to (hostile input).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use hearth::{config::Config, listener};
use hearth_federation::ServerKey;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use reqwest::{Method, StatusCode};
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use serde_json::Value;

use super::TestServer;

/// The names and loopback addresses federation tests give their servers.
pub const NAMES: [&str; 3] = ["hearth-a.test", "hearth-b.test", "hearth-c.test"];

/// A certificate authority made for one test, trusted by every server in it.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Hearth test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Self { dir, issuer }
    }

    /// The CA certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `name` and `ip`: (certificate file, key file).
    pub fn issue(&self, name: &str, ip: IpAddr) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(ip));
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let certificate_file = self.dir.path().join(format!("{name}.pem"));
        let key_file = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&certificate_file, certificate.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (certificate_file, key_file)
    }

    /// An HTTPS client that trusts this CA and reaches `name` at `address`.
    pub fn client_for(&self, name: &str, address: SocketAddr) -> reqwest::Client {
        hearth::outbound::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(self.issuer.pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(name, address)
            .build()
            .unwrap()
    }
}

/// A free port on `ip` (bound and released: the server binds it a moment later).
/// A port free on `ip` now, picked at random below the kernel's ephemeral range: a port the
/// kernel handed out (`bind(0)`) and this closed could go to another test process's
/// listener before the server here binds it.
fn free_port(ip: IpAddr) -> u16 {
    use rand::RngExt;
    loop {
        let port = rand::rng().random_range(10_000..30_000);
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// The loopback address of federation test server `index`.
pub fn address_of(index: usize) -> IpAddr {
    format!("127.0.0.{}", index + 2).parse().unwrap()
}

/// Federation settings for server `index` of a test: TLS from `ca`, loopback allowed, and
/// `peers` (server name → federation address) reached without DNS.
pub fn federate(config: &mut Config, ca: &TestCa, name: &str, listen: SocketAddr, peers: &[(String, SocketAddr)]) {
    config.server_name = ruma::OwnedServerName::try_from(name).unwrap();
    let federation = &mut config.federation;
    federation.enabled = true;
    federation.listen = listen;
    let (certificate, key) = ca.issue(name, listen.ip());
    federation.tls_certificate = Some(certificate);
    federation.tls_private_key = Some(key);
    federation.extra_ca_file = Some(ca.ca_file());
    federation.ip_range_allowlist = vec!["127.0.0.0/8".parse().unwrap()];
    federation.destination_overrides = peers
        .iter()
        .map(|(name, address)| (name.clone(), address.to_string()))
        .collect();
    federation.inbound_per_second = 1000.0;
    federation.inbound_burst = 1000;
}

/// `count` servers that federate with each other (and with `extra` peers, such as a
/// [`FakeServer`]), over TLS from `ca`.
pub async fn start_federated(
    count: usize,
    ca: &TestCa,
    extra: &[(String, SocketAddr)],
    adjust: impl Fn(usize, &mut Config),
) -> Vec<TestServer> {
    let listens: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::new(address_of(i), free_port(address_of(i))))
        .collect();
    let mut peers: Vec<(String, SocketAddr)> = (0..count).map(|i| (NAMES[i].to_owned(), listens[i])).collect();
    peers.extend(extra.iter().cloned());
    let mut servers = Vec::new();
    for (index, listen) in listens.iter().enumerate() {
        let peers = &peers;
        let adjust = &adjust;
        servers.push(
            TestServer::start_with(move |config| {
                config.listen = SocketAddr::new(address_of(index), 0);
                federate(config, ca, NAMES[index], *listen, peers);
                adjust(index, config);
            })
            .await,
        );
    }
    servers
}

/// Media served the old way, by media ID: (content type, bytes).
pub type LegacyMedia = Arc<std::sync::Mutex<std::collections::HashMap<String, (String, Vec<u8>)>>>;

/// A server written in the test: its own name and key, its key document served over TLS,
/// and requests signed however the test likes.
pub struct FakeServer {
    /// What it answers to `get_missing_events` (any room, any range).
    pub missing: Arc<std::sync::Mutex<Vec<Value>>>,
    /// Events it serves by ID (`/event/{eventId}`).
    pub events: Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>>,
    /// What it answers to `/state/{roomId}` (any room, any event): `{ pdus, auth_chain }`.
    pub state: Arc<std::sync::Mutex<Value>>,
    /// The PDUs other servers sent it in transactions, in arrival order.
    pub received: Arc<std::sync::Mutex<Vec<Value>>>,
    /// The EDUs other servers sent it, in arrival order.
    pub received_edus: Arc<std::sync::Mutex<Vec<Value>>>,
    /// Media it serves the old way (unauthenticated `/_matrix/media/v3/download`), by media
    /// ID: (content type, bytes). It has no authenticated media endpoints.
    pub legacy_media: LegacyMedia,
    /// While false, transactions are answered 503 (the server is "down").
    pub accepting: Arc<std::sync::atomic::AtomicBool>,
    pub name: String,
    pub key: Arc<ServerKey>,
    pub address: SocketAddr,
    ca_pem: Vec<u8>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeServer {
    pub async fn start(ca: &TestCa, name: &str, ip: IpAddr) -> Self {
        let (key, _) = ServerKey::generate().unwrap();
        let key = Arc::new(key);
        let tcp = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let address = tcp.local_addr().unwrap();
        let (certificate, private_key) = ca.issue(name, ip);
        let tls = hearth::tls::TlsFiles::load(&certificate, &private_key).unwrap();
        let document_key = key.clone();
        let server_name = ruma::OwnedServerName::try_from(name).unwrap();
        let received: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let accepting = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let received_edus: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let (inbox, open, edu_inbox) = (received.clone(), accepting.clone(), received_edus.clone());
        let missing: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let gaps = missing.clone();
        let events: Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>> = Arc::default();
        let state: Arc<std::sync::Mutex<Value>> = Arc::new(std::sync::Mutex::new(serde_json::json!({})));
        let (served, state_at) = (events.clone(), state.clone());
        let origin = name.to_owned();
        let legacy_media: LegacyMedia = Arc::default();
        let old_media = legacy_media.clone();
        let router = axum::Router::new()
            .route(
                "/_matrix/media/v3/download/{server}/{media_id}",
                axum::routing::get(
                    move |axum::extract::Path((_, media_id)): axum::extract::Path<(String, String)>| {
                        let old_media = old_media.clone();
                        async move {
                            match old_media.lock().unwrap().get(&media_id) {
                                Some((content_type, bytes)) => axum::response::Response::builder()
                                    .header("content-type", content_type.as_str())
                                    .header("content-disposition", "inline; filename=\"old.bin\"")
                                    .body(axum::body::Body::from(bytes.clone()))
                                    .unwrap(),
                                None => axum::response::Response::builder()
                                    .status(404)
                                    .body(axum::body::Body::from(r#"{"errcode":"M_NOT_FOUND","error":"no"}"#))
                                    .unwrap(),
                            }
                        }
                    },
                ),
            )
            .route(
                "/_matrix/federation/v1/event/{event_id}",
                axum::routing::get(move |axum::extract::Path(event_id): axum::extract::Path<String>| {
                    let (served, origin) = (served.clone(), origin.clone());
                    async move {
                        match served.lock().unwrap().get(&event_id) {
                            Some(pdu) => (
                                axum::http::StatusCode::OK,
                                axum::Json(serde_json::json!({
                                    "origin": origin, "origin_server_ts": hearth::storage::now_ms(), "pdus": [pdu],
                                })),
                            ),
                            None => (
                                axum::http::StatusCode::NOT_FOUND,
                                axum::Json(serde_json::json!({ "errcode": "M_NOT_FOUND", "error": "no such event" })),
                            ),
                        }
                    }
                }),
            )
            .route(
                "/_matrix/federation/v1/state/{room_id}",
                axum::routing::get(move || {
                    let state_at = state_at.clone();
                    async move { axum::Json(state_at.lock().unwrap().clone()) }
                }),
            )
            .route(
                "/_matrix/federation/v1/get_missing_events/{room_id}",
                axum::routing::post(move || {
                    let gaps = gaps.clone();
                    async move { axum::Json(serde_json::json!({ "events": *gaps.lock().unwrap() })) }
                }),
            )
            .route(
                "/_matrix/federation/v1/send/{txn_id}",
                axum::routing::put(move |axum::Json(body): axum::Json<Value>| {
                    let (inbox, open, edu_inbox) = (inbox.clone(), open.clone(), edu_inbox.clone());
                    async move {
                        if !open.load(std::sync::atomic::Ordering::SeqCst) {
                            return (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(serde_json::json!({})),
                            );
                        }
                        let pdus = body["pdus"].as_array().cloned().unwrap_or_default();
                        inbox.lock().unwrap().extend(pdus);
                        let edus = body["edus"].as_array().cloned().unwrap_or_default();
                        edu_inbox.lock().unwrap().extend(edus);
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(serde_json::json!({ "pdus": {} })),
                        )
                    }
                }),
            )
            .route(
                "/_matrix/key/v2/server",
                axum::routing::get(move || {
                    let key = document_key.clone();
                    let server_name = server_name.clone();
                    async move {
                        let valid_until = ruma::MilliSecondsSinceUnixEpoch(
                            ruma::UInt::new(hearth::storage::now_ms() as u64 + 3_600_000).unwrap(),
                        );
                        let document =
                            hearth_federation::keys::server_key_document(&server_name, &key, &[], valid_until).unwrap();
                        axum::Json(serde_json::to_value(document).unwrap())
                    }
                }),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = Arc::new(listener::ConnectionLimits {
            header_timeout: std::time::Duration::from_secs(10),
            exempt_header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(10),
            per_address: listener::PerAddressLimit::new(0, Vec::new()),
        });
        tokio::spawn(listener::serve(
            listener::CappedListener::new(tcp, 64),
            router,
            limits,
            Some(tls),
            async {
                stopped.await.ok();
            },
        ));
        Self {
            missing,
            events,
            state,
            received,
            received_edus,
            legacy_media,
            accepting,
            name: name.to_owned(),
            key,
            address,
            ca_pem: std::fs::read(ca.ca_file()).unwrap(),
            _stop: stop,
        }
    }

    /// This server as a peer entry for [`start_federated`].
    pub fn peer(&self) -> (String, SocketAddr) {
        (self.name.clone(), self.address)
    }

    /// The `Authorization` header for a request, signed as `origin` with this server's key.
    pub fn authorization(
        &self,
        origin: &str,
        destination: &str,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> String {
        let body = body.map(|body| serde_json::to_vec(body).unwrap()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method.as_str())
            .uri(path)
            .body(body)
            .unwrap();
        let input = XMatrixSigningInput::new(
            origin.try_into().unwrap(),
            destination.try_into().unwrap(),
            self.key.pair(),
        );
        XMatrix::sign_http_request(&request, input).unwrap().to_string()
    }

    /// Sends a request to `server`'s federation listener with the given `Authorization`
    /// header (or none).
    pub async fn send(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        authorization: Option<String>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let address = server.federation_addr.expect("the server federates");
        let url = format!("https://{}:{}{path}", server.server_name(), address.port());
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(server.server_name(), address)
            .build()
            .unwrap();
        let mut request = client.request(method, url);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Signs as this server and sends.
    pub async fn signed(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let authorization = self.authorization(&self.name, server.server_name(), &method, path, body.as_ref());
        self.send(server, method, path, Some(authorization), body).await
    }
}

impl FakeServer {
    /// Hashes and signs an event as this server for a room of `version`; returns its ID and
    /// the signed PDU.
    pub fn sign_event(&self, event: Value, version: &str) -> (String, Value) {
        let rules = ruma::RoomVersionId::try_from(version).unwrap().rules().unwrap();
        let mut object = match ruma::CanonicalJsonValue::try_from(event).unwrap() {
            ruma::CanonicalJsonValue::Object(object) => object,
            _ => panic!("an event is an object"),
        };
        let server: &ruma::ServerName = self.name.as_str().try_into().unwrap();
        let event_id = hearth_federation::finalize_pdu(&mut object, &rules, server, &self.key).unwrap();
        (event_id.to_string(), serde_json::to_value(&object).unwrap())
    }

    /// Joins `user` (of this server) to a room on `server` through make_join and send_join;
    /// returns the join event's ID and the send_join answer.
    pub async fn join(&self, server: &TestServer, room_id: &str, user: &str, version: &str) -> (String, Value) {
        let (status, made) = self
            .signed(
                server,
                Method::GET,
                &format!("/_matrix/federation/v1/make_join/{room_id}/{user}?ver={version}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "make_join: {made}");
        assert_eq!(made["room_version"], version);
        let mut event = made["event"].clone();
        event["origin_server_ts"] = Value::from(hearth::storage::now_ms());
        let (event_id, pdu) = self.sign_event(event, version);
        let (status, joined) = self
            .signed(
                server,
                Method::PUT,
                &format!("/_matrix/federation/v2/send_join/{room_id}/{event_id}"),
                Some(pdu),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send_join: {joined}");
        (event_id, joined)
    }

    /// Sends a transaction of `edus` only to `server`; returns the status and answer.
    pub async fn send_edus(&self, server: &TestServer, txn_id: &str, edus: Vec<Value>) -> (StatusCode, Value) {
        let body = serde_json::json!({
            "origin": self.name,
            "origin_server_ts": hearth::storage::now_ms(),
            "pdus": [],
            "edus": edus,
        });
        self.signed(
            server,
            Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn_id}"),
            Some(body),
        )
        .await
    }

    /// Sends a transaction of `pdus` to `server`; returns the status and answer.
    pub async fn send_transaction(&self, server: &TestServer, txn_id: &str, pdus: Vec<Value>) -> (StatusCode, Value) {
        let body = serde_json::json!({
            "origin": self.name,
            "origin_server_ts": hearth::storage::now_ms(),
            "pdus": pdus,
        });
        self.signed(
            server,
            Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn_id}"),
            Some(body),
        )
        .await
    }
}

impl FakeServer {
    /// Waits until the PDUs received satisfy `done` (up to 20 s); returns them.
    pub async fn wait_for(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..200 {
            {
                let received = self.received.lock().unwrap();
                if done(&received) {
                    return received.clone();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("not received in time: {:?}", self.received.lock().unwrap());
    }

    /// The bodies of the `m.room.message` PDUs received, in order.
    pub fn message_bodies(&self) -> Vec<String> {
        message_bodies(&self.received.lock().unwrap())
    }
}

/// The bodies of the `m.room.message` events among `pdus`, in order.
pub fn message_bodies(pdus: &[Value]) -> Vec<String> {
    pdus.iter()
        .filter(|pdu| pdu["type"] == "m.room.message")
        .filter_map(|pdu| pdu["content"]["body"].as_str().map(str::to_owned))
        .collect()
}
