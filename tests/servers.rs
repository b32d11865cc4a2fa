//! Two servers in one test (the helper federation tests start from): each keeps its own name,
//! signing key, accounts and rooms.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::TestServer;

#[tokio::test]
async fn two_servers_run_side_by_side_with_their_own_names_keys_and_rooms() {
    let (a, b) = TestServer::start_pair(|_, _| {}).await;
    assert_eq!(a.addr.ip().to_string(), "127.0.0.2");
    assert_eq!(b.addr.ip().to_string(), "127.0.0.3");

    let mut keys = Vec::new();
    for server in [&a, &b] {
        let (status, body) = server.get("/_matrix/key/v2/server", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["server_name"], server.server_name());
        let key_ids: Vec<String> = body["verify_keys"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(key_ids.len(), 1, "{body}");
        keys.push(body["verify_keys"][&key_ids[0]]["key"].as_str().unwrap().to_owned());
    }
    assert_ne!(keys[0], keys[1], "each server signs with its own key");

    let alice_a = a.register("alice").await;
    let alice_b = b.register("alice").await;
    assert_eq!(alice_a.user_id, "@alice:hearth-a.test");
    assert_eq!(alice_b.user_id, "@alice:hearth-b.test");

    let (status, created) = a
        .post("/_matrix/client/v3/createRoom", alice_a.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let room_id = created["room_id"].as_str().unwrap();
    assert!(
        room_id.ends_with(":hearth-a.test") || !room_id.contains(':'),
        "{room_id}"
    );
    // The other server does not know the room (no federation yet): joining it is refused.
    let (status, _) = b
        .post(
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            alice_b.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    a.stop().await;
    b.stop().await;
}
