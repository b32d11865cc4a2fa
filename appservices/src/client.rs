//! The homeserver's calls to an appservice, each authenticated with the appservice's
//! `hs_token` in the `Authorization` header (spec: "Authorization"), each bounded in time.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::registration::Registration;

/// How long an appservice has to take a transaction.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an appservice has to answer a query, a ping or a third-party lookup (a client is
/// waiting).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from an appservice (third-party lookups are the big ones).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Why a call to an appservice failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the appservice has no url")]
    NoUrl,
    #[error("the appservice did not answer in time")]
    Timeout,
    #[error("cannot reach the appservice: {0}")]
    Connection(String),
    #[error("the appservice answered {status}")]
    Status { status: u16, body: Value },
    #[error("the appservice's answer is not JSON")]
    NotJson,
    #[error("the appservice's answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// An HTTP client for appservices (one for all of them).
#[derive(Debug, Clone)]
pub struct AppserviceClient {
    http: reqwest::Client,
}

impl AppserviceClient {
    /// `http` must already have its TLS provider (the caller builds it, as for federation).
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// `PUT /_matrix/app/v1/transactions/{txnId}`: the appservice took the transaction when
    /// it answers 2xx.
    pub async fn push_transaction(
        &self,
        registration: &Registration,
        txn_id: &str,
        body: &Value,
    ) -> Result<(), CallError> {
        let url = endpoint(registration, &["transactions", txn_id], &[])?;
        let request = self.http.put(url).json(body).timeout(TRANSACTION_TIMEOUT);
        self.call(registration, request).await.map(drop)
    }

    /// `GET /_matrix/app/v1/users/{userId}`: whether the appservice made the user exist.
    pub async fn query_user(&self, registration: &Registration, user_id: &str) -> Result<bool, CallError> {
        let url = endpoint(registration, &["users", user_id], &[])?;
        found(self.call(registration, self.http.get(url).timeout(QUERY_TIMEOUT)).await)
    }

    /// `GET /_matrix/app/v1/rooms/{roomAlias}`: whether the appservice made the alias exist.
    pub async fn query_alias(&self, registration: &Registration, alias: &str) -> Result<bool, CallError> {
        let url = endpoint(registration, &["rooms", alias], &[])?;
        found(self.call(registration, self.http.get(url).timeout(QUERY_TIMEOUT)).await)
    }

    /// `POST /_matrix/app/v1/ping`: how long the appservice took to answer.
    pub async fn ping(&self, registration: &Registration, transaction_id: Option<&str>) -> Result<Duration, CallError> {
        let url = endpoint(registration, &["ping"], &[])?;
        let body = match transaction_id {
            Some(id) => serde_json::json!({ "transaction_id": id }),
            None => serde_json::json!({}),
        };
        let started = Instant::now();
        self.call(registration, self.http.post(url).json(&body).timeout(QUERY_TIMEOUT))
            .await?;
        Ok(started.elapsed())
    }

    /// `GET /_matrix/app/v1/thirdparty/{segments…}?{query}`: the appservice's JSON answer.
    pub async fn thirdparty(
        &self,
        registration: &Registration,
        segments: &[&str],
        query: &[(String, String)],
    ) -> Result<Value, CallError> {
        let mut path = vec!["thirdparty"];
        path.extend_from_slice(segments);
        let url = endpoint(registration, &path, query)?;
        self.call(registration, self.http.get(url).timeout(QUERY_TIMEOUT)).await
    }

    async fn call(&self, registration: &Registration, request: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                CallError::Timeout
            } else {
                CallError::Connection(without_url(&error))
            }
        };
        let mut response = request
            .bearer_auth(&registration.hs_token)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        // Read in pieces, so an appservice cannot make us buffer without bound.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CallError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            return Err(CallError::Status {
                status: status.as_u16(),
                body,
            });
        }
        if body.is_null() {
            return Err(CallError::NotJson);
        }
        Ok(body)
    }
}

/// 2xx: it exists; 404: it does not; anything else is a failure.
fn found(answer: Result<Value, CallError>) -> Result<bool, CallError> {
    match answer {
        Ok(_) => Ok(true),
        Err(CallError::Status { status: 404, .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// `{url}/_matrix/app/v1/{segments}` with each segment percent-encoded.
fn endpoint(registration: &Registration, segments: &[&str], query: &[(String, String)]) -> Result<url::Url, CallError> {
    let base = registration.url.as_deref().ok_or(CallError::NoUrl)?;
    let mut url = url::Url::parse(base).map_err(|_| CallError::NoUrl)?;
    {
        let mut path = url.path_segments_mut().map_err(|_| CallError::NoUrl)?;
        path.pop_if_empty().extend(["_matrix", "app", "v1"]).extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// reqwest's error text without the URL (which could carry a query string).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "the appservice");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_built_under_the_url_with_ids_encoded() {
        let mut registration = Registration::generate("a", Some("http://127.0.0.1:9000/base/"), "a", "x");
        let url = endpoint(&registration, &["users", "@a_b:x"], &[]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/base/_matrix/app/v1/users/@a_b:x");
        let alias = endpoint(&registration, &["rooms", "#room/x:y"], &[]).unwrap();
        assert_eq!(alias.path(), "/base/_matrix/app/v1/rooms/%23room%2Fx:y");
        registration.url = None;
        assert!(matches!(endpoint(&registration, &["ping"], &[]), Err(CallError::NoUrl)));
    }
}
