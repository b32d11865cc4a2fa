//! What each appservice claims: its namespaces compiled, and the [`Registry`] of all of them.
//!
//! A namespace regex matches from the start of the ID, as Synapse matches them (Python's
//! `re.match`): `@irc_.*` covers `@irc_alice:example.org`. The appservice's own user
//! (`sender_localpart`) is in its user namespace whatever the regexes say.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use regex::Regex;
use ruma::{OwnedUserId, UserId};

use crate::registration::{NamespaceEntry, Registration, RegistrationError};

/// One compiled namespace entry.
#[derive(Debug)]
struct Pattern {
    regex: Regex,
    exclusive: bool,
}

/// The compiled entries of one namespace (users, aliases or rooms).
#[derive(Debug, Default)]
struct Namespace(Vec<Pattern>);

impl Namespace {
    fn compile(id: &str, kind: &str, entries: &[NamespaceEntry]) -> Result<Self, RegistrationError> {
        let patterns = entries
            .iter()
            .map(|entry| {
                // Anchored at the start only, as Synapse (`re.match`).
                let regex =
                    Regex::new(&format!("^(?:{})", entry.regex)).map_err(|error| RegistrationError::Invalid {
                        id: id.to_owned(),
                        message: format!("namespaces.{kind}: bad regex {:?}: {error}", entry.regex),
                    })?;
                Ok(Pattern {
                    regex,
                    exclusive: entry.exclusive,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(patterns))
    }

    fn matches(&self, value: &str) -> bool {
        self.0.iter().any(|pattern| pattern.regex.is_match(value))
    }

    fn matches_exclusively(&self, value: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| pattern.exclusive && pattern.regex.is_match(value))
    }

    fn exclusive_sources(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|pattern| pattern.exclusive)
            .map(|pattern| pattern.regex.as_str())
    }
}

/// A registered appservice: its registration and compiled namespaces.
#[derive(Debug)]
pub struct Appservice {
    pub registration: Registration,
    /// `@{sender_localpart}:{server_name}`.
    pub sender: OwnedUserId,
    users: Namespace,
    aliases: Namespace,
    rooms: Namespace,
}

impl Appservice {
    /// Compiles a registration for this server; refuses bad regexes and a sender that is no
    /// valid user ID.
    pub fn new(registration: Registration, server_name: &str) -> Result<Self, RegistrationError> {
        let id = registration.id.clone();
        let sender = UserId::parse(format!("@{}:{server_name}", registration.sender_localpart)).map_err(|error| {
            RegistrationError::Invalid {
                id: id.clone(),
                message: format!("sender_localpart {:?}: {error}", registration.sender_localpart),
            }
        })?;
        let namespaces = &registration.namespaces;
        Ok(Self {
            users: Namespace::compile(&id, "users", &namespaces.users)?,
            aliases: Namespace::compile(&id, "aliases", &namespaces.aliases)?,
            rooms: Namespace::compile(&id, "rooms", &namespaces.rooms)?,
            sender,
            registration,
        })
    }

    pub fn id(&self) -> &str {
        &self.registration.id
    }

    /// Whether the appservice may act as this user: its sender or a user in its namespace.
    pub fn is_user_in_namespace(&self, user_id: &str) -> bool {
        self.sender == user_id || self.users.matches(user_id)
    }

    /// Whether only this appservice may register this user.
    pub fn claims_user(&self, user_id: &str) -> bool {
        self.sender == user_id || self.users.matches_exclusively(user_id)
    }

    pub fn is_alias_in_namespace(&self, alias: &str) -> bool {
        self.aliases.matches(alias)
    }

    /// Whether only this appservice may create this alias.
    pub fn claims_alias(&self, alias: &str) -> bool {
        self.aliases.matches_exclusively(alias)
    }

    pub fn is_room_in_namespace(&self, room_id: &str) -> bool {
        self.rooms.matches(room_id)
    }

    /// Whether the user namespace has any regex (an appservice without one is interested in
    /// members only through its sender).
    pub fn has_user_namespace(&self) -> bool {
        !self.users.0.is_empty()
    }

    pub fn has_alias_namespace(&self) -> bool {
        !self.aliases.0.is_empty()
    }
}

/// Every registered appservice, checked against each other.
#[derive(Debug, Default)]
pub struct Registry {
    services: Vec<Arc<Appservice>>,
    by_as_token: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Reads the registration files; any error (unreadable file, bad YAML, bad regex, a
    /// duplicate ID or token, overlapping exclusive namespaces) refuses the whole set.
    pub fn load(paths: &[PathBuf], server_name: &str) -> Result<Self, RegistrationError> {
        let registrations = paths
            .iter()
            .map(|path| Registration::from_file(path))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(registrations, server_name)
    }

    pub fn new(registrations: Vec<Registration>, server_name: &str) -> Result<Self, RegistrationError> {
        let mut registry = Self::default();
        let mut hs_tokens: HashMap<String, String> = HashMap::new();
        for registration in registrations {
            let service = Appservice::new(registration, server_name)?;
            let id = service.id().to_owned();
            let conflict = |other: &str, message: &str| RegistrationError::Conflict {
                first: other.to_owned(),
                second: id.clone(),
                message: message.to_owned(),
            };
            if registry.by_id.contains_key(&id) {
                return Err(conflict(&id, "the same id twice"));
            }
            let (as_token, hs_token) = (&service.registration.as_token, &service.registration.hs_token);
            if let Some(&other) = registry.by_as_token.get(as_token) {
                return Err(conflict(registry.services[other].id(), "the same as_token"));
            }
            if let Some(other) = hs_tokens.get(hs_token) {
                return Err(conflict(other, "the same hs_token"));
            }
            // One's as_token being another's hs_token would let either act as the other.
            if let Some(other) = hs_tokens.get(as_token) {
                return Err(conflict(other, "an as_token equal to another's hs_token"));
            }
            if let Some(&other) = registry.by_as_token.get(hs_token) {
                return Err(conflict(
                    registry.services[other].id(),
                    "an hs_token equal to another's as_token",
                ));
            }
            for other in &registry.services {
                if let Some(message) = overlap(other, &service) {
                    return Err(conflict(other.id(), &message));
                }
            }
            hs_tokens.insert(hs_token.clone(), id.clone());
            registry.by_as_token.insert(as_token.clone(), registry.services.len());
            registry.by_id.insert(id, registry.services.len());
            registry.services.push(Arc::new(service));
        }
        Ok(registry)
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Appservice>> {
        self.services.iter()
    }

    /// The appservice presenting this `as_token`.
    pub fn by_as_token(&self, token: &str) -> Option<&Arc<Appservice>> {
        self.by_as_token.get(token).map(|&index| &self.services[index])
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Appservice>> {
        self.by_id.get(id).map(|&index| &self.services[index])
    }

    /// The appservice that alone may register this user, if one claims it.
    pub fn claiming_user(&self, user_id: &str) -> Option<&Arc<Appservice>> {
        self.services.iter().find(|service| service.claims_user(user_id))
    }

    /// The appservice that alone may create this alias, if one claims it.
    pub fn claiming_alias(&self, alias: &str) -> Option<&Arc<Appservice>> {
        self.services.iter().find(|service| service.claims_alias(alias))
    }

    /// The appservices whose user namespace holds this user (asked about unknown users).
    pub fn with_user(&self, user_id: &str) -> impl Iterator<Item = &Arc<Appservice>> {
        self.services
            .iter()
            .filter(move |service| service.is_user_in_namespace(user_id))
    }

    /// The appservices whose alias namespace holds this alias (asked about unknown aliases).
    pub fn with_alias(&self, alias: &str) -> impl Iterator<Item = &Arc<Appservice>> {
        self.services
            .iter()
            .filter(move |service| service.is_alias_in_namespace(alias))
    }

    /// The appservices that bridge this third-party protocol.
    pub fn with_protocol(&self, protocol: &str) -> impl Iterator<Item = &Arc<Appservice>> {
        self.services
            .iter()
            .filter(move |service| service.registration.protocols.iter().any(|p| p == protocol))
    }
}

/// Why two appservices' exclusive claims collide, if they do. Regexes cannot be compared in
/// general; this catches what happens in practice: the same exclusive regex twice, and one's
/// own user inside the other's exclusive namespace.
fn overlap(first: &Appservice, second: &Appservice) -> Option<String> {
    let pairs = [
        ("users", &first.users, &second.users),
        ("aliases", &first.aliases, &second.aliases),
        ("rooms", &first.rooms, &second.rooms),
    ];
    for (kind, ours, theirs) in pairs {
        for regex in ours.exclusive_sources() {
            if theirs.exclusive_sources().any(|other| other == regex) {
                let shown = regex.trim_start_matches("^(?:").trim_end_matches(')');
                return Some(format!("both claim namespaces.{kind} {shown:?} exclusively"));
            }
        }
    }
    for (one, other) in [(first, second), (second, first)] {
        if other.users.matches_exclusively(one.sender.as_str()) || one.sender == other.sender {
            return Some(format!(
                "{}'s sender {} is in {}'s exclusive user namespace",
                one.id(),
                one.sender,
                other.id()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::NamespaceEntries;

    fn registration(id: &str, user_regex: &str, exclusive: bool) -> Registration {
        Registration {
            namespaces: NamespaceEntries {
                users: vec![NamespaceEntry {
                    exclusive,
                    regex: user_regex.to_owned(),
                }],
                aliases: vec![NamespaceEntry {
                    exclusive: true,
                    regex: format!("#{id}_.*"),
                }],
                rooms: Vec::new(),
            },
            ..Registration::generate(id, None, &format!("{id}bot"), "example.org")
        }
    }

    #[test]
    fn namespaces_match_from_the_start_and_exclusivity_is_per_entry() {
        let registry = Registry::new(vec![registration("irc", "@irc_.*", true)], "example.org").unwrap();
        let irc = registry.by_id("irc").unwrap();
        assert!(irc.is_user_in_namespace("@irc_alice:example.org"));
        assert!(!irc.is_user_in_namespace("@alice_irc_:example.org"));
        assert!(irc.is_user_in_namespace("@ircbot:example.org"), "its sender");
        assert!(irc.claims_user("@irc_alice:example.org"));
        assert!(irc.claims_alias("#irc_general:example.org"));
        assert!(registry.by_as_token(&irc.registration.as_token).is_some());
        assert!(registry.by_as_token(&irc.registration.hs_token).is_none());

        let shared = Registry::new(vec![registration("slack", "@slack_.*", false)], "example.org").unwrap();
        assert!(shared.claiming_user("@slack_bob:example.org").is_none());
        assert!(shared.with_user("@slack_bob:example.org").next().is_some());
    }

    #[test]
    fn bad_regexes_duplicates_and_overlaps_are_refused_by_name() {
        let bad = Registry::new(vec![registration("irc", "@irc_(", true)], "example.org").unwrap_err();
        assert!(bad.to_string().contains("irc: namespaces.users: bad regex"), "{bad}");

        let twice = Registry::new(
            vec![
                registration("irc", "@irc_.*", true),
                registration("irc", "@other_.*", true),
            ],
            "example.org",
        )
        .unwrap_err();
        assert!(twice.to_string().contains("the same id twice"), "{twice}");

        let mut same_token = registration("b", "@b_.*", true);
        let first = registration("a", "@a_.*", true);
        same_token.as_token = first.as_token.clone();
        let tokens = Registry::new(vec![first.clone(), same_token], "example.org").unwrap_err();
        assert!(tokens.to_string().contains("the same as_token"), "{tokens}");

        let mut crossed = registration("b", "@b_.*", true);
        crossed.as_token = first.hs_token.clone();
        assert!(Registry::new(vec![first, crossed], "example.org").is_err());

        let overlap = Registry::new(
            vec![registration("a", "@same_.*", true), registration("b", "@same_.*", true)],
            "example.org",
        )
        .unwrap_err();
        assert!(overlap.to_string().contains("exclusively"), "{overlap}");

        let sender_inside = Registry::new(
            vec![
                registration("a", "@.*bot:example.org", true),
                registration("b", "@b_.*", true),
            ],
            "example.org",
        )
        .unwrap_err();
        assert!(
            sender_inside.to_string().contains("exclusive user namespace"),
            "{sender_inside}"
        );
    }
}
