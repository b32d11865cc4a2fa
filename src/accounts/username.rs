//! The rules for the localpart of a new user ID.

use ruma::{OwnedUserId, ServerName, UserId};

use crate::error::ApiError;
use http::StatusCode;
use ruma::api::error::ErrorKind;

/// Checks a requested username and builds the user ID. Usernames are case-folded to lower case
/// first, as Synapse does, so `Alice` registers `@alice`.
pub fn user_id_for_new_account(username: &str, server_name: &ServerName) -> Result<OwnedUserId, ApiError> {
    let localpart = username.to_lowercase();
    let invalid = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, message);
    if localpart.is_empty() {
        return Err(invalid("Username must not be empty"));
    }
    if !localpart
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
    {
        return Err(invalid("Username may only contain a-z, 0-9 and . _ = - / +"));
    }
    if localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("Numeric usernames are reserved for generated accounts"));
    }
    if localpart.starts_with('_') {
        return Err(invalid(
            "Usernames starting with '_' are reserved for application services",
        ));
    }
    let user_id = format!("@{localpart}:{server_name}");
    if user_id.len() > 255 {
        return Err(invalid("User ID must be at most 255 bytes long"));
    }
    UserId::parse(user_id).map_err(|_| invalid("Invalid username"))
}

/// The user ID an application service registers: its own namespace decides what is allowed, so
/// only the spec's user ID grammar applies (historical characters, a leading `_`, digits, any
/// case, as Synapse accepts them from appservices).
pub fn user_id_for_appservice(username: &str, server_name: &ServerName) -> Result<OwnedUserId, ApiError> {
    let invalid = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, message);
    // The spec's historical user ID characters: printable ASCII but ':'.
    if username.is_empty() || !username.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b':') {
        return Err(invalid("username must be a localpart of printable ASCII without ':'"));
    }
    if username.starts_with('@') {
        return Err(invalid("username must be a localpart, not a user ID"));
    }
    let user_id = format!("@{username}:{server_name}");
    if user_id.len() > 255 {
        return Err(invalid("User ID must be at most 255 bytes long"));
    }
    UserId::parse(user_id).map_err(|_| invalid("Invalid username"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str) -> Result<String, String> {
        let server: &ServerName = "example.org".try_into().unwrap();
        user_id_for_new_account(name, server)
            .map(|id| id.to_string())
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn usernames_follow_the_spec_grammar() {
        assert_eq!(check("Alice").unwrap(), "@alice:example.org");
        assert_eq!(check("a.b_c=d-e/f+g").unwrap(), "@a.b_c=d-e/f+g:example.org");
        assert!(check("").is_err());
        assert!(check("al ice").is_err());
        assert!(check("al:ice").is_err());
        assert!(check("_bridge").is_err());
        assert!(check("12345").is_err());
        assert!(check("r2d2").is_ok());
        assert!(check("émile").is_err());
        assert!(check(&"a".repeat(300)).is_err());
        let server: &ServerName = "example.org".try_into().unwrap();
        let ghost = |name: &str| user_id_for_appservice(name, server).map(|id| id.to_string());
        assert_eq!(ghost("_irc_Alice").unwrap(), "@_irc_Alice:example.org");
        assert_eq!(ghost("_discord_12345").unwrap(), "@_discord_12345:example.org");
        assert!(ghost("").is_err() && ghost("a:b").is_err() && ghost("al ice").is_err());
    }
}
