//! Checking who sent an inbound federation request: the `X-Matrix` header names the origin
//! and the key it signed with; the signature covers method, URI, origin, destination and body.
//! Nothing else happens for a request until this passes.

use ruma::{
    OwnedServerName,
    api::federation::authentication::{XMatrix, XMatrixExtractError},
};

use super::Federation;
use crate::{ratelimit::Limited, storage::now_ms};

#[derive(Debug, thiserror::Error)]
pub enum RequestAuthError {
    #[error("Missing or malformed X-Matrix authorization: {0}")]
    Malformed(String),
    #[error("The request is addressed to another server")]
    WrongDestination,
    #[error("This server does not federate with {0}")]
    Blocked(OwnedServerName),
    #[error("No usable key of {0} to check the signature with")]
    UnknownKey(OwnedServerName),
    #[error("Invalid signature")]
    BadSignature,
    #[error("Too many requests")]
    Limited(Limited),
    #[error("Could not read keys")]
    Internal,
}

impl Federation {
    /// The origin of a signed request, once its signature checks out with the origin's key.
    pub async fn verify_request(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<OwnedServerName, RequestAuthError> {
        let header = XMatrix::extract_from_http_headers(&parts.headers).map_err(|error| match error {
            XMatrixExtractError::MissingAuthorizationHeader => {
                RequestAuthError::Malformed("no Authorization header".into())
            }
            other => RequestAuthError::Malformed(other.to_string()),
        })?;
        if self.is_blocked(&header.origin) {
            return Err(RequestAuthError::Blocked(header.origin));
        }
        if header
            .destination
            .as_deref()
            .is_some_and(|destination| destination != self.server_name())
        {
            return Err(RequestAuthError::WrongDestination);
        }
        if header.origin == self.server_name() {
            // Our own name from outside is someone else's claim to be us.
            return Err(RequestAuthError::BadSignature);
        }
        self.inbound_limits
            .check(header.origin.as_str())
            .map_err(RequestAuthError::Limited)?;
        let keys = self
            .key_set(&header.origin, &[header.key.to_string()], now_ms() as u64)
            .await
            .map_err(|_| RequestAuthError::Internal)?;
        if !keys.contains_key(header.key.as_str()) {
            return Err(RequestAuthError::UnknownKey(header.origin));
        }
        let mut request = http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone());
        if let Some(headers) = request.headers_mut() {
            headers.clone_from(&parts.headers);
        }
        let request = request.body(body).map_err(|_| RequestAuthError::BadSignature)?;
        let map = ruma::signatures::PublicKeyMap::from([(header.origin.to_string(), keys)]);
        header
            .verify_http_request(&request, self.server_name(), &map)
            .map_err(|_| RequestAuthError::BadSignature)?;
        // It is up: stop backing off from it.
        self.sender.heard_from(&header.origin);
        Ok(header.origin)
    }
}
