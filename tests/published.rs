//! Every committed change reaches the subscribers of `Base` (push today; federation senders and
//! appservice queues next), once it is committed and in order.

use std::sync::{Arc, Mutex};

use hearth::base::{Change, Subscriber};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestServer, rooms::V3};

/// What a subscriber was told, as owned text.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Subscriber for Recorder {
    fn published(&self, change: Change<'_>) {
        let line = match change {
            Change::Event {
                room_id,
                stream_ordering,
                members_changed,
            } => format!("event {room_id} {stream_ordering} {members_changed}"),
            Change::AccountData { user_id, data_type, .. } => format!("account_data {user_id} {data_type}"),
            Change::Pushers { user_id } => format!("pushers {user_id}"),
            Change::ReadReceipt { user_id } => format!("read {user_id}"),
            Change::Typing { user_id, typing, .. } => format!("typing {user_id} {typing}"),
            Change::Receipt {
                user_id, receipt_type, ..
            } => format!("receipt {user_id} {receipt_type}"),
            Change::Presence { user_id } => format!("presence {user_id}"),
            Change::DeviceList { user_id, .. } => format!("device_list {user_id}"),
            Change::EdusQueued { destination } => format!("edus {destination}"),
            Change::ToDevice { recipients } => format!("to_device {}", recipients.join(",")),
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn committed_changes_reach_subscribers_in_order() {
    let recorder = Arc::new(Recorder::default());
    let subscriber: Arc<dyn Subscriber> = recorder.clone();
    let server = TestServer::start_observed(&subscriber).await;
    let alice = server.register("alice").await;
    let token = alice.token();
    let (status, created) = server.post(&format!("{V3}/createRoom"), token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let room = created["room_id"].as_str().unwrap().to_owned();
    let mut event_ids = Vec::new();
    for n in 0..3 {
        let (status, sent) = server
            .put(
                &format!("{V3}/rooms/{room}/send/m.room.message/t{n}"),
                token,
                json!({ "msgtype": "m.text", "body": format!("message {n}") }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        event_ids.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    // A refused event (not allowed) tells nobody anything.
    let bob = server.register("bob").await;
    let (status, _) = server
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/x"),
            bob.token(),
            json!({ "msgtype": "m.text", "body": "not a member" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .put(
            &format!("{V3}/user/{}/account_data/org.example", alice.user_id),
            token,
            json!({ "a": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .post(
            &format!("{V3}/rooms/{room}/receipt/m.read/{}", event_ids[2]),
            token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let seen = recorder.seen();
    let events: Vec<(i64, bool)> = seen
        .iter()
        .filter_map(|line| line.strip_prefix(&format!("event {room} ")))
        .map(|rest| {
            let (n, members) = rest.split_once(' ').unwrap();
            (n.parse().unwrap(), members == "true")
        })
        .collect();
    let orderings: Vec<i64> = events.iter().map(|(n, _)| *n).collect();
    // The room's creation (one announcement for its first events), then each message; bob's
    // refused message is not among them.
    assert_eq!(orderings.len(), 4, "{seen:?}");
    // The creation changed the room's members (the creator joined); the messages did not.
    let members: Vec<bool> = events.iter().map(|(_, m)| *m).collect();
    assert_eq!(members, [true, false, false, false], "{seen:?}");
    assert!(orderings.windows(2).all(|pair| pair[0] < pair[1]), "{orderings:?}");
    // The read receipt: first for other servers (what it says), then for badges.
    let tail: Vec<&String> = seen.iter().rev().take(3).collect();
    assert_eq!(tail[2], &format!("account_data {} org.example", alice.user_id));
    assert_eq!(tail[1], &format!("receipt {} m.read", alice.user_id));
    assert_eq!(tail[0], &format!("read {}", alice.user_id));
    server.stop().await;
}
