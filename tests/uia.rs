//! User-interactive auth as clients drive it: every 401 carries `params`; a registration
//! session remembers its first request's parameters and answers a retry with the account it
//! made; non-ASCII passwords; someone else's credentials are a 403.

use crate::common::{PASSWORD, Session, TestServer, password_auth, rooms::V3};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn every_uia_challenge_carries_params() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "a", "password": PASSWORD }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["params"], json!({}), "{body}");
    let alice = server.register("alice").await;
    let path = format!("{V3}/devices/{}", alice.device_id);
    let (status, body) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["params"], json!({}), "{body}");
    assert!(body["session"].is_string());
    // A wrong password: 401 again, with params, the stage error and the same session.
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.user_id },
                       "password": "wrong", "session": body["session"] });
    let (status, again) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({ "auth": auth })))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(again["params"], json!({}), "{again}");
    assert_eq!(again["errcode"], "M_FORBIDDEN");
    assert_eq!(again["session"], body["session"]);
}

#[tokio::test]
async fn a_registration_session_remembers_its_parameters_and_answers_a_retry_alike() {
    let server = TestServer::start().await;
    // The first request names everything; the second only authenticates.
    let (status, first) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "alice", "password": "pässwörd ünïcode 🔑",
                    "initial_device_display_name": "Alice's phone" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let session = first["session"].as_str().unwrap().to_owned();
    let auth = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let auth_retry = auth.clone();
    let (status, done) = server.post(REGISTER, None, auth.clone()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["user_id"], "@alice:localhost");
    let (_, device) = server
        .get(
            &format!("{V3}/devices/{}", done["device_id"].as_str().unwrap()),
            done["access_token"].as_str(),
        )
        .await;
    assert_eq!(device["display_name"], "Alice's phone");
    // The remembered (non-ASCII) password is the account's.
    let (status, login) = server.login("alice", "pässwörd ünïcode 🔑").await;
    assert_eq!(status, StatusCode::OK, "{login}");

    // The response was lost: the same request again gets the same account, logged in anew.
    let (status, retry) = server.post(REGISTER, None, auth.clone()).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["user_id"], "@alice:localhost");
    assert!(retry["access_token"].is_string());
    // With the username too, the same; another username is refused.
    let mut with_name = auth.clone();
    with_name["username"] = json!("alice");
    let (status, retry) = server.post(REGISTER, None, with_name).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["user_id"], "@alice:localhost");
    let mut other = auth.clone();
    other["username"] = json!("mallory");
    let (status, refused) = server.post(REGISTER, None, other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = server.get(&format!("{V3}/profile/@mallory:localhost"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A deactivated account is not logged in again by a retry.
    let alice_token = retry["access_token"].as_str().unwrap().to_owned();
    let path = format!("{V3}/account/deactivate");
    let (_, challenge) = server.post(&path, Some(&alice_token), json!({})).await;
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                       "password": "pässwörd ünïcode 🔑", "session": challenge["session"] });
    let (status, body) = server.post(&path, Some(&alice_token), json!({ "auth": auth })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.post(REGISTER, None, auth_retry.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // inhibit_login remembered from the first request.
    let (_, first) = server
        .post(
            REGISTER,
            None,
            json!({ "username": "bob", "password": PASSWORD, "inhibit_login": true }),
        )
        .await;
    let auth = json!({ "auth": { "type": "m.login.dummy", "session": first["session"] } });
    let (status, done) = server.post(REGISTER, None, auth).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["user_id"], "@bob:localhost");
    assert!(done.get("access_token").is_none(), "{done}");

    // A password that breaks the policy is refused at once, not remembered.
    let (status, body) = server
        .post(REGISTER, None, json!({ "username": "carol", "password": "" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_WEAK_PASSWORD");
}

#[tokio::test]
async fn someone_elses_credentials_are_a_403_and_delete_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Alice deletes her own device authenticating as Bob (with Bob's real password).
    let path = format!("{V3}/devices/{}", alice.device_id);
    let (status, challenge) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = password_auth(&bob.user_id, challenge["session"].as_str());
    let (status, body) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({ "auth": auth })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    // A wrong password for Bob gets the very same answer: it tells nothing about his password.
    let mut wrong = password_auth(&bob.user_id, challenge["session"].as_str());
    wrong["password"] = json!("not bob's");
    let (status, body) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({ "auth": wrong })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = server.get(&format!("{V3}/account/whoami"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "the device survives");
    // Bob's device, by Alice with her own password: not hers to delete (404), Bob's survives.
    let path = format!("{V3}/devices/{}", bob.device_id);
    let (_, challenge) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({})))
        .await;
    let auth = password_auth(&alice.user_id, challenge["session"].as_str());
    let (status, body) = server
        .request(Method::DELETE, &path, alice.token(), Some(json!({ "auth": auth })))
        .await;
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::OK,
        "{status} {body}"
    );
    let (status, _) = server.get(&format!("{V3}/account/whoami"), bob.token()).await;
    assert_eq!(status, StatusCode::OK, "Bob's device survives");
    // The localpart alone names the user too.
    let (_, challenge) = server
        .request(Method::DELETE, &path, bob.token(), Some(json!({})))
        .await;
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" },
                       "password": PASSWORD, "session": challenge["session"] });
    let (status, body) = server
        .request(Method::DELETE, &path, bob.token(), Some(json!({ "auth": auth })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let _: (Session, Value) = (bob, body);
}
