//! Push rules, read-only for now: the predefined rules are served to clients.

mod common;

use common::{TestServer, assert_error, rooms::V3};
use reqwest::StatusCode;

#[tokio::test]
async fn the_predefined_push_rules_are_served() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server.get(&format!("{V3}/pushrules/"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids = |kind: &str| -> Vec<String> {
        body["global"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["rule_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("override")[0], ".m.rule.master");
    assert!(ids("override").contains(&".m.rule.is_user_mention".to_owned()));
    assert!(ids("underride").contains(&".m.rule.message".to_owned()));
    assert!(ids("underride").contains(&".m.rule.encrypted_room_one_to_one".to_owned()));
    assert_error(
        &server.get(&format!("{V3}/pushrules/"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // Editing comes with push notifications; until then it is not a fake success.
    assert_error(
        &server
            .put(
                &format!("{V3}/pushrules/global/override/x"),
                alice.token(),
                serde_json::json!({}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    );
}
