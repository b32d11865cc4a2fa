//! The outbound federation client: every request discovered (see [`crate::discovery`]),
//! signed with `X-Matrix`, sent over TLS to an address the policy permits, and its answer read
//! with a size cap into ruma's response type.
//!
//! Discovery may say "connect to the SRV target, but check the certificate for the delegated
//! name". reqwest connects to the URL's host, so the URL carries the certificate name and our
//! DNS resolver maps that name to the one discovery said to look up.

use std::{
    collections::HashMap,
    error::Error as StdError,
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use http::header::HOST;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use ruma::{
    OwnedServerName, ServerName,
    api::federation::authentication::{ServerSignatures, XMatrixSigningInput},
    api::{
        IncomingResponse, IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
        auth_scheme::NoAuthentication,
        error::{FromHttpResponseError, IntoHttpError},
        path_builder::SinglePath,
    },
};

use crate::{
    discovery::{Destination, Lookup, NetworkLookup, Resolver},
    keys::ServerKey,
};

/// Decides whether an address may be connected to (the operator's allow and deny lists).
pub type AddressPermit = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The largest response read from another server. send_join answers for big rooms are the
/// largest federation responses; Synapse allows them hundreds of MB, we stay well below.
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// Certificate names remembered for the resolver at most (then the map starts over).
const MAX_NAMES: usize = 10_000;

/// How the client reaches and trusts other servers.
pub struct ClientSettings {
    pub origin: OwnedServerName,
    pub key: Arc<ServerKey>,
    /// PEM bundle of CA certificates trusted besides the system roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// false: accept any certificate (test set-ups only).
    pub verify_certificates: bool,
    pub timeout: Duration,
    pub permit: AddressPermit,
    /// Server name → (host, port), instead of discovery.
    pub overrides: std::collections::BTreeMap<String, (String, u16)>,
}

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The destination resolves only to addresses the policy refuses.
    #[error("refused by the address policy: {0}")]
    Refused(String),
    /// Could not connect, TLS failed, or the request timed out.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("the server answered {status}: {errcode} {message}")]
    Remote {
        status: u16,
        errcode: String,
        message: String,
    },
    /// The answer did not parse, or was too large.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The request could not be built (a bug, or an identifier that cannot be in a URL).
    #[error("cannot build the request: {0}")]
    Request(String),
}

impl FederationError {
    /// The HTTP status of a remote refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Matrix error code of a remote refusal.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Remote { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the server was down, not refusing).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Remote { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Signs and sends federation requests.
pub struct FederationClient<L: Lookup = NetworkLookup> {
    http: reqwest::Client,
    resolver: Resolver<L>,
    /// Certificate name → name to look up, filled from discovery before each request.
    names: Arc<RwLock<HashMap<String, String>>>,
    origin: OwnedServerName,
    key: Arc<ServerKey>,
    permit: AddressPermit,
}

impl FederationClient<NetworkLookup> {
    /// A client with real DNS and well-known look-ups.
    pub fn new(settings: ClientSettings) -> Result<Self, FederationError> {
        let names = Arc::new(RwLock::new(HashMap::new()));
        let http = build_http(&settings, names.clone())?;
        let lookup = NetworkLookup::new(http.clone()).map_err(|e| FederationError::Request(e.to_string()))?;
        Ok(Self::with_lookup(settings, http, names, lookup))
    }
}

impl<L: Lookup> FederationClient<L> {
    fn with_lookup(
        settings: ClientSettings,
        http: reqwest::Client,
        names: Arc<RwLock<HashMap<String, String>>>,
        lookup: L,
    ) -> Self {
        Self {
            http,
            resolver: Resolver::new(lookup, settings.overrides),
            names,
            origin: settings.origin,
            key: settings.key,
            permit: settings.permit,
        }
    }

    pub fn origin(&self) -> &ServerName {
        &self.origin
    }

    /// Sends a request that needs `X-Matrix` authentication.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        self.send_limited(destination, request, MAX_RESPONSE_BYTES).await
    }

    /// [`Self::send`] taking an answer of at most `max_bytes` (media).
    pub async fn send_limited<R>(
        &self,
        destination: &ServerName,
        request: R,
        max_bytes: usize,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let target = self.resolver.resolve(destination).await;
        let input = XMatrixSigningInput::new(self.origin.clone(), destination.to_owned(), self.key.pair());
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&base_url(&target), input, ())
            .map_err(request_error)?;
        self.execute::<R::IncomingResponse>(destination, &target, http_request, max_bytes)
            .await
    }

    /// Sends a request that takes no authentication (the key endpoints).
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>,
    {
        let target = self.resolver.resolve(destination).await;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&base_url(&target), (), ())
            .map_err(request_error)?;
        self.execute::<R::IncomingResponse>(destination, &target, http_request, MAX_RESPONSE_BYTES)
            .await
    }

    /// A plain `GET` of `path_and_query` on another server, over the same transport (its
    /// discovered address, TLS, the address policy) but with no signature: the media
    /// endpoints of servers without authenticated media. Any status is returned as is.
    pub async fn get_unsigned(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        max_bytes: usize,
    ) -> Result<http::Response<Vec<u8>>, FederationError> {
        let target = self.resolver.resolve(destination).await;
        let request = http::Request::get(format!("{}{path_and_query}", base_url(&target)))
            .body(Vec::new())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        let (status, headers, body) = self.execute_raw(destination, &target, request, max_bytes).await?;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    async fn execute<T: IncomingResponse>(
        &self,
        destination: &ServerName,
        target: &Destination,
        request: http::Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<T, FederationError> {
        let (status, headers, body) = self.execute_raw(destination, target, request, max_bytes).await?;
        let mut builder = http::Response::builder().status(status);
        if let Some(map) = builder.headers_mut() {
            *map = headers;
        }
        let http_response = builder
            .body(body.as_slice())
            .map_err(|e| FederationError::BadResponse(e.to_string()))?;
        T::try_from_http_response(http_response).map_err(|error| match error {
            FromHttpResponseError::Server(error) => remote_error(status.as_u16(), &body, error),
            FromHttpResponseError::Deserialization(error) => FederationError::BadResponse(error.to_string()),
            other => FederationError::BadResponse(other.to_string()),
        })
    }

    async fn execute_raw(
        &self,
        destination: &ServerName,
        target: &Destination,
        mut request: http::Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap, Vec<u8>), FederationError> {
        match target.tls_name.parse::<IpAddr>() {
            Ok(ip) if !(self.permit)(ip) => {
                return Err(FederationError::Refused(format!("{destination} is at {ip}")));
            }
            Ok(_) => {}
            Err(_) => {
                let mut names = self
                    .names
                    .write()
                    .expect("the name map is never poisoned: no code panics holding it");
                // Bounded: names are only ever re-added from discovery, which has them cached.
                if names.len() >= MAX_NAMES && !names.contains_key(&target.tls_name) {
                    names.clear();
                }
                names.insert(target.tls_name.clone(), target.resolve_name.clone());
            }
        }
        let host = http::HeaderValue::from_str(&target.host_header)
            .map_err(|_| FederationError::Request(format!("bad Host header {}", target.host_header)))?;
        request.headers_mut().insert(HOST, host);
        let request = reqwest::Request::try_from(request).map_err(|e| FederationError::Request(e.to_string()))?;
        let response = self.http.execute(request).await.map_err(|error| {
            // A name that resolved only to refused addresses is the policy's doing.
            if let Some(refused) = find_source::<Refused>(&error) {
                FederationError::Refused(refused.0.clone())
            } else {
                FederationError::Unreachable(describe(&error))
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response, max_bytes).await?;
        Ok((status, headers, body))
    }

    /// Drops what discovery remembers of a server (after it stopped answering, so a changed
    /// well-known or DNS is seen).
    pub fn forget_destination(&self, destination: &ServerName) {
        self.resolver.forget(destination);
    }
}

fn request_error(error: IntoHttpError) -> FederationError {
    FederationError::Request(error.to_string())
}

/// The errcode and message of an error answer (the body is a Matrix error, or anything).
fn remote_error<E: std::fmt::Display>(status: u16, body: &[u8], fallback: E) -> FederationError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    FederationError::Remote {
        status,
        errcode: field("errcode").unwrap_or_else(|| "M_UNKNOWN".to_owned()),
        message: field("error").unwrap_or_else(|| fallback.to_string()),
    }
}

/// `https://<certificate name>:<port>`.
fn base_url(target: &Destination) -> String {
    if target.tls_name.contains(':') {
        format!("https://[{}]:{}", target.tls_name, target.port)
    } else {
        format!("https://{}:{}", target.tls_name, target.port)
    }
}

async fn read_capped(mut response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, FederationError> {
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(FederationError::BadResponse("the response is too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FederationError::Unreachable(describe(&e)))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(FederationError::BadResponse("the response is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes, one line (reqwest's own message hides the TLS or DNS reason).
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn find_source<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        source = error.source();
    }
    None
}

/// A name resolved only to addresses the policy refuses.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refused {}

/// Resolves the certificate name through the name discovery chose, keeping only permitted
/// addresses.
struct PolicyResolver {
    names: Arc<RwLock<HashMap<String, String>>>,
    permit: AddressPermit,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self
            .names
            .read()
            .expect("the name map is never poisoned: no code panics holding it")
            .get(name.as_str())
            .cloned()
            .unwrap_or_else(|| name.as_str().to_owned());
        let permit = self.permit.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((lookup.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved.iter().copied().filter(|addr| permit(addr.ip())).collect();
            if permitted.is_empty() {
                return Err(
                    Box::new(Refused(format!("{lookup} resolves to no address federation may reach")))
                        as Box<dyn StdError + Send + Sync>,
                );
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

fn build_http(
    settings: &ClientSettings,
    names: Arc<RwLock<HashMap<String, String>>>,
) -> Result<reqwest::Client, FederationError> {
    let redirect_permit = settings.permit.clone();
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver {
            names,
            permit: settings.permit.clone(),
        }))
        // Well-known look-ups follow a few redirects; literal addresses never reach the
        // resolver, so the policy is checked here for them.
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error(Refused("too many redirects".to_owned()));
            }
            let literal = match attempt.url().host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            match literal {
                Some(ip) if !redirect_permit(ip) => attempt.error(Refused(format!("a redirect to {ip}"))),
                _ => attempt.follow(),
            }
        }))
        .no_proxy()
        .http1_only()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &settings.extra_roots_pem {
        let certificates =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| FederationError::Request(e.to_string()))?;
        builder = builder.tls_certs_merge(certificates);
    }
    if !settings.verify_certificates {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| FederationError::Request(describe(&e)))
}

#[cfg(test)]
mod tests {
    use ruma::{
        api::federation::authentication::XMatrix,
        serde::Base64,
        signatures::{PublicKeyMap, PublicKeySet},
    };

    use super::*;

    /// What the client puts in `Authorization` is what a receiving server verifies: signed
    /// over method, path, origin, destination and body; any change breaks it.
    #[test]
    fn signed_requests_verify_and_tampering_does_not() {
        let (key, _) = ServerKey::generate().unwrap();
        let origin: OwnedServerName = "a.test".try_into().unwrap();
        let destination: OwnedServerName = "b.test".try_into().unwrap();
        let request = http::Request::builder()
            .method("PUT")
            .uri("https://b.test:8448/_matrix/federation/v1/send/1")
            .body(br#"{"pdus":[]}"#.to_vec())
            .unwrap();
        let header = XMatrix::sign_http_request(
            &request,
            XMatrixSigningInput::new(origin.clone(), destination.clone(), key.pair()),
        )
        .unwrap();
        let parsed = XMatrix::parse(header.to_string()).unwrap();
        assert_eq!(parsed.origin, origin);
        assert_eq!(parsed.key.as_str(), key.key_id());
        let keys = PublicKeyMap::from([(
            origin.to_string(),
            PublicKeySet::from([(key.key_id(), Base64::parse(key.public_key_base64()).unwrap())]),
        )]);
        // The receiver sees only the path.
        let received = |path: &str, body: &[u8]| {
            http::Request::builder()
                .method("PUT")
                .uri(path)
                .body(body.to_vec())
                .unwrap()
        };
        parsed
            .verify_http_request(
                &received("/_matrix/federation/v1/send/1", br#"{"pdus":[]}"#),
                &destination,
                &keys,
            )
            .unwrap();
        for (path, body) in [
            ("/_matrix/federation/v1/send/2", br#"{"pdus":[]}"#.as_slice()),
            ("/_matrix/federation/v1/send/1", br#"{"pdus":[1]}"#.as_slice()),
        ] {
            assert!(
                parsed
                    .verify_http_request(&received(path, body), &destination, &keys)
                    .is_err(),
                "{path}"
            );
        }
        let elsewhere: OwnedServerName = "c.test".try_into().unwrap();
        assert!(
            parsed
                .verify_http_request(
                    &received("/_matrix/federation/v1/send/1", br#"{"pdus":[]}"#),
                    &elsewhere,
                    &keys
                )
                .is_err()
        );
    }

    #[test]
    fn transient_failures_are_told_from_refusals() {
        assert!(FederationError::Unreachable("down".into()).is_transient());
        let remote = |status| FederationError::Remote {
            status,
            errcode: "M_X".into(),
            message: String::new(),
        };
        assert!(remote(502).is_transient() && remote(429).is_transient());
        assert!(!remote(403).is_transient() && !remote(400).is_transient());
        assert!(!FederationError::Refused("10.0.0.1".into()).is_transient());
    }

    #[test]
    fn base_urls_bracket_ipv6_literals() {
        let at = |tls_name: &str| Destination {
            tls_name: tls_name.to_owned(),
            port: 8448,
            host_header: String::new(),
            resolve_name: String::new(),
        };
        assert_eq!(base_url(&at("example.org")), "https://example.org:8448");
        assert_eq!(base_url(&at("::1")), "https://[::1]:8448");
    }
}
