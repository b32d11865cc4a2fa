//! Configuration: a TOML file (optional), environment overrides, defaults, and the checks that
//! turn a bad value into a start-up error naming the key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use ruma::{OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

/// The commented sample printed by `hearth generate-config`. A unit test checks that it parses
/// to exactly the defaults, so it cannot drift from the code.
pub const SAMPLE_CONFIG: &str = include_str!("sample.toml");

/// Environment variables that override the file, and the key each one sets.
const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("HEARTH_SERVER_NAME", "server_name"),
    ("HEARTH_LISTEN", "listen"),
    ("HEARTH_DATA_DIR", "data_dir"),
    ("HEARTH_DATABASE_URL", "database.url"),
    ("HEARTH_ENABLE_REGISTRATION", "registration.enabled"),
    ("HEARTH_REGISTRATION_SHARED_SECRET", "registration.shared_secret"),
    ("HEARTH_LOG", "log"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server_name: OwnedServerName,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_baseurl: Option<String>,
    pub log: String,
    pub x_forwarded_for: bool,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateLimitsConfig,
    pub well_known: WellKnownConfig,
    pub rooms: RoomsConfig,
    pub sync: SyncConfig,
    pub presence: PresenceConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Option<String>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    pub enabled: Option<bool>,
    pub requires_token: bool,
    pub enable_registration_without_verification: bool,
    pub allow_guests: bool,
    pub shared_secret: Option<String>,
    pub password_min_length: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub refreshable_access_token_lifetime_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_request_body_bytes: usize,
    /// Client connections open at once; 0 = as many as the open-file limit allows.
    pub max_connections: usize,
    /// To-device messages kept per device; beyond it the oldest are dropped, so a device that
    /// never syncs cannot grow the database without end.
    pub max_to_device_per_device: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub login: RateLimit,
    pub registration: RateLimit,
}

/// A token bucket: `per_second` tokens refill, up to `burst_count`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// The version of rooms created without one.
    pub default_room_version: String,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_room_version: "12".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Record when a member's device first receives an event and show it to the room as an
    /// `io.hearth.delivered` receipt.
    pub delivery_receipts: bool,
    /// Longest `/sync` long-poll a client may ask for, in milliseconds.
    pub max_timeout_ms: u64,
    /// Sync-shaped updates a WebSocket may have queued before the server closes it as too slow.
    pub websocket_buffer: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            delivery_receipts: true,
            max_timeout_ms: 120_000,
            websocket_buffer: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Track and share presence at all.
    pub enabled: bool,
    /// A user who syncs but does nothing else for this long becomes `unavailable`.
    pub idle_timeout_secs: u64,
    /// A user with no sync request for this long becomes `offline`.
    pub offline_timeout_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_secs: 300,
            offline_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WellKnownConfig {
    pub client: Option<String>,
    pub server: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".try_into().expect("`localhost` is a valid server name"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("./hearth-data"),
            public_baseurl: None,
            log: "info,ruma_state_res=warn".to_owned(),
            x_forwarded_for: false,
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            well_known: WellKnownConfig::default(),
            rooms: RoomsConfig::default(),
            sync: SyncConfig::default(),
            presence: PresenceConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            requires_token: false,
            enable_registration_without_verification: false,
            allow_guests: false,
            shared_secret: None,
            password_min_length: 1,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            refreshable_access_token_lifetime_secs: 300,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 1024 * 1024,
            max_connections: 0,
            max_to_device_per_device: 10_000,
        }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            login: RateLimit {
                per_second: 0.2,
                burst_count: 5,
            },
            registration: RateLimit {
                per_second: 0.17,
                burst_count: 3,
            },
        }
    }
}

/// How registration is open, resolved from the config at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationMode {
    Closed,
    /// Anyone may register with the `m.login.dummy` stage.
    Open,
    /// A registration token (`m.login.registration_token`) is required.
    TokenRequired,
}

impl Config {
    /// Reads the config: defaults, then the file (if any), then the environment overrides.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::raw()
            .only(&ENV_OVERRIDES.iter().map(|(var, _)| *var).collect::<Vec<_>>())
            .map(|var| {
                let key = ENV_OVERRIDES
                    .iter()
                    .find(|(name, _)| var.as_str().eq_ignore_ascii_case(name))
                    .map_or("", |(_, key)| *key);
                key.into()
            });
        figment = figment.merge(env);
        let config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: String| Err(ConfigError(format!("{key}: {problem}")));
        if self.database.max_connections == 0 {
            return fail("database.max_connections", "must be at least 1".into());
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:"))
        {
            return fail(
                "database.url",
                format!("`{url}` is neither sqlite://… nor postgres://…"),
            );
        }
        if self.limits.max_request_body_bytes < 1024 {
            return fail("limits.max_request_body_bytes", "must be at least 1024".into());
        }
        for (key, limit) in [
            ("rate_limits.login", self.rate_limits.login),
            ("rate_limits.registration", self.rate_limits.registration),
        ] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst_count == 0 {
                return fail(key, "per_second must be > 0 and burst_count at least 1".into());
            }
        }
        for (key, url) in [
            ("public_baseurl", &self.public_baseurl),
            ("well_known.client", &self.well_known.client),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return fail(key, format!("`{url}` must be an http:// or https:// URL"));
            }
        }
        if ruma::RoomVersionId::try_from(self.rooms.default_room_version.as_str())
            .ok()
            .and_then(|version| version.rules())
            .is_none()
        {
            return fail(
                "rooms.default_room_version",
                format!(
                    "`{}` is not a room version Hearth supports (1 to 12)",
                    self.rooms.default_room_version
                ),
            );
        }
        if let Some(server) = &self.well_known.server
            && <&ServerName>::try_from(server.as_str()).is_err()
        {
            return fail("well_known.server", format!("`{server}` is not a valid server name"));
        }
        if let Some(secret) = &self.registration.shared_secret
            && secret.is_empty()
        {
            return fail("registration.shared_secret", "must not be empty".into());
        }
        if self.registration_mode() == RegistrationMode::Open
            && !self.listen.ip().is_loopback()
            && !self.registration.enable_registration_without_verification
        {
            return fail(
                "registration.enabled",
                format!(
                    "open registration without a token on a public address ({}) lets anyone \
                     create accounts; set registration.requires_token = true, or \
                     registration.enable_registration_without_verification = true if you mean it",
                    self.listen
                ),
            );
        }
        Ok(())
    }

    pub fn registration_mode(&self) -> RegistrationMode {
        let enabled = self
            .registration
            .enabled
            .unwrap_or_else(|| self.listen.ip().is_loopback());
        match (enabled, self.registration.requires_token) {
            (false, _) => RegistrationMode::Closed,
            (true, false) => RegistrationMode::Open,
            (true, true) => RegistrationMode::TokenRequired,
        }
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("hearth.db").display()),
        }
    }

    /// The base URL clients should use, if known (`well_known.client`, else `public_baseurl`).
    pub fn client_base_url(&self) -> Option<&str> {
        self.well_known.client.as_deref().or(self.public_baseurl.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses_to_the_defaults() {
        let sample: Config = Figment::from(Toml::string(SAMPLE_CONFIG)).extract().unwrap();
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&sample).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }

    #[test]
    fn open_registration_on_a_public_address_is_refused() {
        let mut config = Config {
            listen: "0.0.0.0:8008".parse().unwrap(),
            ..Config::default()
        };
        config.registration.enabled = Some(true);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("registration.enabled"), "{error}");
        config.registration.requires_token = true;
        config.validate().unwrap();
    }

    #[test]
    fn registration_defaults_to_open_only_on_loopback() {
        let local = Config::default();
        assert_eq!(local.registration_mode(), RegistrationMode::Open);
        let public = Config {
            listen: "0.0.0.0:8008".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(public.registration_mode(), RegistrationMode::Closed);
    }

    #[test]
    fn unknown_keys_are_named_in_the_error() {
        let error = Figment::from(Toml::string("[registration]\nenabeld = true"))
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("enabeld"), "{error}");
    }
}
