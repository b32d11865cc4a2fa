//! Outbound HTTP on a user's behalf (URL previews; push gateways next), guarded against
//! server-side request forgery: a URL may not make the server reach an address on the
//! denylist (by default loopback, private, link-local and the like), whether the address is
//! written in the URL, comes from DNS, or is where a redirect leads.
//!
//! The check sits in the DNS resolver, so it applies to the address actually connected to
//! (no gap between checking a name and resolving it again), and in the redirect policy for
//! literal addresses, which never reach the resolver.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};

/// Which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub denylist: Vec<IpNet>,
    /// Wins over the denylist.
    pub allowlist: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        // `::ffff:127.0.0.1` is 127.0.0.1.
        let ip = ip.to_canonical();
        self.allowlist.iter().any(|net| net.contains(&ip)) || !self.denylist.iter().any(|net| net.contains(&ip))
    }

    /// Refuses URLs that are not http(s), and literal addresses the policy denies.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("{} URLs are not fetched", url.scheme())));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Refused("the URL has no host".to_owned())),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused(format!("{ip} is an address the server does not fetch from")))
        }
    }
}

/// A request the policy refused.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refused {}

/// Whether a reqwest error came from the address policy, and why.
pub fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = error.source();
    }
    None
}

/// Resolves names, then drops the addresses the policy denies.
struct GuardedResolver(Arc<AddressPolicy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if permitted.is_empty() && !resolved.is_empty() {
                return Err(Box::new(Refused(format!(
                    "{host} resolves to an address the server does not fetch from"
                ))) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// Installs the TLS crypto provider (ring) once per process; every reqwest client needs it.
pub fn install_crypto_provider() {
    // Fails only if one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client whose every connection, redirects included, obeys `policy`. It ignores proxy
/// environment variables: a proxy would connect on our behalf, beyond the policy's reach.
pub fn guarded_client(policy: AddressPolicy, timeout: Duration) -> reqwest::Client {
    install_crypto_provider();
    let policy = Arc::new(policy);
    let redirects = policy.clone();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver(policy)))
        .redirect(redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error(Refused("too many redirects".to_owned()));
            }
            match redirects.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        }))
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's settings are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UrlPreviewConfig;

    fn default_policy() -> AddressPolicy {
        AddressPolicy {
            denylist: UrlPreviewConfig::default().ip_range_denylist,
            allowlist: Vec::new(),
        }
    }

    #[test]
    fn private_and_loopback_addresses_are_denied_by_default() {
        let policy = default_policy();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!policy.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(policy.permits(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_allowlist_wins() {
        let mut policy = default_policy();
        policy.allowlist.push("127.0.0.1/32".parse().unwrap());
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn literal_addresses_and_other_schemes_are_checked_in_the_url() {
        let policy = default_policy();
        for url in [
            "http://127.0.0.1/",
            "http://[::1]:8008/",
            "file:///etc/passwd",
            "http://0x7f000001/",
        ] {
            assert!(policy.check_url(&Url::parse(url).unwrap()).is_err(), "{url}");
        }
        assert!(policy.check_url(&Url::parse("https://example.org/").unwrap()).is_ok());
    }
}
