//! Push rules: the predefined rules, editing them, what they make of events (notify,
//! highlight, nothing), the unread counts in sync that follow, and `/notifications`.

use crate::common;

use crate::common::{
    Session, TestServer, assert_error,
    rooms::{V3, create_room, enc, join, sync},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn rule_ids(rules: &Value, kind: &str) -> Vec<String> {
    rules["global"][kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_predefined_push_rules_are_served() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server.get(&format!("{V3}/pushrules/"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let overrides = rule_ids(&body, "override");
    assert_eq!(overrides[0], ".m.rule.master");
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.contains_display_name",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
    ] {
        assert!(overrides.contains(&id.to_owned()), "{id}");
    }
    let underrides = rule_ids(&body, "underride");
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ] {
        assert!(underrides.contains(&id.to_owned()), "{id}");
    }
    let (status, global) = server.get(&format!("{V3}/pushrules/global/"), alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(global["override"], body["global"]["override"]);
    let (status, rule) = server
        .get(
            &format!("{V3}/pushrules/global/underride/.m.rule.message"),
            alice.token(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule["default"], true);
    assert_eq!(rule["actions"], json!(["notify"]));

    // The first sync carries them as account data.
    let body = sync(&server, &alice, "").await;
    let events = body["account_data"]["events"].as_array().unwrap();
    assert!(events.iter().any(|event| event["type"] == "m.push_rules"), "{body}");
    // So does sliding sync's account data extension.
    let (status, body) = server
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            alice.token(),
            json!({ "extensions": { "account_data": { "enabled": true } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let global = body["extensions"]["account_data"]["global"].as_array().unwrap();
    assert!(global.iter().any(|event| event["type"] == "m.push_rules"), "{body}");

    assert_error(
        &server.get(&format!("{V3}/pushrules/"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &server
            .get(&format!("{V3}/pushrules/global/override/nope"), alice.token())
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

async fn put_rule(server: &TestServer, who: &Session, path: &str, body: Value) -> (StatusCode, Value) {
    server
        .put(&format!("{V3}/pushrules/global/{path}"), who.token(), body)
        .await
}

#[tokio::test]
async fn rules_are_added_placed_changed_and_removed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let since = sync(&server, &alice, "").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let cond = |pattern: &str| {
        json!({
            "actions": ["notify", { "set_tweak": "sound", "value": "bing" }],
            "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": pattern }],
        })
    };
    let (status, body) = put_rule(&server, &alice, "override/first", cond("one")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = put_rule(&server, &alice, "override/second", cond("two")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .request(
            Method::PUT,
            &format!("{V3}/pushrules/global/override/zeroth?before=first"),
            alice.token(),
            Some(cond("zero")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = server
        .request(
            Method::PUT,
            &format!("{V3}/pushrules/global/override/middle?after=first"),
            alice.token(),
            Some(cond("mid")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, rules) = server.get(&format!("{V3}/pushrules/"), alice.token()).await;
    let user_rules: Vec<String> = rule_ids(&rules, "override")
        .into_iter()
        .filter(|id| !id.starts_with('.'))
        .collect();
    // A rule placed nowhere goes first (highest priority of its kind), as in Synapse.
    assert_eq!(user_rules, ["second", "zeroth", "first", "middle"]);
    // User override rules come after the master rule and before the other predefined ones.
    assert_eq!(rule_ids(&rules, "override")[0], ".m.rule.master");

    // Content and room rules.
    let (status, body) = put_rule(
        &server,
        &alice,
        "content/cats",
        json!({ "actions": ["notify"], "pattern": "cat*" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put_rule(&server, &alice, "room/!quiet:localhost", json!({ "actions": [] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Enabled and actions.
    let (status, _) = put_rule(
        &server,
        &alice,
        ".m.rule.message/../../override/first/enabled",
        json!({}),
    )
    .await;
    assert_ne!(status, StatusCode::OK);
    let (status, _) = put_rule(&server, &alice, "override/first/enabled", json!({ "enabled": false })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, enabled) = server
        .get(&format!("{V3}/pushrules/global/override/first/enabled"), alice.token())
        .await;
    assert_eq!(enabled, json!({ "enabled": false }));
    let (status, _) = put_rule(
        &server,
        &alice,
        "underride/.m.rule.message/enabled",
        json!({ "enabled": false }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put_rule(
        &server,
        &alice,
        "override/.m.rule.is_room_mention/actions",
        json!({ "actions": [] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, actions) = server
        .get(
            &format!("{V3}/pushrules/global/override/.m.rule.is_room_mention/actions"),
            alice.token(),
        )
        .await;
    assert_eq!(actions, json!({ "actions": [] }));

    // Delete.
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{V3}/pushrules/global/override/middle"),
            alice.token(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .get(&format!("{V3}/pushrules/global/override/middle"), alice.token())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every change reached the client as m.push_rules account data.
    let body = sync(&server, &alice, &format!("since={since}")).await;
    let rules = body["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "m.push_rules")
        .expect("m.push_rules in sync")
        .clone();
    let content = &rules["content"];
    assert_eq!(
        rule_ids(content, "override")
            .into_iter()
            .filter(|id| !id.starts_with('.'))
            .collect::<Vec<_>>(),
        ["second", "zeroth", "first"]
    );
    let message = content["global"]["underride"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["rule_id"] == ".m.rule.message")
        .unwrap();
    assert_eq!(message["enabled"], false);
    // Another user's rules are untouched.
    let bob = server.register("bob").await;
    let (_, rules) = server.get(&format!("{V3}/pushrules/"), bob.token()).await;
    assert_eq!(rule_ids(&rules, "override")[0], ".m.rule.master");
    assert!(!rule_ids(&rules, "override").contains(&"first".to_owned()));
}

#[tokio::test]
async fn bad_rule_edits_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (_, before) = server.get(&format!("{V3}/pushrules/"), alice.token()).await;
    let ok = json!({ "actions": ["notify"], "conditions": [] });
    // The server's rule IDs cannot be written.
    assert_error(
        &put_rule(&server, &alice, "override/.m.rule.mine", ok.clone()).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    // before/after must name a user rule of the same kind.
    assert_error(
        &server
            .request(
                Method::PUT,
                &format!("{V3}/pushrules/global/override/x?before=nope"),
                alice.token(),
                Some(ok.clone()),
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Malformed bodies.
    let (status, body) = put_rule(&server, &alice, "override/x", json!({ "actions": "notify" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = put_rule(&server, &alice, "content/x", json!({ "actions": ["notify"] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .raw(
            Method::PUT,
            &format!("{V3}/pushrules/global/override/x"),
            alice.token(),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Unknown kinds, malformed paths (400, as Synapse: not 404 or 405), unknown rules.
    let (status, _) = put_rule(&server, &alice, "sideways/x", ok.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for path in [
        "global/sideways/x",
        "global/override/",
        "global/override/x/colour",
        "elsewhere/override/x",
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let body = (method == Method::PUT).then(|| ok.clone());
            let result = server
                .request(method.clone(), &format!("{V3}/pushrules/{path}"), alice.token(), body)
                .await;
            assert_eq!(result.0, StatusCode::BAD_REQUEST, "{method} {path}: {}", result.1);
            assert!(result.1["errcode"].is_string(), "{}", result.1);
        }
    }
    // A room rule's ID is the room's ID; another kind of ID is refused.
    let (status, body) = put_rule(&server, &alice, "room/not-a-room", json!({ "actions": [] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_error(
        &put_rule(&server, &alice, "override/nope/enabled", json!({ "enabled": true })).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &put_rule(&server, &alice, "override/nope/actions", json!({ "actions": [] })).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // The predefined rules cannot be deleted.
    let (status, body) = server
        .request(
            Method::DELETE,
            &format!("{V3}/pushrules/global/override/.m.rule.master"),
            alice.token(),
            None,
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert_error(
        &server
            .request(
                Method::DELETE,
                &format!("{V3}/pushrules/global/override/nope"),
                alice.token(),
                None,
            )
            .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    // Nor written as account data.
    let (status, _) = server
        .put(
            &format!("{V3}/user/{}/account_data/m.push_rules", enc(&alice.user_id)),
            alice.token(),
            json!({ "global": {} }),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = put_rule(&server, &alice, "override/x", ok).await;
    assert_eq!(status, StatusCode::OK);
    let (_, after) = server.get(&format!("{V3}/pushrules/"), alice.token()).await;
    let added: Vec<String> = rule_ids(&after, "override")
        .into_iter()
        .filter(|id| !rule_ids(&before, "override").contains(id))
        .collect();
    assert_eq!(added, ["x"], "only the one good edit took");
    assert_error(
        &server
            .put(
                &format!("{V3}/pushrules/global/override/y"),
                None,
                json!({ "actions": [] }),
            )
            .await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
}

async fn send(server: &TestServer, who: &Session, room: &str, event_type: &str, content: Value) -> String {
    let txn = format!("t{}", rand_suffix());
    let (status, body) = server
        .put(
            &format!("{V3}/rooms/{room}/send/{event_type}/{txn}"),
            who.token(),
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "send: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

fn counts(body: &Value, room: &str) -> (i64, i64) {
    let unread = &body["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"]
            .as_i64()
            .unwrap_or_else(|| panic!("no counts for {room}: {body}")),
        unread["highlight_count"].as_i64().unwrap(),
    )
}

async fn receipt(server: &TestServer, who: &Session, room: &str, kind: &str, event_id: &str, body: Value) {
    let (status, answer) = server
        .post(
            &format!("{V3}/rooms/{room}/receipt/{kind}/{}", enc(event_id)),
            who.token(),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "receipt: {answer}");
}

/// alice, bob and carol in a group room; alice and bob in a DM.
async fn group_and_dm(server: &TestServer) -> (Session, Session, String, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = create_room(server, &bob, json!({ "preset": "public_chat", "name": "Group" })).await;
    assert_eq!(join(server, &alice, &group).await.0, StatusCode::OK);
    assert_eq!(join(server, &carol, &group).await.0, StatusCode::OK);
    let dm = create_room(
        server,
        &bob,
        json!({ "preset": "trusted_private_chat", "invite": [alice.user_id], "is_direct": true }),
    )
    .await;
    assert_eq!(join(server, &alice, &dm).await.0, StatusCode::OK);
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            alice.token(),
            json!({ "displayname": "Alice Liddell" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    (alice, bob, group, dm)
}

#[tokio::test]
async fn default_rules_decide_counts_and_receipts_clear_them() {
    let server = TestServer::start().await;
    let (alice, bob, group, dm) = group_and_dm(&server).await;
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (0, 0));
    let since = body["next_batch"].as_str().unwrap().to_owned();

    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    // A plain message in a group notifies.
    send(&server, &bob, &group, "m.room.message", text("hello all")).await;
    // A notice does not.
    send(
        &server,
        &bob,
        &group,
        "m.room.message",
        json!({ "msgtype": "m.notice", "body": "bot says" }),
    )
    .await;
    // A mention highlights.
    send(
        &server,
        &bob,
        &group,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "hi there", "m.mentions": { "user_ids": [alice.user_id] } }),
    )
    .await;
    // So does the display name.
    send(&server, &bob, &group, "m.room.message", text("where is Alice Liddell?")).await;
    // Encrypted messages in a group notify.
    let encrypted = send(
        &server,
        &bob,
        &group,
        "m.room.encrypted",
        json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "abc", "sender_key": "k", "session_id": "s", "device_id": "D" }),
    )
    .await;
    // A reaction does not.
    send(
        &server,
        &bob,
        &group,
        "m.reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": encrypted, "key": "👍" } }),
    )
    .await;
    // A DM message notifies.
    let dm_message = send(&server, &bob, &dm, "m.room.message", text("psst")).await;
    // Your own messages never count.
    send(&server, &alice, &group, "m.room.message", text("my own")).await;

    let body = sync(&server, &alice, &format!("since={since}")).await;
    assert_eq!(counts(&body, &group), (4, 2), "{}", body["rooms"]["join"][&group]);
    assert_eq!(counts(&body, &dm), (1, 0));
    let since = body["next_batch"].as_str().unwrap().to_owned();

    // A read receipt clears the room's counts; a private one does too.
    receipt(&server, &alice, &group, "m.read", &encrypted, json!({})).await;
    receipt(&server, &alice, &dm, "m.read.private", &dm_message, json!({})).await;
    let body = sync(&server, &alice, &format!("since={since}")).await;
    assert_eq!(counts(&body, &group), (0, 0));
    assert_eq!(counts(&body, &dm), (0, 0));

    // bob's counts are his own: alice's message is his one unread.
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body, &group), (1, 0));
}

#[tokio::test]
async fn counts_start_at_the_join_and_survive_profile_changes() {
    let server = TestServer::start().await;
    let (alice, bob, group, _) = group_and_dm(&server).await;
    let text = json!({ "msgtype": "m.text", "body": "one" });
    send(&server, &bob, &group, "m.room.message", text.clone()).await;
    send(&server, &bob, &group, "m.room.message", text.clone()).await;
    // A new display name writes a new member event; it is not a join, and reads nothing.
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            alice.token(),
            json!({ "displayname": "Alice L." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (2, 0));
    // Leaving and joining again starts over: what came before is not unread.
    let (status, _) = server
        .post(&format!("{V3}/rooms/{group}/leave"), alice.token(), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    send(&server, &bob, &group, "m.room.message", text.clone()).await;
    assert_eq!(join(&server, &alice, &group).await.0, StatusCode::OK);
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (0, 0));
    send(&server, &bob, &group, "m.room.message", text).await;
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (1, 0));
}

#[tokio::test]
async fn thread_counts_apart_when_asked_and_threaded_receipts() {
    let server = TestServer::start().await;
    let (alice, bob, group, _) = group_and_dm(&server).await;
    let root = send(
        &server,
        &bob,
        &group,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "root" }),
    )
    .await;
    let reply = json!({
        "msgtype": "m.text", "body": "in thread",
        "m.relates_to": { "rel_type": "m.thread", "event_id": root },
    });
    send(&server, &bob, &group, "m.room.message", reply.clone()).await;
    let last_reply = send(&server, &bob, &group, "m.room.message", reply).await;

    let filter = query_filter(json!({ "room": { "timeline": { "unread_thread_notifications": true } } }));
    let body = sync(&server, &alice, &format!("filter={filter}")).await;
    assert_eq!(counts(&body, &group), (1, 0), "main timeline only");
    let threads = &body["rooms"]["join"][&group]["unread_thread_notifications"];
    assert_eq!(threads[&root]["notification_count"], 2, "{threads}");
    // Without the filter flag: all together.
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (3, 0));

    // A receipt in the thread clears the thread only.
    receipt(
        &server,
        &alice,
        &group,
        "m.read",
        &last_reply,
        json!({ "thread_id": root }),
    )
    .await;
    let body = sync(&server, &alice, &format!("filter={filter}")).await;
    assert_eq!(counts(&body, &group), (1, 0));
    assert!(
        body["rooms"]["join"][&group]["unread_thread_notifications"]
            .get(&root)
            .is_none()
    );
    // A main-timeline receipt clears the main timeline.
    receipt(&server, &alice, &group, "m.read", &root, json!({ "thread_id": "main" })).await;
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (0, 0));
}

fn query_filter(filter: Value) -> String {
    common::rooms::query_value(&filter.to_string())
}

#[tokio::test]
async fn rule_edits_change_what_notifies() {
    let server = TestServer::start().await;
    let (alice, bob, group, dm) = group_and_dm(&server).await;
    // Mute the group; keyword "deploy" highlights everywhere.
    let (status, _) = put_rule(
        &server,
        &alice,
        &format!("room/{}", enc(&group)),
        json!({ "actions": [] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put_rule(
        &server,
        &alice,
        "content/deploy",
        json!({ "pattern": "deploy", "actions": ["notify", { "set_tweak": "highlight" }] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
    send(&server, &bob, &group, "m.room.message", text("chatter")).await;
    send(&server, &bob, &dm, "m.room.message", text("time to deploy")).await;
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &group), (0, 0));
    assert_eq!(counts(&body, &dm), (1, 1));

    // The master rule silences everything.
    let (status, _) = put_rule(
        &server,
        &alice,
        "override/.m.rule.master/enabled",
        json!({ "enabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    send(&server, &bob, &dm, "m.room.message", text("deploy again")).await;
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &dm), (1, 1));
    let (status, _) = put_rule(
        &server,
        &alice,
        "override/.m.rule.master/enabled",
        json!({ "enabled": false }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Ignored users notify nobody who ignores them.
    let (status, _) = server
        .put(
            &format!("{V3}/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id)),
            alice.token(),
            json!({ "ignored_users": { bob.user_id.clone(): {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    send(&server, &bob, &dm, "m.room.message", text("deploy, ignored")).await;
    let body = sync(&server, &alice, "").await;
    assert_eq!(counts(&body, &dm), (1, 1));
}

#[tokio::test]
async fn notifications_list_pages_and_filters() {
    let server = TestServer::start().await;
    let (alice, bob, group, dm) = group_and_dm(&server).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let content = if i % 2 == 0 {
            json!({ "msgtype": "m.text", "body": format!("plain {i}") })
        } else {
            json!({ "msgtype": "m.text", "body": format!("hey Alice Liddell {i}") })
        };
        sent.push(send(&server, &bob, &group, "m.room.message", content).await);
    }
    receipt(&server, &alice, &group, "m.read", &sent[1], json!({})).await;
    let (status, body) = server.get(&format!("{V3}/notifications?limit=3"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = body["notifications"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    // Newest first, with the event, its actions and whether it is read.
    assert_eq!(page[0]["event"]["event_id"], sent[4].as_str());
    assert_eq!(page[0]["room_id"], group.as_str());
    assert_eq!(page[0]["read"], false);
    assert!(page[0]["actions"].as_array().unwrap().contains(&json!("notify")));
    assert!(page[0]["ts"].as_i64().unwrap() > 0);
    let next = body["next_token"].as_str().unwrap();
    let (_, body) = server
        .get(&format!("{V3}/notifications?limit=3&from={next}"), alice.token())
        .await;
    let rest = body["notifications"].as_array().unwrap();
    // The two older messages, then the invitation to the DM (read: alice joined since).
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0]["event"]["event_id"], sent[1].as_str());
    assert_eq!(rest[0]["read"], true);
    assert_eq!(rest[2]["room_id"], dm.as_str());
    assert_eq!(rest[2]["event"]["content"]["membership"], "invite");
    assert_eq!(rest[2]["read"], true);
    // A full page has a next token; past the oldest there is nothing.
    let next = body["next_token"].as_str().unwrap();
    let (_, body) = server
        .get(&format!("{V3}/notifications?limit=3&from={next}"), alice.token())
        .await;
    assert_eq!(body["notifications"], json!([]));
    assert!(body.get("next_token").is_none());

    let (_, body) = server
        .get(&format!("{V3}/notifications?only=highlight"), alice.token())
        .await;
    let highlights: Vec<&str> = body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(highlights, [sent[3].as_str(), sent[1].as_str()]);

    assert_error(
        &server
            .get(&format!("{V3}/notifications?from=banana"), alice.token())
            .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.get(&format!("{V3}/notifications"), None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    // bob has none: everything was his.
    let (_, body) = server.get(&format!("{V3}/notifications"), bob.token()).await;
    assert_eq!(body["notifications"], json!([]));
}

#[tokio::test]
async fn sliding_sync_shows_counts() {
    let server = TestServer::start().await;
    let (alice, bob, group, _) = group_and_dm(&server).await;
    send(
        &server,
        &bob,
        &group,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "Alice Liddell!" }),
    )
    .await;
    let (status, body) = server
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            alice.token(),
            json!({ "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rooms"][&group]["notification_count"], 1,
        "{}",
        body["rooms"][&group]
    );
    assert_eq!(body["rooms"][&group]["highlight_count"], 1);
    // Her read receipt alone brings the room again, with its counts cleared.
    let pos = body["pos"].as_str().unwrap().to_owned();
    let last = body["rooms"][&group]["timeline"].as_array().unwrap().last().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    receipt(&server, &alice, &group, "m.read", &last, json!({})).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos={pos}&timeout=0"),
            alice.token(),
            json!({ "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rooms"][&group]["notification_count"], 0, "{body}");
    assert_eq!(body["rooms"][&group]["highlight_count"], 0);
}
