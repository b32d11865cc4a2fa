//! A minimal Matrix client over the standard client-server API: registration (shared-secret
//! admin API or open registration), rooms, sending, `/sync` and `/messages`. Nothing
//! Hearth-specific, so the same runs measure any homeserver.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// How accounts are made.
#[derive(Clone, Debug)]
pub enum Registration {
    /// `/_synapse/admin/v1/register` with this shared secret (Synapse, Hearth).
    SharedSecret(String),
    /// Open `/register` with `m.login.dummy`.
    Open,
}

#[derive(Clone)]
pub struct Server {
    pub base: String,
    pub http: Client,
    pub registration: Registration,
}

#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

/// A lean sync filter: timelines only, no presence, lazy members.
pub const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":50},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}"#;

impl Server {
    pub fn new(base: &str, registration: Registration, connections_per_host: usize) -> Result<Self> {
        let http = Client::builder()
            .pool_max_idle_per_host(connections_per_host)
            .timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            registration,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        // Rate limits are meant to be off for benchmarks; when a server still answers 429,
        // wait as it asks and retry rather than count a failure.
        for _ in 0..20 {
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.with_context(|| format!("{method} {path}"))?;
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = value["retry_after_ms"].as_u64().unwrap_or(500);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            if !status.is_success() {
                bail!("{method} {path}: {status} {value}");
            }
            return Ok(value);
        }
        bail!("{method} {path}: still rate limited after 20 tries")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Value> {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::PUT, path, token, Some(body)).await
    }

    pub async fn register(&self, username: &str) -> Result<User> {
        let password = "bench password";
        let body = match &self.registration {
            Registration::SharedSecret(secret) => {
                let nonce = self.get("/_synapse/admin/v1/register", None).await?["nonce"]
                    .as_str()
                    .context("no nonce")?
                    .to_owned();
                let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())?;
                for part in [nonce.as_str(), username, password] {
                    mac.update(part.as_bytes());
                    mac.update(b"\0");
                }
                mac.update(b"notadmin");
                let mac = hex::encode(mac.finalize().into_bytes());
                let body =
                    json!({ "nonce": nonce, "username": username, "password": password, "admin": false, "mac": mac });
                self.post("/_synapse/admin/v1/register", None, &body).await?
            }
            Registration::Open => {
                let body = json!({ "username": username, "password": password, "auth": { "type": "m.login.dummy" } });
                self.post("/_matrix/client/v3/register", None, &body).await?
            }
        };
        Ok(User {
            user_id: body["user_id"].as_str().context("user_id")?.to_owned(),
            token: body["access_token"].as_str().context("access_token")?.to_owned(),
            device_id: body["device_id"].as_str().context("device_id")?.to_owned(),
        })
    }

    pub async fn create_room(&self, user: &User, body: &Value) -> Result<String> {
        let created = self
            .post("/_matrix/client/v3/createRoom", Some(&user.token), body)
            .await?;
        Ok(created["room_id"].as_str().context("room_id")?.to_owned())
    }

    pub async fn join(&self, user: &User, room: &str) -> Result<()> {
        self.post(
            &format!("/_matrix/client/v3/join/{}", encode(room)),
            Some(&user.token),
            &json!({}),
        )
        .await?;
        Ok(())
    }

    pub async fn send_text(&self, user: &User, room: &str, txn: &str, body: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room));
        self.put(&path, Some(&user.token), &json!({ "msgtype": "m.text", "body": body }))
            .await?;
        Ok(())
    }

    /// Whether `/versions` lists `feature` among `unstable_features` as enabled.
    pub async fn unstable_feature(&self, feature: &str) -> Result<bool> {
        let versions = self.get("/_matrix/client/versions", None).await?;
        Ok(versions["unstable_features"][feature] == Value::Bool(true))
    }

    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64, filter: &str) -> Result<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", encode(filter));
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        self.get(&path, Some(&user.token)).await
    }

    pub async fn messages(&self, user: &User, room: &str, from: Option<&str>, limit: u32) -> Result<Value> {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}", encode(room));
        if let Some(from) = from {
            path.push_str(&format!("&from={}", encode(from)));
        }
        self.get(&path, Some(&user.token)).await
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The bodies of `m.room.message` events per room in a sync response.
pub fn messages_in_sync(body: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Some(rooms) = body["rooms"]["join"].as_object() {
        for (room, data) in rooms {
            for event in data["timeline"]["events"].as_array().into_iter().flatten() {
                if event["type"] == "m.room.message"
                    && let Some(text) = event["content"]["body"].as_str()
                {
                    found.push((room.clone(), text.to_owned()));
                }
            }
        }
    }
    found
}
