//! A fake application service on loopback: it records every transaction it accepts (checking
//! the homeserver's `hs_token`), can be taken down and brought back, answers pings, user and
//! alias queries (creating what it is asked for through the homeserver, as a bridge does) and
//! third-party lookups. Its registration file is written for the homeserver to load.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post, put},
};
use serde_json::{Value, json};

/// What a registration declares beyond its namespaces.
#[derive(Clone, Default)]
pub struct Options {
    pub receive_ephemeral: bool,
    pub msc3202: bool,
    pub msc4190: bool,
    /// `rate_limited: false`
    pub unlimited: bool,
    pub protocols: Vec<String>,
}

pub struct FakeAppservice {
    pub id: String,
    pub as_token: String,
    pub hs_token: String,
    /// The user namespace prefix: `@{prefix}_*` exclusive, aliases `#{prefix}_*` exclusive.
    pub prefix: String,
    pub url: String,
    pub registration_path: PathBuf,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Shared {
    hs_token: String,
    as_token: String,
    prefix: String,
    /// The homeserver's base URL, for queries the fake answers by creating things.
    homeserver: Mutex<String>,
    /// (txn ID, body) of each accepted transaction request, in arrival order (retries too).
    accepted: Mutex<Vec<(String, Value)>>,
    /// Transaction requests refused while down, and with a wrong token.
    refused: AtomicUsize,
    wrong_token: AtomicUsize,
    down: AtomicBool,
    pings: Mutex<Vec<Value>>,
    user_queries: Mutex<Vec<String>>,
    alias_queries: Mutex<Vec<String>>,
}

impl FakeAppservice {
    pub async fn start(id: &str, prefix: &str, options: Options) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            hs_token: format!("hs-{id}-secret"),
            as_token: format!("as-{id}-secret"),
            prefix: prefix.to_owned(),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
            .route("/_matrix/app/v1/users/{user}", get(user_query))
            .route("/_matrix/app/v1/rooms/{alias}", get(alias_query))
            .route("/_matrix/app/v1/ping", post(ping))
            .route("/_matrix/app/v1/thirdparty/protocol/{protocol}", get(protocol))
            .route("/_matrix/app/v1/thirdparty/user/{protocol}", get(thirdparty_users))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let registration_path = dir.path().join(format!("{id}.yaml"));
        let protocols = if options.protocols.is_empty() {
            String::new()
        } else {
            format!("protocols: [{}]\n", options.protocols.join(", "))
        };
        let yaml = format!(
            "id: {id}\nurl: {url}\nas_token: {}\nhs_token: {}\nsender_localpart: {prefix}bot\n\
             namespaces:\n  users:\n    - exclusive: true\n      regex: '@{prefix}_.*'\n  \
             aliases:\n    - exclusive: true\n      regex: '#{prefix}_.*'\n  rooms: []\n\
             rate_limited: {}\nreceive_ephemeral: {}\norg.matrix.msc3202: {}\nio.element.msc4190: {}\n{protocols}",
            shared.as_token,
            shared.hs_token,
            !options.unlimited,
            options.receive_ephemeral,
            options.msc3202,
            options.msc4190,
        );
        std::fs::write(&registration_path, yaml).unwrap();
        Self {
            id: id.to_owned(),
            as_token: shared.as_token.clone(),
            hs_token: shared.hs_token.clone(),
            prefix: prefix.to_owned(),
            url,
            registration_path,
            shared,
            _dir: dir,
        }
    }

    /// Tells the fake where the homeserver is (for the queries it answers by creating).
    pub fn attach(&self, homeserver: &str) {
        *self.shared.homeserver.lock().unwrap() = homeserver.to_owned();
    }

    /// Down: every transaction is answered 503 (and not recorded).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    pub fn wrong_token_requests(&self) -> usize {
        self.shared.wrong_token.load(Ordering::SeqCst)
    }

    /// Every accepted transaction request: (txn ID, body), retries included.
    pub fn accepted(&self) -> Vec<(String, Value)> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// The events of every accepted transaction, in order (a retried one counted once).
    pub fn events(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.accepted()
            .into_iter()
            .filter(|(txn, _)| seen.insert(txn.clone()))
            .flat_map(|(_, body)| body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The `ephemeral` items of every accepted transaction.
    pub fn ephemeral(&self) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .flat_map(|(_, body)| body["ephemeral"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn pings(&self) -> Vec<Value> {
        self.shared.pings.lock().unwrap().clone()
    }

    pub fn user_queries(&self) -> Vec<String> {
        self.shared.user_queries.lock().unwrap().clone()
    }

    pub fn alias_queries(&self) -> Vec<String> {
        self.shared.alias_queries.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until `done` holds for the accepted transactions.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen within 15 s; accepted: {:#?}",
                self.accepted()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bodies of the message events received, in order.
    pub fn message_bodies(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|event| event["type"] == "m.room.message")
            .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn transaction(
    State(shared): State<Arc<Shared>>,
    Path(txn): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if bearer(&headers) != Some(shared.hs_token.as_str()) {
        shared.wrong_token.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
    }
    if shared.down.load(Ordering::SeqCst) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    shared.accepted.lock().unwrap().push((txn, body));
    (StatusCode::OK, Json(json!({})))
}

async fn ping(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if bearer(&headers) != Some(shared.hs_token.as_str()) {
        return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
    }
    shared.pings.lock().unwrap().push(body);
    (StatusCode::OK, Json(json!({})))
}

/// Creates `@{prefix}_known*` users when asked (as a bridge does); others do not exist.
async fn user_query(State(shared): State<Arc<Shared>>, Path(user): Path<String>) -> (StatusCode, Json<Value>) {
    shared.user_queries.lock().unwrap().push(user.clone());
    let localpart = user
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    if !localpart.starts_with(&format!("{}_known", shared.prefix)) {
        return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })));
    }
    let homeserver = shared.homeserver.lock().unwrap().clone();
    let response = reqwest::Client::new()
        .post(format!("{homeserver}/_matrix/client/v3/register"))
        .bearer_auth(&shared.as_token)
        .json(&json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "the fake's registration of {user}");
    (StatusCode::OK, Json(json!({})))
}

/// Creates a room for `#{prefix}_room*` aliases when asked; other aliases do not exist.
async fn alias_query(State(shared): State<Arc<Shared>>, Path(alias): Path<String>) -> (StatusCode, Json<Value>) {
    shared.alias_queries.lock().unwrap().push(alias.clone());
    let localpart = alias
        .trim_start_matches('#')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    if !localpart.starts_with(&format!("{}_room", shared.prefix)) {
        return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })));
    }
    let homeserver = shared.homeserver.lock().unwrap().clone();
    let response = reqwest::Client::new()
        .post(format!("{homeserver}/_matrix/client/v3/createRoom"))
        .bearer_auth(&shared.as_token)
        .json(&json!({ "room_alias_name": localpart, "preset": "public_chat" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "the fake's room for {alias}");
    (StatusCode::OK, Json(json!({})))
}

async fn protocol(Path(protocol): Path<String>) -> Json<Value> {
    Json(json!({
        "user_fields": ["nick"],
        "location_fields": ["channel"],
        "icon": "mxc://example.org/icon",
        "field_types": {
            "nick": { "regexp": ".*", "placeholder": "nick" },
            "channel": { "regexp": "#.*", "placeholder": "#channel" },
        },
        "instances": [{ "desc": format!("{protocol} network"), "network_id": "net1", "fields": {} }],
    }))
}

async fn thirdparty_users(State(shared): State<Arc<Shared>>, Path(protocol): Path<String>) -> Json<Value> {
    Json(json!([{
        "userid": format!("@{}_remote:localhost", shared.prefix),
        "protocol": protocol,
        "fields": { "nick": "remote" },
    }]))
}
