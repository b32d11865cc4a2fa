//! `[federation]`: talking to other homeservers. The names follow the issue that introduced
//! them (and Synapse where it has the same setting); operators and test tools script against
//! them.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use ruma::ServerName;
use serde::{Deserialize, Serialize};

use super::{ConfigError, default_ip_denylist};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Whether this server talks to other servers at all. Off: the federation listener is not
    /// bound, federation endpoints answer 404, and nothing is sent out.
    pub enabled: bool,
    /// The federation listener (other servers connect here, usually port 8448).
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: the federation listener speaks TLS itself.
    /// Without them it speaks plain HTTP, for a reverse proxy that terminates TLS in front.
    /// Both files are read again on SIGHUP.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// PEM file of CA certificates trusted for outbound federation besides the system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Check other servers' certificates. Off is for broken test set-ups only; the server
    /// logs a warning at start.
    pub verify_certificates: bool,
    /// Server name → `host:port` to connect to, instead of discovery (tests, odd networks).
    pub destination_overrides: BTreeMap<String, String>,
    /// Addresses federation requests may not reach (default: loopback, private, link-local,
    /// ... as for URL previews), and the exceptions.
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
    /// Notaries asked for other servers' keys (`/_matrix/key/v2/query`) when the server
    /// itself does not answer. Empty: every key is fetched from its own server.
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// Servers refused outright, inbound and outbound.
    pub blocked_servers: Vec<String>,
    /// Join rooms of other servers with partial state (MSC3706): the resident server leaves
    /// the members out, the user reads and sends at once, and the members arrive in the
    /// background. Off: every join waits for the whole state.
    pub partial_state_joins: bool,
    /// Let other servers read our public room directory (`/publicRooms`). Off by default, as
    /// in Synapse: a directory is often meant for this server's users only.
    pub allow_public_rooms_over_federation: bool,
    /// How long one outbound federation request may take (seconds).
    pub request_timeout_secs: u64,
    /// The longest wait between retries to a server that does not answer (seconds).
    pub max_retry_interval_secs: u64,
    /// Inbound requests one server may make per second (bursts up to `inbound_burst`).
    pub inbound_per_second: f64,
    pub inbound_burst: u32,
}

/// A notary, and optionally the keys it must sign with (else its keys are fetched from it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: String,
    #[serde(default)]
    pub verify_keys: BTreeMap<String, String>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8448)),
            tls_certificate: None,
            tls_private_key: None,
            extra_ca_file: None,
            verify_certificates: true,
            destination_overrides: BTreeMap::new(),
            ip_range_denylist: default_ip_denylist(),
            ip_range_allowlist: Vec::new(),
            trusted_key_servers: Vec::new(),
            blocked_servers: Vec::new(),
            allow_public_rooms_over_federation: false,
            partial_state_joins: true,
            request_timeout_secs: 30,
            max_retry_interval_secs: 3600,
            inbound_per_second: 50.0,
            inbound_burst: 500,
        }
    }
}

impl FederationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: String| Err(ConfigError(format!("federation.{key}: {problem}")));
        if self.tls_certificate.is_some() != self.tls_private_key.is_some() {
            return fail(
                "tls_certificate",
                "tls_certificate and tls_private_key go together: set both or neither".into(),
            );
        }
        for (server, target) in &self.destination_overrides {
            if <&ServerName>::try_from(server.as_str()).is_err() {
                return fail("destination_overrides", format!("`{server}` is not a server name"));
            }
            if split_host_port(target).is_none() {
                return fail(
                    "destination_overrides",
                    format!("`{target}` (for {server}) is not host:port"),
                );
            }
        }
        for server in self
            .blocked_servers
            .iter()
            .chain(self.trusted_key_servers.iter().map(|t| &t.server_name))
        {
            if <&ServerName>::try_from(server.as_str()).is_err() {
                return fail("blocked_servers", format!("`{server}` is not a server name"));
            }
        }
        if self.request_timeout_secs == 0 {
            return fail("request_timeout_secs", "must be at least 1".into());
        }
        if self.max_retry_interval_secs == 0 {
            return fail("max_retry_interval_secs", "must be at least 1".into());
        }
        if self.inbound_per_second.is_nan() || self.inbound_per_second <= 0.0 || self.inbound_burst == 0 {
            return fail("inbound_per_second", "the rate and burst must be above 0".into());
        }
        Ok(())
    }
}

/// `host:port` with a numeric port (IPv6 hosts in brackets).
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_needs_its_key_and_overrides_need_ports() {
        let mut config = FederationConfig {
            tls_certificate: Some("/cert.pem".into()),
            ..FederationConfig::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("tls_private_key"));
        config.tls_private_key = Some("/key.pem".into());
        config.validate().unwrap();
        config.destination_overrides.insert("b.test".into(), "127.0.0.3".into());
        assert!(config.validate().unwrap_err().to_string().contains("host:port"));
        config
            .destination_overrides
            .insert("b.test".into(), "[::1]:8448".into());
        config.validate().unwrap();
        config.blocked_servers.push("not a server".into());
        assert!(config.validate().is_err());
    }

    #[test]
    fn host_and_port_split_at_the_last_colon() {
        assert_eq!(split_host_port("example.org:8448"), Some(("example.org", 8448)));
        assert_eq!(split_host_port("[::1]:443"), Some(("[::1]", 443)));
        assert_eq!(split_host_port("example.org"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("example.org:http"), None);
    }
}
