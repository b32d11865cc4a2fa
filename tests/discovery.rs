//! Discovery, cross-cutting errors, CORS and the operations endpoints.

use crate::common::{TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The first backticked cell of each table row in the section of docs/versions.md headed
/// `heading`.
fn documented(heading: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/versions.md");
    let text = std::fs::read_to_string(path).expect("docs/versions.md exists");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("docs/versions.md has a section `## {heading}`"));
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn versions_lists_exactly_what_the_docs_say_is_advertised() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // No silent additions, no stale docs: the same list, in the same order.
    assert_eq!(versions, documented("Advertised spec versions"));
    // Clients that compare versions (ruma) treat a listed version as covering all earlier
    // ones, so the list has no holes.
    for (index, version) in versions.iter().enumerate() {
        assert_eq!(*version, format!("v1.{}", index + 1));
    }
    // Clients switch on authenticated media at v1.11 and server-side threads at v1.4.
    assert!(versions.contains(&"v1.11") && versions.contains(&"v1.4"));

    let features = body["unstable_features"].as_object().unwrap();
    assert!(features.values().all(|on| on == true), "{features:?}");
    let mut listed: Vec<&str> = features.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut expected = documented("unstable_features");
    expected.sort_unstable();
    assert_eq!(listed, expected);
    for flag in [
        "org.matrix.msc3440.stable",
        "org.matrix.msc3916.stable",
        "org.matrix.simplified_msc3575",
    ] {
        assert_eq!(features[flag], true, "{flag}");
    }
}

#[tokio::test]
async fn well_known_documents_come_from_config_and_are_404_without_it() {
    let bare = TestServer::start().await;
    assert_error(
        &bare.get("/.well-known/matrix/client", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &bare.get("/.well-known/matrix/server", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    let configured = TestServer::start_with(|c| {
        c.public_baseurl = Some("https://matrix.example.org/".into());
        c.well_known.server = Some("matrix.example.org:443".into());
    })
    .await;
    let (status, body) = configured.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.homeserver"]["base_url"], "https://matrix.example.org/");
    let (status, body) = configured.get("/.well-known/matrix/server", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "m.server": "matrix.example.org:443" }));
}

#[tokio::test]
async fn capabilities_need_a_token_and_describe_the_server() {
    let server = TestServer::start().await;
    assert_error(
        &server.get("/_matrix/client/v3/capabilities", None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let alice = server.register("alice").await;
    let (status, body) = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["capabilities"]["m.3pid_changes"]["enabled"], false);
    assert_eq!(body["capabilities"]["m.room_versions"]["default"], "12");
    let available = body["capabilities"]["m.room_versions"]["available"]
        .as_object()
        .unwrap();
    assert_eq!(available.len(), 12);
    assert!(available.values().all(|stability| stability == "stable"));
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_m_unrecognized() {
    let server = TestServer::start().await;
    assert_error(
        &server.get("/_matrix/client/v3/no_such_endpoint", None).await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    );
    assert_error(&server.get("/", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_error(
        &server
            .request(Method::DELETE, "/_matrix/client/versions", None, None)
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server.post("/_matrix/client/v3/account/whoami", None, json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn malformed_bodies_get_not_json_or_bad_json() {
    let server = TestServer::start().await;
    let login = "/_matrix/client/v3/login";
    assert_error(
        &server.raw(Method::POST, login, None, b"{\"type\":".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &server.raw(Method::POST, login, None, vec![0xff, 0xfe]).await,
        StatusCode::BAD_REQUEST,
        "M_NOT_JSON",
    );
    assert_error(
        &server.raw(Method::POST, login, None, b"[1, 2]".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    assert_error(
        &server
            .post(login, None, json!({ "type": "m.login.password", "password": 7 }))
            .await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_m_too_large() {
    let server = TestServer::start_with(|c| c.limits.max_request_body_bytes = 4096).await;
    let alice = server.register("alice").await;
    let big = json!({ "padding": "x".repeat(5000) });
    let result = server
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.big",
            alice.token(),
            big,
        )
        .await;
    assert_error(&result, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");
    // Nothing was stored.
    let result = server
        .get(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.big",
            alice.token(),
        )
        .await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn cors_preflight_is_answered_for_browser_clients() {
    let server = TestServer::start().await;
    let response = server
        .http
        .request(Method::OPTIONS, format!("{}/_matrix/client/v3/login", server.base))
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let methods = response.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );

    let response = server
        .http
        .get(format!("{}/_matrix/client/versions", server.base))
        .header("Origin", "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    // Web clients may read a download's file name and range.
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("content-disposition") && exposed.contains("content-range"),
        "{exposed}"
    );
}

#[tokio::test]
async fn health_and_metrics_report_on_the_server() {
    let server = TestServer::start().await;
    let response = server.http.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "OK");

    server.get("/_matrix/client/versions", None).await;
    let response = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"hearth_http_requests_total{method="GET",endpoint="/_matrix/client/versions",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("hearth_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("hearth_db_pool_connections "), "{text}");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(format!("{}/_matrix/client/versions", server.base))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));
}
