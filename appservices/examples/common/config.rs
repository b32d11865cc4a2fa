//! The config file (YAML) and the registration file it points to.
//!
//! The registration is the one place the tokens live: the homeserver loads the same file
//! (`[appservices] config_files` in Hearth's config), so the two sides cannot disagree.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, de::DeserializeOwned};

/// The settings every example has; each example's config embeds these at its top level.
#[derive(Debug, Deserialize)]
pub struct AppserviceSettings {
    /// Base URL of the homeserver's client-server API, such as `http://127.0.0.1:8008`.
    pub homeserver_url: url::Url,
    /// The homeserver's name: the part after the colon in its user IDs.
    pub server_name: OwnedServerName,
    /// Where the appservice API listens; the registration's `url` must reach this address.
    pub listen: SocketAddr,
    /// The registration file given to the homeserver; a relative path is taken from the
    /// config file's folder.
    pub registration: PathBuf,
}

/// The fields of a registration file the appservice itself needs; the rest (namespaces,
/// `rate_limited`, `url`) only matters to the homeserver.
#[derive(Debug, Deserialize)]
pub struct Registration {
    pub id: String,
    /// What we present to the homeserver (`Authorization: Bearer <as_token>`).
    pub as_token: String,
    /// What the homeserver presents to us.
    pub hs_token: String,
    /// Our own user is `@<sender_localpart>:<server_name>`; it exists without registering.
    pub sender_localpart: String,
}

impl AppserviceSettings {
    /// Reads the registration file this config names.
    pub fn read_registration(&self, config_path: &Path) -> anyhow::Result<Registration> {
        let path = match config_path.parent() {
            Some(folder) if self.registration.is_relative() => folder.join(&self.registration),
            _ => self.registration.clone(),
        };
        read_yaml(&path)
    }

    /// The appservice's own user (the "sender" of the registration).
    pub fn bot_user_id(&self, registration: &Registration) -> anyhow::Result<OwnedUserId> {
        UserId::parse(format!("@{}:{}", registration.sender_localpart, self.server_name))
            .context("sender_localpart and server_name do not make a valid user ID")
    }
}

/// Reads and parses a YAML file, naming the file in any error.
pub fn read_yaml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// The config file named on the command line: `--config PATH`, or `PATH`, or `config.yaml`.
pub fn config_path_from_args() -> anyhow::Result<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (None, _, _) => Ok(PathBuf::from("config.yaml")),
        (Some(flag), Some(path), None) if flag == "--config" || flag == "-c" => Ok(path.into()),
        (Some(path), None, _) if path != "--config" && path != "-c" && path != "--help" => Ok(path.into()),
        _ => anyhow::bail!("usage: {} [--config] CONFIG.yaml", env!("CARGO_BIN_NAME")),
    }
}
