//! Ghost users: the Matrix users that stand for webhook senders, `@webhook_<name>:<server>`.
//! The registration's users namespace (`@webhook_.*:<server>`, exclusive) makes them ours
//! alone: nobody else can register them, and the homeserver lets us act as them.

use ruma::{OwnedUserId, ServerName, UserId};

/// Every ghost's localpart starts with this; the registration's regex must match it.
pub const GHOST_PREFIX: &str = "webhook_";

/// A user ID may be at most 255 bytes long; the localpart gets what the server name leaves.
const MAX_USER_ID_BYTES: usize = 255;

/// The ghost standing for a webhook `username`: lower-cased, and every character a
/// localpart may not hold (`[a-z0-9._=-]` are allowed) turned into `_`, so "GitHub CI"
/// is `@webhook_github_ci`. `None` when nothing usable is left (only punctuation).
pub fn ghost_user_id(username: &str, server_name: &ServerName) -> Option<OwnedUserId> {
    let room_for_name = MAX_USER_ID_BYTES.checked_sub(GHOST_PREFIX.len() + server_name.as_str().len() + 2)?;
    let name: String = username
        .trim()
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if matches!(c, 'a'..='z' | '0'..='9' | '.' | '=' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(room_for_name)
        .collect();
    if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    UserId::parse(format!("@{GHOST_PREFIX}{name}:{server_name}")).ok()
}

/// Whether `user` is one of our ghosts (so its messages are not forwarded back out).
pub fn is_ghost(user: &UserId, server_name: &ServerName) -> bool {
    user.server_name() == server_name && user.localpart().starts_with(GHOST_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("example.org").expect("a valid server name")
    }

    #[test]
    fn a_username_becomes_a_valid_localpart() {
        let ghost = ghost_user_id("GitHub CI", server()).expect("a usable name");
        assert_eq!(ghost.as_str(), "@webhook_github_ci:example.org");
        let ghost = ghost_user_id("Zoë/ops+1", server()).expect("a usable name");
        assert_eq!(ghost.as_str(), "@webhook_zo__ops_1:example.org");
    }

    #[test]
    fn a_username_without_letters_or_digits_is_refused() {
        assert_eq!(ghost_user_id("", server()), None);
        assert_eq!(ghost_user_id(" !!! ", server()), None);
    }

    #[test]
    fn a_long_username_is_cut_to_fit_a_user_id() {
        let ghost = ghost_user_id(&"a".repeat(400), server()).expect("a usable name");
        assert_eq!(ghost.as_str().len(), MAX_USER_ID_BYTES);
    }

    #[test]
    fn ghosts_are_recognised_by_prefix_and_server() {
        let ghost = <&UserId>::try_from("@webhook_ci:example.org").expect("a valid user ID");
        let other_server = <&UserId>::try_from("@webhook_ci:elsewhere.org").expect("a valid user ID");
        let person = <&UserId>::try_from("@alice:example.org").expect("a valid user ID");
        assert!(is_ghost(ghost, server()));
        assert!(!is_ghost(other_server, server()));
        assert!(!is_ghost(person, server()));
    }
}
