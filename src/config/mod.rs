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

mod federation;
pub use self::federation::{FederationConfig, TrustedKeyServer, split_host_port};

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
    ("HEARTH_MEDIA_S3_ENDPOINT", "media.s3.endpoint"),
    ("HEARTH_MEDIA_S3_BUCKET", "media.s3.bucket"),
    ("HEARTH_MEDIA_S3_REGION", "media.s3.region"),
    ("HEARTH_MEDIA_S3_PREFIX", "media.s3.prefix"),
    ("HEARTH_PUSH_IP_RANGE_ALLOWLIST", "push.ip_range_allowlist"),
    ("HEARTH_FEDERATION_ENABLED", "federation.enabled"),
    ("HEARTH_FEDERATION_LISTEN", "federation.listen"),
    ("HEARTH_FEDERATION_TLS_CERTIFICATE", "federation.tls_certificate"),
    ("HEARTH_FEDERATION_TLS_PRIVATE_KEY", "federation.tls_private_key"),
    ("HEARTH_FEDERATION_EXTRA_CA_FILE", "federation.extra_ca_file"),
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
    pub media: MediaConfig,
    pub push: PushConfig,
    pub federation: FederationConfig,
    pub appservices: AppservicesConfig,
}

/// Application services (bridges and bots): see docs/appservices.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppservicesConfig {
    /// Registration files in Synapse's YAML format, read at start and again on SIGHUP.
    pub config_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// How long one request to a push gateway may take.
    pub timeout_secs: u64,
    /// A notification a gateway has failed to take for this long is dropped, and the pusher
    /// moves on to the next.
    pub give_up_after_secs: u64,
    /// `counts.unread` in pushes: rooms with unread notifications (true, as Synapse does) or
    /// unread notifications in all rooms (false).
    pub group_unread_count_by_room: bool,
    /// Notifications older than this are deleted: from `/notifications`, and from unread
    /// counts if still unread.
    pub keep_notifications_days: u64,
    /// Addresses push gateways may not be at (users choose the gateway URL).
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    /// Addresses allowed even though the denylist covers them, e.g. `["10.0.0.5/32"]` for a
    /// gateway on the local network (environment: `HEARTH_PUSH_IP_RANGE_ALLOWLIST`).
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 10,
            give_up_after_secs: 24 * 60 * 60,
            group_unread_count_by_room: true,
            keep_notifications_days: 90,
            ip_range_denylist: default_ip_denylist(),
            ip_range_allowlist: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest upload accepted (`413 M_TOO_LARGE` beyond it), advertised as `m.upload.size`.
    pub max_upload_bytes: u64,
    /// Total bytes one user may upload; 0 = no quota.
    pub max_bytes_per_user: u64,
    /// Images with more pixels than this are never decoded: no thumbnail (`413 M_TOO_LARGE`).
    pub max_image_pixels: u64,
    /// Serve the deprecated unauthenticated `/_matrix/media/v3/download` and `/thumbnail`
    /// endpoints (off: they answer `404 M_NOT_FOUND`, as the spec allows).
    pub serve_unauthenticated: bool,
    /// How long an ID from `/media/v1/create` waits for its upload.
    pub unused_upload_expiry_secs: u64,
    /// Unused `/media/v1/create` IDs one user may hold at once.
    pub max_pending_uploads: i64,
    /// The thumbnails made, each on the first request that needs it.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Bytes of other servers' media kept here (their originals and thumbnails); past it the
    /// least recently used go. 0 = no limit.
    pub remote_cache_max_bytes: u64,
    /// Where the local store keeps files; default `<data_dir>/media`.
    pub path: Option<PathBuf>,
    /// Keep media in an S3-compatible bucket instead of on local disk. Credentials come from
    /// `access_key_id`/`secret_access_key` or the standard `AWS_ACCESS_KEY_ID`/
    /// `AWS_SECRET_ACCESS_KEY` variables.
    pub s3: Option<S3Config>,
    pub url_preview: UrlPreviewConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The service's URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`;
    /// unset = AWS.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Prepended to every object key, so a bucket can be shared.
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    pub enabled: bool,
    /// Largest page or image fetched for a preview.
    pub max_bytes: u64,
    pub timeout_secs: u64,
    /// How long a preview is served from the cache.
    pub cache_secs: u64,
    /// Addresses never fetched (previews may not be used to reach the server's own network).
    pub ip_range_denylist: Vec<ipnet::IpNet>,
    /// Addresses fetched even though the denylist covers them.
    pub ip_range_allowlist: Vec<ipnet::IpNet>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let size = |width, height, method| ThumbnailSize { width, height, method };
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            max_bytes_per_user: 0,
            max_image_pixels: 32_000_000,
            serve_unauthenticated: false,
            unused_upload_expiry_secs: 24 * 60 * 60,
            max_pending_uploads: 5,
            thumbnail_sizes: vec![
                size(32, 32, ThumbnailMethod::Crop),
                size(96, 96, ThumbnailMethod::Crop),
                size(320, 240, ThumbnailMethod::Scale),
                size(640, 480, ThumbnailMethod::Scale),
                size(800, 600, ThumbnailMethod::Scale),
            ],
            remote_cache_max_bytes: 4 * 1024 * 1024 * 1024,
            path: None,
            s3: None,
            url_preview: UrlPreviewConfig::default(),
        }
    }
}

/// Loopback, private, link-local, carrier-grade NAT, multicast and documentation ranges: the
/// addresses a server fetching URLs on a user's behalf must not reach by default.
pub const DEFAULT_IP_DENYLIST: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 10 * 1024 * 1024,
            timeout_secs: 10,
            cache_secs: 60 * 60,
            ip_range_denylist: default_ip_denylist(),
            ip_range_allowlist: Vec::new(),
        }
    }
}

/// [`DEFAULT_IP_DENYLIST`], parsed.
pub fn default_ip_denylist() -> Vec<ipnet::IpNet> {
    DEFAULT_IP_DENYLIST
        .iter()
        .map(|range| range.parse().expect("the default ranges parse"))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Option<String>,
    pub max_connections: u32,
    /// At start, how long to keep trying a database that does not answer (a server starting
    /// beside Hearth); 0: fail at once with the cause.
    pub connect_wait_secs: u64,
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
    /// Connections open at once from one address (0 = no limit), so one host cannot take the
    /// whole `max_connections`.
    pub max_connections_per_ip: usize,
    /// Addresses the per-address limit does not apply to: a reverse proxy in front of Hearth
    /// brings every client through one address.
    pub connection_limit_exempt: Vec<ipnet::IpNet>,
    /// Seconds a client has to send a request's headers, counted from the connection's start or
    /// the end of the previous response: it is also how long an idle keep-alive connection
    /// stays open.
    pub header_timeout_secs: u64,
    /// The same for the exempt addresses (a reverse proxy, whose pool keeps idle connections
    /// for a minute or two and must not find one closed under it).
    pub exempt_idle_timeout_secs: u64,
    /// Seconds a request body may go without a byte arriving before the request fails (408).
    pub body_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub login: RateLimit,
    pub registration: RateLimit,
    /// Events sent (messages, state, redactions), per user.
    pub message: RateLimit,
    /// Rooms created, per user.
    pub room_creation: RateLimit,
    /// Invites sent, per inviting user.
    pub invites: RateLimit,
    /// Invites received, per invited user (so many senders cannot flood one victim).
    pub invites_received: RateLimit,
    /// Rooms joined, per user.
    pub joins: RateLimit,
    /// Media uploads (and `create` of async uploads), per user.
    pub media_upload: RateLimit,
    /// `sendToDevice` requests, per user.
    pub to_device: RateLimit,
    /// URL previews, per user (each may fetch a page from the internet).
    pub preview_url: RateLimit,
    /// Users none of these per-user limits apply to (server admins never have them).
    pub exempt_users: Vec<String>,
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
            media: MediaConfig::default(),
            push: PushConfig::default(),
            federation: FederationConfig::default(),
            appservices: AppservicesConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            connect_wait_secs: 0,
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
            max_connections_per_ip: 500,
            connection_limit_exempt: vec![
                "127.0.0.0/8".parse().expect("a valid network"),
                "::1/128".parse().expect("a valid network"),
            ],
            header_timeout_secs: 30,
            exempt_idle_timeout_secs: 600,
            body_timeout_secs: 30,
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
            // The per-user defaults are Synapse's where a chat user never meets them, and
            // looser where Synapse's are felt (its rc_message is 0.2/s with a burst of 10).
            message: RateLimit {
                per_second: 1.0,
                burst_count: 30,
            },
            room_creation: RateLimit {
                per_second: 0.016,
                burst_count: 10,
            },
            invites: RateLimit {
                per_second: 0.3,
                burst_count: 10,
            },
            invites_received: RateLimit {
                per_second: 0.003,
                burst_count: 5,
            },
            joins: RateLimit {
                per_second: 0.1,
                burst_count: 10,
            },
            media_upload: RateLimit {
                per_second: 10.0,
                burst_count: 50,
            },
            to_device: RateLimit {
                per_second: 10.0,
                burst_count: 100,
            },
            preview_url: RateLimit {
                per_second: 1.0,
                burst_count: 30,
            },
            exempt_users: Vec::new(),
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
        if self.limits.header_timeout_secs == 0
            || self.limits.body_timeout_secs == 0
            || self.limits.exempt_idle_timeout_secs == 0
        {
            return fail(
                "limits.header_timeout_secs",
                "timeouts must be at least 1 second".into(),
            );
        }
        if self.limits.max_request_body_bytes < 1024 {
            return fail("limits.max_request_body_bytes", "must be at least 1024".into());
        }
        let limits = &self.rate_limits;
        for (key, limit) in [
            ("rate_limits.login", limits.login),
            ("rate_limits.registration", limits.registration),
            ("rate_limits.message", limits.message),
            ("rate_limits.room_creation", limits.room_creation),
            ("rate_limits.invites", limits.invites),
            ("rate_limits.invites_received", limits.invites_received),
            ("rate_limits.joins", limits.joins),
            ("rate_limits.media_upload", limits.media_upload),
            ("rate_limits.to_device", limits.to_device),
            ("rate_limits.preview_url", limits.preview_url),
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
        if self.push.keep_notifications_days == 0 || self.push.keep_notifications_days > 36_500 {
            return fail("push.keep_notifications_days", "must be between 1 and 36500".into());
        }
        if self.push.timeout_secs == 0 {
            return fail("push.timeout_secs", "must be at least 1".into());
        }
        if self.media.max_upload_bytes == 0 {
            return fail("media.max_upload_bytes", "must be at least 1".into());
        }
        if let Some(size) = self
            .media
            .thumbnail_sizes
            .iter()
            .find(|size| size.width == 0 || size.height == 0)
        {
            return fail(
                "media.thumbnail_sizes",
                format!("{}x{} is not a size", size.width, size.height),
            );
        }
        if let Some(s3) = &self.media.s3 {
            if s3.bucket.is_empty() {
                return fail("media.s3.bucket", "must name the bucket".into());
            }
            if let Some(endpoint) = &s3.endpoint
                && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
            {
                return fail(
                    "media.s3.endpoint",
                    format!("`{endpoint}` must be an http:// or https:// URL"),
                );
            }
        }
        if let Some(server) = &self.well_known.server
            && <&ServerName>::try_from(server.as_str()).is_err()
        {
            return fail("well_known.server", format!("`{server}` is not a valid server name"));
        }
        self.federation.validate()?;
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
