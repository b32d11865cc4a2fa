//! Server discovery: where to send federation requests for a server name, which name the TLS
//! certificate must be valid for and which `Host` header to send (server-server API, "Resolving
//! server names").
//!
//! [`Resolver`] walks the spec's steps in order and caches the outcome; the network look-ups it
//! needs sit behind [`Lookup`] so every step can be tested without a network. [`NetworkLookup`]
//! is the real one: `/.well-known/matrix/server` over HTTPS and SRV records from the system's
//! DNS servers. Address (A/AAAA) look-ups are left to whoever connects: a [`Destination`] names
//! what to resolve, not the addresses, so the connector's own resolver and happy-eyeballs apply.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use hickory_resolver::{TokioResolver, proto::rr::RData};
use reqwest::{StatusCode, header::HeaderMap};
use ruma::ServerName;
use serde::Deserialize;

/// The port used when neither the server name, the well-known nor an SRV record gives one.
pub const DEFAULT_PORT: u16 = 8448;
/// How long a good well-known answer is kept when it carries no cache headers (the spec's
/// recommended default).
pub const WELL_KNOWN_DEFAULT_CACHE: Duration = Duration::from_secs(24 * 3600);
/// Bounds on a well-known answer's own cache headers, as Synapse does: a tiny max-age would
/// have us fetch the document before every request, a huge one would never notice a move.
pub const WELL_KNOWN_MIN_CACHE: Duration = Duration::from_secs(5 * 60);
pub const WELL_KNOWN_MAX_CACHE: Duration = Duration::from_secs(48 * 3600);
/// How long a missing or broken well-known is believed (the spec recommends up to an hour).
pub const WELL_KNOWN_FAILURE_CACHE: Duration = Duration::from_secs(3600);
/// Redirects the well-known client should follow; the limit also ends redirect loops.
pub const WELL_KNOWN_MAX_REDIRECTS: usize = 5;
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The document is one small JSON object; anything bigger is not a well-known answer.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;
/// Past this many cached names, expired entries are swept out before adding another.
const CACHE_SWEEP_THRESHOLD: usize = 10_000;

/// Where to send requests for a server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Host name the TLS certificate must be valid for; also the host part of the request URL
    /// (an IP literal for IP server names, IPv6 without brackets).
    pub tls_name: String,
    /// Port to connect to.
    pub port: u16,
    /// Value of the HTTP `Host` header the spec requires for this case.
    pub host_header: String,
    /// Name whose A/AAAA records give the addresses to connect to (equals `tls_name` except in
    /// SRV cases, where it is the SRV target); for IP literals the IP as a string.
    pub resolve_name: String,
}

impl Destination {
    fn new(tls_name: &str, port: u16, host_header: &str, resolve_name: &str) -> Self {
        let [tls_name, host_header, resolve_name] = [tls_name, host_header, resolve_name].map(str::to_owned);
        Self {
            tls_name,
            port,
            host_header,
            resolve_name,
        }
    }
}

/// The result of fetching `/.well-known/matrix/server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnownAnswer {
    /// The `m.server` value, or `None` when there was no usable answer.
    pub server: Option<String>,
    /// How long this answer (good or not) may be relied on.
    pub cache_for: Duration,
}

/// One SRV record, as far as discovery cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Target host name; a trailing dot is allowed, `.` means "no service here".
    pub target: String,
}

/// The SRV records found for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswer {
    /// Empty when there are none (or the look-up failed).
    pub records: Vec<SrvRecord>,
    /// How long `records` may be used; meaningless when there are none.
    pub ttl: Duration,
}

impl SrvAnswer {
    pub fn none() -> Self {
        Self {
            records: Vec::new(),
            ttl: Duration::ZERO,
        }
    }
}

/// The network look-ups discovery needs; the real one is [`NetworkLookup`], tests use fakes.
pub trait Lookup: Send + Sync + 'static {
    /// GET `https://{hostname}/.well-known/matrix/server` (hostname may include `:port`).
    /// `server` is `None` when there is no usable answer (any non-200, bad JSON, missing
    /// `m.server`), with a cache lifetime for the failure.
    fn well_known(&self, hostname: &str) -> impl Future<Output = WellKnownAnswer> + Send;
    /// SRV records for a name like `_matrix-fed._tcp.example.org`, with their TTL; empty when none.
    fn srv(&self, name: &str) -> impl Future<Output = SrvAnswer> + Send;
}

/// Resolves server names per the spec and remembers the answers.
pub struct Resolver<L: Lookup> {
    lookup: L,
    /// Server name → (host, port): configured destinations that skip discovery entirely.
    overrides: BTreeMap<String, (String, u16)>,
    /// Server name → (destination, expiry). Only names that needed look-ups are kept.
    cache: Mutex<HashMap<String, (Destination, Instant)>>,
}

impl<L: Lookup> Resolver<L> {
    pub fn new(lookup: L, overrides: BTreeMap<String, (String, u16)>) -> Self {
        Self {
            lookup,
            overrides,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn lookup(&self) -> &L {
        &self.lookup
    }

    /// Where to send requests for `server_name`. Never fails: when nothing is published the
    /// spec's last step (the hostname on port 8448) is the answer.
    pub async fn resolve(&self, server_name: &ServerName) -> Destination {
        if let Some((host, port)) = self.overrides.get(server_name.as_str()) {
            // The remote still expects to be addressed by its own name: only the address moves.
            return Destination::new(bare_host(server_name), *port, server_name.as_str(), host);
        }
        // Steps 1 and 2 need no look-ups, so there is nothing worth caching.
        if let Some(destination) = direct(server_name) {
            return destination;
        }
        let key = server_name.as_str();
        let now = Instant::now();
        if let Some((destination, expiry)) = self.cache().get(key)
            && *expiry > now
        {
            return destination.clone();
        }
        let (destination, lifetime) = self.discover(server_name.host()).await;
        let expiry = Instant::now() + lifetime.min(WELL_KNOWN_MAX_CACHE);
        let mut cache = self.cache();
        if cache.len() >= CACHE_SWEEP_THRESHOLD {
            cache.retain(|_, (_, expiry)| *expiry > now);
        }
        cache.insert(key.to_owned(), (destination.clone(), expiry));
        destination
    }

    /// Drops the cached destination of `server_name`, e.g. after connecting to it failed.
    pub fn forget(&self, server_name: &ServerName) {
        self.cache().remove(server_name.as_str());
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Destination, Instant)>> {
        // Nothing panics while holding the lock; should it, the map is still consistent.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Steps 3 to 6 for a hostname without port. The lifetime is that of the well-known answer
    /// (good or failed), shortened by the TTL of the SRV records used: each answer that shaped
    /// the destination is re-checked when it expires. A missing SRV record is re-checked with
    /// the well-known, not on its (often short) negative TTL, so a delegation without SRV
    /// records does not refetch the well-known every few minutes.
    async fn discover(&self, hostname: &str) -> (Destination, Duration) {
        let well_known = self.lookup.well_known(hostname).await;
        // An `m.server` that is not a server name is an invalid response like any other.
        let delegated = well_known
            .server
            .as_deref()
            .and_then(|s| <&ServerName>::try_from(s).ok());
        match delegated {
            Some(delegated) => {
                // Steps 3.1 and 3.2 are steps 1 and 2 applied to the delegated name; the
                // delegation is followed once, never through the delegate's own well-known.
                if let Some(destination) = direct(delegated) {
                    return (destination, well_known.cache_for);
                }
                // Steps 3.3 to 3.5: SRV records of the delegated hostname.
                let (destination, ttl) = self.via_srv(delegated.host()).await;
                (destination, well_known.cache_for.min(ttl))
            }
            None => {
                // Steps 4 to 6: SRV records of the server's own hostname.
                let cache_for = match well_known.server {
                    Some(_) => well_known.cache_for.min(WELL_KNOWN_FAILURE_CACHE),
                    None => well_known.cache_for,
                };
                let (destination, ttl) = self.via_srv(hostname).await;
                (destination, cache_for.min(ttl))
            }
        }
    }

    /// `_matrix-fed._tcp` SRV, then the deprecated `_matrix._tcp` only when the first has
    /// nothing, then port 8448. Whatever the records point at, the certificate and `Host`
    /// header stay `hostname`: DNS is not trusted to delegate, TLS proves the target may
    /// speak for `hostname`.
    async fn via_srv(&self, hostname: &str) -> (Destination, Duration) {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let answer = self.lookup.srv(&format!("{service}.{hostname}")).await;
            if let Some(record) = pick_srv(&answer.records) {
                let target = record.target.trim_end_matches('.');
                return (Destination::new(hostname, record.port, hostname, target), answer.ttl);
            }
        }
        (
            Destination::new(hostname, DEFAULT_PORT, hostname, hostname),
            Duration::MAX,
        )
    }
}

/// Spec steps 1 and 2 (and 3.1, 3.2 for a delegated name): an IP literal, or a hostname with an
/// explicit port, is used as it stands, with the name exactly as written as the `Host` header.
fn direct(name: &ServerName) -> Option<Destination> {
    if !name.is_ip_literal() && name.port().is_none() {
        return None;
    }
    let host = bare_host(name);
    Some(Destination::new(
        host,
        name.port().unwrap_or(DEFAULT_PORT),
        name.as_str(),
        host,
    ))
}

/// The host part without IPv6 brackets: what certificates and resolvers know the host as.
fn bare_host(name: &ServerName) -> &str {
    let host = name.host();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// The record to use: lowest priority, then highest weight, then the first listed. Picking by
/// weight deterministically rather than by RFC 2782's weighted lottery keeps one destination per
/// cache lifetime; a `.` target says the service is not offered there and is skipped.
fn pick_srv(records: &[SrvRecord]) -> Option<&SrvRecord> {
    records
        .iter()
        .filter(|r| !r.target.trim_end_matches('.').is_empty())
        .min_by_key(|r| (r.priority, Reverse(r.weight)))
}

/// Something that went wrong setting up [`NetworkLookup`].
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("could not set up DNS resolution: {0}")]
    Dns(String),
}

/// The real look-ups: HTTPS for the well-known, the system's DNS servers for SRV records.
pub struct NetworkLookup {
    http: reqwest::Client,
    dns: TokioResolver,
}

impl NetworkLookup {
    /// `http` is built by the caller with its TLS settings; it should follow at most
    /// [`WELL_KNOWN_MAX_REDIRECTS`] redirects (see [`NetworkLookup::redirect_policy`]), as the
    /// spec wants redirects followed but loops avoided. DNS uses the system configuration
    /// (`/etc/resolv.conf`).
    pub fn new(http: reqwest::Client) -> Result<Self, DiscoveryError> {
        let dns = TokioResolver::builder_tokio()
            .and_then(|builder| builder.build())
            .map_err(|e| DiscoveryError::Dns(e.to_string()))?;
        Ok(Self { http, dns })
    }

    /// The redirect policy the well-known client should be built with.
    pub fn redirect_policy() -> reqwest::redirect::Policy {
        reqwest::redirect::Policy::limited(WELL_KNOWN_MAX_REDIRECTS)
    }

    /// The `m.server` value and the response's cache headers, or `None` for any failure.
    async fn fetch_well_known(&self, hostname: &str) -> Option<(String, Option<Duration>)> {
        let url = format!("https://{hostname}/.well-known/matrix/server");
        // The timeout covers the body too, so a slow trickle cannot hold discovery up.
        let mut response = self.http.get(url).timeout(WELL_KNOWN_TIMEOUT).send().await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        if response
            .content_length()
            .is_some_and(|n| n > WELL_KNOWN_MAX_BYTES as u64)
        {
            return None;
        }
        let max_age = cache_control_max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            if body.len() + chunk.len() > WELL_KNOWN_MAX_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        Some((parse_well_known(&body)?, max_age))
    }
}

impl Lookup for NetworkLookup {
    async fn well_known(&self, hostname: &str) -> WellKnownAnswer {
        match self.fetch_well_known(hostname).await {
            Some((server, max_age)) => WellKnownAnswer {
                server: Some(server),
                cache_for: max_age.map_or(WELL_KNOWN_DEFAULT_CACHE, |age| {
                    age.clamp(WELL_KNOWN_MIN_CACHE, WELL_KNOWN_MAX_CACHE)
                }),
            },
            None => WellKnownAnswer {
                server: None,
                cache_for: WELL_KNOWN_FAILURE_CACHE,
            },
        }
    }

    async fn srv(&self, name: &str) -> SrvAnswer {
        // A trailing dot makes the name fully qualified, so the resolver does not also try it
        // under the local search domains.
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        // NXDOMAIN, no records and DNS failures all mean "no SRV" here: the spec falls through
        // to the next step either way.
        let Ok(lookup) = self.dns.srv_lookup(fqdn).await else {
            return SrvAnswer::none();
        };
        let records = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target: srv.target.to_utf8(),
                }),
                _ => None,
            })
            .collect();
        SrvAnswer {
            records,
            ttl: lookup.valid_until().saturating_duration_since(Instant::now()),
        }
    }
}

/// `max-age` from `Cache-Control`; `no-store` counts as zero (then raised to the minimum).
fn cache_control_max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    let values = headers.get_all(reqwest::header::CACHE_CONTROL).iter();
    for directive in values.filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')) {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
                .or(max_age);
        }
    }
    max_age
}

/// The `m.server` string of a well-known document, if it is a JSON object that has one.
fn parse_well_known(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct WellKnown {
        #[serde(rename = "m.server")]
        server: String,
    }
    serde_json::from_slice::<WellKnown>(body).ok().map(|w| w.server)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use reqwest::header::{CACHE_CONTROL, HeaderValue};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Canned answers; a name without one has no well-known (failure, 1 h) and no SRV records.
    #[derive(Default)]
    struct Fake {
        well_known: HashMap<String, WellKnownAnswer>,
        srv: HashMap<String, SrvAnswer>,
        well_known_calls: AtomicUsize,
        srv_calls: Mutex<Vec<String>>,
    }

    fn srv_record(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        let target = target.to_owned();
        SrvRecord {
            priority,
            weight,
            port,
            target,
        }
    }

    impl Fake {
        fn well_known(mut self, host: &str, server: &str, cache_for: Duration) -> Self {
            let server = Some(server.to_owned());
            self.well_known
                .insert(host.to_owned(), WellKnownAnswer { server, cache_for });
            self
        }

        /// One record (port, target) at priority 0 is all these tests need.
        fn srv(mut self, name: &str, port: u16, target: &str, ttl: Duration) -> Self {
            let records = vec![srv_record(0, 0, port, target)];
            self.srv.insert(name.to_owned(), SrvAnswer { records, ttl });
            self
        }

        fn resolver(self) -> Resolver<Self> {
            Resolver::new(self, BTreeMap::new())
        }
    }

    impl Lookup for Fake {
        async fn well_known(&self, hostname: &str) -> WellKnownAnswer {
            self.well_known_calls.fetch_add(1, Ordering::SeqCst);
            let (server, cache_for) = (None, HOUR);
            self.well_known
                .get(hostname)
                .cloned()
                .unwrap_or(WellKnownAnswer { server, cache_for })
        }

        async fn srv(&self, name: &str) -> SrvAnswer {
            self.srv_calls.lock().unwrap().push(name.to_owned());
            self.srv.get(name).cloned().unwrap_or_else(SrvAnswer::none)
        }
    }

    fn name(s: &str) -> &ServerName {
        s.try_into().unwrap()
    }

    type Expected<'a> = (&'a str, u16, &'a str, &'a str);

    /// From (tls_name, port, host_header, resolve_name).
    fn dest((tls_name, port, host_header, resolve_name): Expected) -> Destination {
        Destination::new(tls_name, port, host_header, resolve_name)
    }

    fn well_known_calls(resolver: &Resolver<Fake>) -> usize {
        resolver.lookup().well_known_calls.load(Ordering::SeqCst)
    }

    fn srv_calls(resolver: &Resolver<Fake>) -> Vec<String> {
        resolver.lookup().srv_calls.lock().unwrap().clone()
    }

    /// Resolves `server` and checks the destination and which SRV names were asked for.
    async fn check(fake: Fake, server: &str, expected: Expected<'_>, srv: &[&str]) -> Resolver<Fake> {
        let resolver = fake.resolver();
        assert_eq!(resolver.resolve(name(server)).await, dest(expected), "{server}");
        assert_eq!(srv_calls(&resolver), srv, "{server}");
        resolver
    }

    /// How long the cached entry for `server` has left.
    fn cached_for(resolver: &Resolver<Fake>, server: &str) -> Duration {
        let expiry = resolver.cache().get(server).unwrap().1;
        expiry.saturating_duration_since(Instant::now())
    }

    fn roughly(actual: Duration, expected: Duration) -> bool {
        actual <= expected && actual + Duration::from_secs(5) >= expected
    }

    const FED_A: &str = "_matrix-fed._tcp.a.org";
    const LEGACY_A: &str = "_matrix._tcp.a.org";
    const FED_M: &str = "_matrix-fed._tcp.m.a.org";
    const LEGACY_M: &str = "_matrix._tcp.m.a.org";

    #[tokio::test]
    async fn steps_1_and_2_ip_literals_and_explicit_ports_need_no_look_ups() {
        let cases = [
            ("1.2.3.4", ("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")),
            ("1.2.3.4:8000", ("1.2.3.4", 8000, "1.2.3.4:8000", "1.2.3.4")),
            ("[2001:db8::1]", ("2001:db8::1", 8448, "[2001:db8::1]", "2001:db8::1")),
            ("[2001:db8::1]:9", ("2001:db8::1", 9, "[2001:db8::1]:9", "2001:db8::1")),
            ("a.org:1234", ("a.org", 1234, "a.org:1234", "a.org")),
        ];
        for (server, expected) in cases {
            let fake = Fake::default().well_known("a.org", "elsewhere.org", HOUR);
            let resolver = check(fake, server, expected, &[]).await;
            assert_eq!(well_known_calls(&resolver), 0);
        }
    }

    #[tokio::test]
    async fn steps_3_1_and_3_2_delegated_ip_literal_or_port_is_used_directly() {
        let fake = Fake::default().well_known("a.org", "[2001:db8::1]", HOUR);
        let expected = ("2001:db8::1", 8448, "[2001:db8::1]", "2001:db8::1");
        check(fake, "a.org", expected, &[]).await;
        let fake = Fake::default().well_known("a.org", "10.0.0.1:9000", HOUR);
        let expected = ("10.0.0.1", 9000, "10.0.0.1:9000", "10.0.0.1");
        check(fake, "a.org", expected, &[]).await;
        let fake = Fake::default().well_known("a.org", "m.a.org:443", HOUR);
        let expected = ("m.a.org", 443, "m.a.org:443", "m.a.org");
        check(fake, "a.org", expected, &[]).await;
    }

    #[tokio::test]
    async fn step_3_3_delegated_name_via_matrix_fed_srv() {
        let fake = Fake::default().well_known("a.org", "m.a.org", HOUR);
        let fake = fake
            .srv(FED_M, 8000, "host1.b.net.", HOUR)
            .srv(LEGACY_M, 7000, "old.b.net.", HOUR);
        let expected = ("m.a.org", 8000, "m.a.org", "host1.b.net");
        check(fake, "a.org", expected, &[FED_M]).await;
    }

    #[tokio::test]
    async fn step_3_4_delegated_name_via_legacy_srv() {
        let fake = Fake::default().well_known("a.org", "m.a.org", HOUR);
        let fake = fake.srv(LEGACY_M, 7000, "old.b.net.", HOUR);
        let expected = ("m.a.org", 7000, "m.a.org", "old.b.net");
        check(fake, "a.org", expected, &[FED_M, LEGACY_M]).await;
    }

    #[tokio::test]
    async fn step_3_5_delegated_name_without_srv_uses_8448() {
        let fake = Fake::default().well_known("a.org", "m.a.org", HOUR);
        let expected = ("m.a.org", 8448, "m.a.org", "m.a.org");
        check(fake, "a.org", expected, &[FED_M, LEGACY_M]).await;
    }

    #[tokio::test]
    async fn step_4_well_known_failure_falls_through_to_matrix_fed_srv() {
        let fake = Fake::default()
            .srv(FED_A, 8443, "fed.a.org.", HOUR)
            .srv(LEGACY_A, 7000, "old.a.org.", HOUR);
        let resolver = check(fake, "a.org", ("a.org", 8443, "a.org", "fed.a.org"), &[FED_A]).await;
        assert_eq!(well_known_calls(&resolver), 1);
    }

    #[tokio::test]
    async fn step_5_legacy_srv_only_when_matrix_fed_is_absent() {
        let fake = Fake::default().srv(LEGACY_A, 7000, "old.a.org.", HOUR);
        check(fake, "a.org", ("a.org", 7000, "a.org", "old.a.org"), &[FED_A, LEGACY_A]).await;
    }

    #[tokio::test]
    async fn step_6_nothing_published_means_hostname_on_8448_for_an_hour() {
        let expected = ("a.org", 8448, "a.org", "a.org");
        let resolver = check(Fake::default(), "a.org", expected, &[FED_A, LEGACY_A]).await;
        assert!(roughly(cached_for(&resolver, "a.org"), HOUR));
    }

    #[tokio::test]
    async fn an_invalid_delegated_name_counts_as_a_well_known_failure() {
        let fake = Fake::default().well_known("a.org", "not a server name", 24 * HOUR);
        let fake = fake.srv(FED_A, 8443, "fed.a.org", 24 * HOUR);
        let resolver = check(fake, "a.org", ("a.org", 8443, "a.org", "fed.a.org"), &[FED_A]).await;
        assert!(roughly(cached_for(&resolver, "a.org"), HOUR));
    }

    #[test]
    fn srv_choice_is_lowest_priority_then_highest_weight_ignoring_dot() {
        let records = [
            srv_record(20, 100, 1, "low-priority."),
            srv_record(0, 100, 1, "."),
            srv_record(10, 5, 1, "light."),
            srv_record(10, 50, 1, "heavy."),
            srv_record(10, 50, 1, "heavy-second."),
        ];
        assert_eq!(pick_srv(&records).unwrap().target, "heavy.");
        assert_eq!(pick_srv(&[srv_record(0, 0, 1, ".")]), None);
        assert_eq!(pick_srv(&[]), None);
    }

    #[tokio::test]
    async fn a_dot_only_srv_answer_falls_through_to_the_next_step() {
        let fake = Fake::default()
            .srv(FED_A, 8443, ".", HOUR)
            .srv(LEGACY_A, 7000, "old.a.org", HOUR);
        check(fake, "a.org", ("a.org", 7000, "a.org", "old.a.org"), &[FED_A, LEGACY_A]).await;
    }

    #[tokio::test]
    async fn overrides_win_over_everything() {
        let lookup = Fake::default()
            .well_known("a.org", "m.a.org:443", HOUR)
            .srv(FED_A, 8443, "fed.a.org", HOUR);
        let overrides = BTreeMap::from([
            ("a.org".to_owned(), ("127.0.0.1".to_owned(), 8009)),
            ("[::1]:8448".to_owned(), ("localhost".to_owned(), 9000)),
        ]);
        let resolver = Resolver::new(lookup, overrides);
        let got = resolver.resolve(name("a.org")).await;
        assert_eq!(got, dest(("a.org", 8009, "a.org", "127.0.0.1")));
        let got = resolver.resolve(name("[::1]:8448")).await;
        assert_eq!(got, dest(("::1", 9000, "[::1]:8448", "localhost")));
        assert_eq!(well_known_calls(&resolver), 0);
        assert!(srv_calls(&resolver).is_empty());
    }

    #[tokio::test]
    async fn results_are_cached_until_they_expire_or_are_forgotten() {
        let resolver = Fake::default().well_known("a.org", "m.a.org", HOUR).resolver();
        let first = resolver.resolve(name("a.org")).await;
        assert_eq!(resolver.resolve(name("a.org")).await, first);
        assert_eq!(well_known_calls(&resolver), 1);
        assert_eq!(srv_calls(&resolver).len(), 2);

        // Expire the entry by hand rather than waiting for it.
        resolver.cache().get_mut("a.org").unwrap().1 = Instant::now();
        assert_eq!(resolver.resolve(name("a.org")).await, first);
        assert_eq!(well_known_calls(&resolver), 2);

        resolver.forget(name("a.org"));
        resolver.resolve(name("a.org")).await;
        assert_eq!(well_known_calls(&resolver), 3);
        assert_eq!(srv_calls(&resolver).len(), 6);
    }

    #[tokio::test]
    async fn cache_lifetime_is_the_shortest_answer_used() {
        let five_minutes = Duration::from_secs(300);
        let resolver = Fake::default()
            // Good well-known, SRV with a shorter TTL: the TTL.
            .well_known("a.org", "m.a.org", 24 * HOUR)
            .srv(FED_M, 1, "t.a.org", five_minutes)
            // Good well-known, no SRV: the well-known's lifetime.
            .well_known("b.org", "m.b.org", 24 * HOUR)
            // Failed well-known (1 h), SRV with a longer TTL: the failure's hour.
            .srv("_matrix-fed._tcp.c.org", 1, "t.c.org", 24 * HOUR)
            // Anything longer than 48 h is cut to 48 h.
            .well_known("d.org", "m.d.org:443", 100 * HOUR)
            .resolver();
        let expected = [
            ("a.org", five_minutes),
            ("b.org", 24 * HOUR),
            ("c.org", HOUR),
            ("d.org", 48 * HOUR),
        ];
        for (server, lifetime) in expected {
            resolver.resolve(name(server)).await;
            assert!(roughly(cached_for(&resolver, server), lifetime), "{server}");
        }
    }

    #[test]
    fn resolving_can_run_on_a_multi_threaded_runtime() {
        fn assert_send<T: Send>(_: T) {}
        let resolver = Fake::default().resolver();
        assert_send(resolver.resolve(name("a.org")));
    }

    #[test]
    fn cache_control_max_age_is_read() {
        let max_age = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.append(CACHE_CONTROL, HeaderValue::from_static(value));
            cache_control_max_age(&headers)
        };
        assert_eq!(max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("max-age=600, no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
        assert_eq!(cache_control_max_age(&HeaderMap::new()), None);
    }

    #[test]
    fn well_known_documents_are_parsed() {
        let parse = |body: &[u8]| parse_well_known(body);
        assert_eq!(
            parse(br#"{"m.server": "m.a.org:443", "x": 1}"#).as_deref(),
            Some("m.a.org:443")
        );
        assert_eq!(parse(br#"{"m.homeserver": "x"}"#), None);
        assert_eq!(parse(br#"{"m.server": 443}"#), None);
        assert_eq!(parse(b"<html>not json</html>"), None);
    }
}
