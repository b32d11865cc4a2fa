//! The spec-schema check of the test harness catches what it is there to catch: a `null` or a
//! wrong type where the spec has a string, a missing required field, an undocumented success
//! status, an error that is not a Matrix error, an unknown endpoint answering anything but
//! "unrecognized". (Were it to accept everything, every other test would check nothing.)

use crate::common::schema::{check, push_notification_violations};
use serde_json::{Value, json};

fn rejects(method: &str, path: &str, status: u16, body: Value) {
    let result = std::panic::catch_unwind(|| check(method, path, status, &body, true));
    assert!(result.is_err(), "{method} {path} {status} {body} was accepted");
}

fn accepts(method: &str, path: &str, status: u16, body: Value) {
    check(method, path, status, &body, true);
}

#[test]
fn wrong_shapes_are_caught_and_right_ones_pass() {
    let device = "/_matrix/client/v3/devices/ABC";
    accepts(
        "GET",
        device,
        200,
        json!({ "device_id": "ABC", "display_name": "phone" }),
    );
    accepts("GET", device, 200, json!({ "device_id": "ABC" }));
    rejects("GET", device, 200, json!({ "device_id": "ABC", "display_name": null }));
    rejects("GET", device, 200, json!({ "display_name": "phone" }));
    accepts(
        "GET",
        "/_matrix/client/r0/devices/ABC",
        200,
        json!({ "device_id": "ABC" }),
    );

    let register = "/_matrix/client/v3/register";
    accepts("POST", register, 200, json!({ "user_id": "@a:localhost" }));
    rejects(
        "POST",
        register,
        200,
        json!({ "user_id": "@a:localhost", "device_id": null }),
    );
    // User-interactive auth must carry params.
    accepts(
        "POST",
        register,
        401,
        json!({ "flows": [{ "stages": ["m.login.dummy"] }], "params": {}, "session": "s" }),
    );
    rejects(
        "POST",
        register,
        401,
        json!({ "flows": [{ "stages": ["m.login.dummy"] }], "session": "s" }),
    );

    // Sync: types deep inside are checked.
    let sync = "/_matrix/client/v3/sync?since=s1";
    accepts("GET", sync, 200, json!({ "next_batch": "s2" }));
    rejects("GET", sync, 200, json!({ "next_batch": 2 }));
    rejects("GET", sync, 200, json!({}));

    // Errors: documented or not, a Matrix error.
    accepts(
        "GET",
        device,
        404,
        json!({ "errcode": "M_NOT_FOUND", "error": "No such device" }),
    );
    rejects("GET", device, 404, json!({ "message": "not found" }));
    accepts(
        "GET",
        device,
        401,
        json!({ "errcode": "M_MISSING_TOKEN", "error": "Missing access token" }),
    );
    // A success status the endpoint does not document.
    rejects("GET", device, 201, json!({ "device_id": "ABC" }));
    // Unknown endpoints may only be unrecognized.
    accepts(
        "GET",
        "/_matrix/client/v3/nonsense",
        404,
        json!({ "errcode": "M_UNRECOGNIZED", "error": "x" }),
    );
    rejects("GET", "/_matrix/client/v3/nonsense", 200, json!({}));
    // Hearth's own endpoints are left alone.
    accepts("GET", "/_synapse/admin/v1/register", 200, json!({ "nonce": 1 }));
}

#[test]
fn push_gateway_bodies_are_checked() {
    let good = json!({ "notification": { "devices": [{ "app_id": "a", "pushkey": "k" }], "counts": { "unread": 1 } } });
    assert!(push_notification_violations(&good).is_empty());
    let bad = json!({ "notification": { "devices": [{ "app_id": "a" }], "counts": { "unread": "1" } } });
    assert_eq!(
        push_notification_violations(&bad).len(),
        2,
        "{:?}",
        push_notification_violations(&bad)
    );
}
