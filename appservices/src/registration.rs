//! Registration files, in the format Synapse reads (the spec's "Registration" section plus
//! the unstable switches bridges write): parsed, checked, and generated.
//!
//! ```yaml
//! id: echo
//! url: http://127.0.0.1:9000      # null: the appservice is never called
//! as_token: <the appservice's token>
//! hs_token: <the homeserver's token>
//! sender_localpart: echo
//! namespaces:
//!   users: [{exclusive: true, regex: "@echo_.*"}]
//!   aliases: []
//!   rooms: []
//! rate_limited: false
//! receive_ephemeral: true        # MSC2409: typing, receipts, presence, to-device
//! org.matrix.msc3202: true       # device lists and one-time key counts (encrypted bridges)
//! io.element.msc4190: true       # device management without user-interactive auth
//! ```

use std::path::Path;

use rand::RngExt as _;
use serde::{Deserialize, Serialize};

/// One namespace entry: a regular expression, and whether the appservice claims what it
/// matches for itself alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceEntry {
    /// Whether only this appservice may create what the regex matches.
    #[serde(default)]
    pub exclusive: bool,
    pub regex: String,
}

/// The three namespaces of a registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceEntries {
    #[serde(default)]
    pub users: Vec<NamespaceEntry>,
    #[serde(default)]
    pub aliases: Vec<NamespaceEntry>,
    #[serde(default)]
    pub rooms: Vec<NamespaceEntry>,
}

/// A registration file, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Unique among the registered appservices.
    pub id: String,
    /// Where the appservice listens; `None` (`null`): it is never called, only acts.
    pub url: Option<String>,
    /// What the appservice presents to the homeserver.
    pub as_token: String,
    /// What the homeserver presents to the appservice.
    pub hs_token: String,
    /// The localpart of the appservice's own user (it exists without registering).
    pub sender_localpart: String,
    #[serde(default)]
    pub namespaces: NamespaceEntries,
    /// Whether the appservice's requests count against rate limits (default: they do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<bool>,
    /// Third-party protocols the appservice bridges (answers `/thirdparty/*` for).
    #[serde(default, deserialize_with = "null_is_empty", skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<String>,
    /// Typing, receipts, presence and to-device messages in transactions (MSC2409).
    #[serde(default)]
    pub receive_ephemeral: bool,
    /// The unstable name of `receive_ephemeral`, still written by older bridges.
    #[serde(
        default,
        rename = "de.sorunome.msc2409.push_ephemeral",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub push_ephemeral_unstable: bool,
    /// Device list changes and one-time key counts in transactions (MSC3202).
    #[serde(default, rename = "org.matrix.msc3202", skip_serializing_if = "std::ops::Not::not")]
    pub msc3202: bool,
    /// Device management for its users without user-interactive auth (MSC4190).
    #[serde(default, rename = "io.element.msc4190", skip_serializing_if = "std::ops::Not::not")]
    pub msc4190: bool,
}

/// Why a registration (or the set of them) cannot be used. Each names the file or ID.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a valid registration: {message}")]
    Parse { path: String, message: String },
    #[error("{id}: {message}")]
    Invalid { id: String, message: String },
    #[error("appservices {first} and {second}: {message}")]
    Conflict {
        first: String,
        second: String,
        message: String,
    },
}

impl Registration {
    /// Reads and parses one file (the checks against the server and the other registrations
    /// are [`crate::Registry::new`]'s).
    pub fn from_file(path: &Path) -> Result<Self, RegistrationError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|message| RegistrationError::Parse { path: display, message })
    }

    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let registration: Self = serde_norway::from_str(text).map_err(|error| error.to_string())?;
        registration.check_fields().map_err(|message| message.to_owned())?;
        Ok(registration)
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("a registration always serializes")
    }

    /// Whether typing, receipts, presence and to-device messages go into transactions.
    pub fn wants_ephemeral(&self) -> bool {
        self.receive_ephemeral || self.push_ephemeral_unstable
    }

    /// Whether its requests are exempt from rate limits.
    pub fn exempt_from_rate_limits(&self) -> bool {
        self.rate_limited == Some(false)
    }

    /// The checks that need nothing but the file itself.
    fn check_fields(&self) -> Result<(), &'static str> {
        if self.id.trim().is_empty() {
            return Err("id must not be empty");
        }
        if self.as_token.trim().is_empty() || self.hs_token.trim().is_empty() {
            return Err("as_token and hs_token must not be empty");
        }
        if self.as_token == self.hs_token {
            return Err("as_token and hs_token must differ");
        }
        if self.sender_localpart.is_empty() {
            return Err("sender_localpart must not be empty");
        }
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => return Err("url must be an http:// or https:// URL (or null)"),
            }
        }
        Ok(())
    }

    /// A new registration with random tokens: the appservice's users are `@{localpart}_*`
    /// (exclusive), its sender `@{localpart}`.
    pub fn generate(id: &str, url: Option<&str>, sender_localpart: &str, server_name: &str) -> Self {
        let user_regex = format!("@{}_.*:{}", regex::escape(sender_localpart), regex::escape(server_name));
        let alias_regex = format!("#{}_.*:{}", regex::escape(sender_localpart), regex::escape(server_name));
        Self {
            id: id.to_owned(),
            url: url.map(str::to_owned),
            as_token: random_token(),
            hs_token: random_token(),
            sender_localpart: sender_localpart.to_owned(),
            namespaces: NamespaceEntries {
                users: vec![NamespaceEntry {
                    exclusive: true,
                    regex: user_regex,
                }],
                aliases: vec![NamespaceEntry {
                    exclusive: true,
                    regex: alias_regex,
                }],
                rooms: Vec::new(),
            },
            rate_limited: Some(false),
            protocols: Vec::new(),
            receive_ephemeral: true,
            push_ephemeral_unstable: false,
            msc3202: false,
            msc4190: false,
        }
    }
}

/// `protocols: null` (which some bridges write) as no protocols.
fn null_is_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// 64 random letters and digits (about 380 bits).
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAUTRIX_STYLE: &str = r#"
id: telegram
url: http://localhost:29317
as_token: "aaaa"
hs_token: "bbbb"
sender_localpart: telegrambot
namespaces:
  users:
  - exclusive: true
    regex: '@telegram_.*:example\.org'
  aliases:
  - exclusive: true
    regex: '#telegram_.*:example\.org'
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
receive_ephemeral: true
org.matrix.msc3202: true
io.element.msc4190: true
protocols: null
"#;

    #[test]
    fn a_mautrix_registration_parses_with_its_unstable_switches() {
        let registration = Registration::from_yaml(MAUTRIX_STYLE).unwrap();
        assert_eq!(registration.id, "telegram");
        assert!(registration.wants_ephemeral() && registration.msc3202 && registration.msc4190);
        assert!(registration.exempt_from_rate_limits());
        assert_eq!(registration.namespaces.users[0].regex, r"@telegram_.*:example\.org");
        assert!(registration.namespaces.rooms.is_empty());
    }

    #[test]
    fn missing_or_empty_fields_are_refused() {
        assert!(Registration::from_yaml("id: x\nurl: null\n").is_err());
        let same_tokens = MAUTRIX_STYLE.replace("bbbb", "aaaa");
        assert!(Registration::from_yaml(&same_tokens).unwrap_err().contains("differ"));
        let bad_url = MAUTRIX_STYLE.replace("http://localhost:29317", "ftp://x");
        assert!(Registration::from_yaml(&bad_url).unwrap_err().contains("url"));
    }

    #[test]
    fn a_generated_registration_reads_back_the_same() {
        let generated = Registration::generate("bot", Some("http://127.0.0.1:9000"), "bot", "example.org");
        assert_ne!(generated.as_token, generated.hs_token);
        assert_eq!(generated.as_token.len(), 64);
        assert_eq!(Registration::from_yaml(&generated.to_yaml()).unwrap(), generated);
    }
}
