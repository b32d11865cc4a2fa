//! What a guest account may call. The spec's guest access module lists the endpoints guests
//! may use (reading and sending in rooms they may join, sync, their devices, encryption keys);
//! Synapse adds what a client in guest mode needs around them (typing, receipts, presence,
//! filters, capabilities, logout). Every other endpoint that needs an access token answers a
//! guest 403 `M_GUEST_ACCESS_FORBIDDEN`: guests cannot create rooms, invite, upload media, set
//! pushers, create aliases or report events.

use http::Method;

/// (method, path after `/_matrix/client/{version}/`, with every `{parameter}` as `*`).
const ALLOWED: &[(Method, &str)] = &[
    // Reading rooms and media.
    (Method::GET, "rooms/*/state"),
    (Method::GET, "rooms/*/state/*"),
    (Method::GET, "rooms/*/state/*/*"),
    (Method::GET, "rooms/*/context/*"),
    (Method::GET, "rooms/*/event/*"),
    (Method::GET, "rooms/*/messages"),
    (Method::GET, "rooms/*/members"),
    (Method::GET, "rooms/*/initialSync"),
    (Method::GET, "sync"),
    (Method::POST, "org.matrix.simplified_msc3575/sync"),
    (Method::GET, "io.hearth.websocket/stream"),
    (Method::GET, "events"),
    (Method::GET, "media/download/*/*"),
    (Method::GET, "media/download/*/*/*"),
    (Method::GET, "media/thumbnail/*/*"),
    (Method::GET, "media/config"),
    (Method::GET, "rooms/*/relations/*"),
    (Method::GET, "rooms/*/relations/*/*"),
    (Method::GET, "rooms/*/relations/*/*/*"),
    (Method::GET, "rooms/*/threads"),
    // The room directory (its GET needs no token at all).
    (Method::POST, "publicRooms"),
    // Taking part in rooms (the join itself checks `m.room.guest_access`).
    (Method::POST, "rooms/*/join"),
    (Method::POST, "join/*"),
    (Method::POST, "rooms/*/leave"),
    (Method::PUT, "rooms/*/send/*/*"),
    (Method::PUT, "rooms/*/state/*"),
    (Method::PUT, "rooms/*/state/*/*"),
    (Method::PUT, "sendToDevice/*/*"),
    (Method::PUT, "rooms/*/typing/*"),
    (Method::POST, "rooms/*/receipt/*/*"),
    (Method::POST, "rooms/*/read_markers"),
    // Their own account (of the profile, only the display name: see `profile.rs`).
    (Method::PUT, "profile/*/*"),
    (Method::DELETE, "profile/*/*"),
    (Method::GET, "devices"),
    (Method::GET, "devices/*"),
    (Method::PUT, "devices/*"),
    (Method::GET, "account/whoami"),
    (Method::GET, "capabilities"),
    (Method::POST, "logout"),
    (Method::GET, "presence/*/status"),
    (Method::PUT, "presence/*/status"),
    (Method::POST, "user/*/filter"),
    (Method::GET, "user/*/filter/*"),
    // End-to-end encryption.
    (Method::POST, "keys/upload"),
    (Method::POST, "keys/query"),
    (Method::POST, "keys/claim"),
    (Method::GET, "keys/changes"),
];

/// Whether a guest may call `method` on the route `template` (axum's matched path, such as
/// `/_matrix/client/v3/rooms/{room_id}/join`).
pub fn may_call(method: &Method, template: &str) -> bool {
    // The legacy media paths (`/_matrix/media/v3/config`) are the client ones under `media/`.
    let (prefix, rest) = if let Some(rest) = template.strip_prefix("/_matrix/client/") {
        ("", rest)
    } else if let Some(rest) = template.strip_prefix("/_matrix/media/") {
        ("media/", rest)
    } else {
        return false;
    };
    let Some((_version, rest)) = rest.split_once('/') else {
        return false;
    };
    let mut shape = String::from(prefix);
    for (index, segment) in rest.split('/').enumerate() {
        if index > 0 {
            shape.push('/');
        }
        // A trailing `/` is an empty parameter (`/state/m.room.topic/`: the empty state key).
        let parameter = segment.starts_with('{') || segment.is_empty();
        shape.push_str(if parameter { "*" } else { segment });
    }
    ALLOWED
        .iter()
        .any(|(allowed, path)| allowed == method && *path == shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_get_the_listed_endpoints_only() {
        assert!(may_call(&Method::POST, "/_matrix/client/v3/rooms/{room_id}/join"));
        assert!(may_call(&Method::GET, "/_matrix/client/r0/sync"));
        assert!(may_call(
            &Method::PUT,
            "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"
        ));
        assert!(may_call(
            &Method::GET,
            "/_matrix/client/v1/media/download/{server_name}/{media_id}"
        ));
        assert!(may_call(
            &Method::POST,
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
        ));
        assert!(!may_call(&Method::POST, "/_matrix/client/v3/createRoom"));
        assert!(!may_call(&Method::POST, "/_matrix/client/v3/rooms/{room_id}/invite"));
        assert!(!may_call(&Method::POST, "/_matrix/client/v3/pushers/set"));
        assert!(!may_call(
            &Method::PUT,
            "/_matrix/client/v3/directory/room/{room_alias}"
        ));
        assert!(!may_call(&Method::POST, "/_matrix/media/v3/upload"));
        assert!(may_call(&Method::GET, "/_matrix/media/v3/config"));
        assert!(may_call(
            &Method::GET,
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/"
        ));
        assert!(may_call(
            &Method::PUT,
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/"
        ));
        assert!(may_call(&Method::POST, "/_matrix/client/v3/publicRooms"));
        assert!(!may_call(
            &Method::DELETE,
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}"
        ));
    }
}
