//! The push scenario: a room of `members` users, one of whom has an HTTP pusher pointing at a
//! push gateway this process runs. Messages are sent one at a time; for each, the time from
//! the send request to the gateway receiving its notification is measured. On Hearth, the
//! cost of evaluating each message for every member is read from `/metrics`
//! (`hearth_push_evaluation_seconds`, `hearth_push_rule_evaluations_total`).
//!
//! The server must be allowed to reach the gateway on loopback (Hearth:
//! `HEARTH_PUSH_IP_RANGE_ALLOWLIST='["127.0.0.1/32"]'`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    client::{Server, User},
    receiver,
    scenarios::join_all,
    stats::Distribution,
};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Serialize)]
pub struct PushResult {
    pub members: usize,
    pub messages: usize,
    /// Send request started → the gateway has the notification.
    pub send_to_gateway: Distribution,
    /// The send request alone (evaluation is off the send path).
    pub send: Distribution,
    /// From the server's metrics, when it has them: mean time to evaluate one message for
    /// every local member of the room, and members evaluated per message.
    pub evaluation_ms_per_message: Option<f64>,
    pub members_per_message: Option<f64>,
}

impl PushResult {
    pub fn row(&self) -> String {
        let evaluation = match (self.evaluation_ms_per_message, self.members_per_message) {
            (Some(ms), Some(members)) => format!(
                "; evaluation {ms:.3} ms per message for {members:.0} members ({:.2} µs per member)",
                ms * 1000.0 / members.max(1.0)
            ),
            _ => "; evaluation cost not reported by this server".to_owned(),
        };
        format!(
            "{} members, {} messages: send → gateway {}; send alone p50 {:.2} ms{evaluation}",
            self.members,
            self.messages,
            self.send_to_gateway.row(),
            self.send.p50_ms
        )
    }
}

/// Event ID → when the gateway received its notification.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

pub async fn push(server: &Server, users: &[User], messages: usize, parallel: usize) -> Result<PushResult> {
    let [sender, recipient, ..] = users else {
        bail!("the push scenario needs at least two users");
    };
    let arrivals: Arrivals = Arc::default();
    let gateway = start_gateway(arrivals.clone()).await?;
    let room = server
        .create_room(sender, &json!({ "preset": "public_chat", "name": "push bench" }))
        .await?;
    join_all(server, &users[1..], &room, parallel).await?;
    server
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&recipient.token),
            &json!({
                "kind": "http",
                "app_id": "org.hearth.bench",
                "pushkey": "bench-pushkey",
                "app_display_name": "bench",
                "device_display_name": "bench",
                "lang": "en",
                "data": { "url": format!("{gateway}/_matrix/push/v1/notify"), "format": "event_id_only" },
            }),
        )
        .await
        .context("setting the pusher (is the gateway's address allowed?)")?;
    let metrics_before = evaluation_metrics(server).await;
    let mut to_gateway = Vec::with_capacity(messages);
    let mut send = Vec::with_capacity(messages);
    for i in 0..messages {
        let started = Instant::now();
        let answer = server
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/push-{i}"),
                Some(&sender.token),
                &json!({ "msgtype": "m.text", "body": format!("push bench {i}") }),
            )
            .await?;
        send.push(started.elapsed().as_secs_f64());
        let event_id = answer["event_id"].as_str().context("no event_id")?.to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(arrived) = arrivals.lock().expect("arrivals").get(&event_id) {
                to_gateway.push(arrived.duration_since(started).as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                bail!("the notification for {event_id} did not reach the gateway within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let metrics_after = evaluation_metrics(server).await;
    let (evaluation_ms_per_message, members_per_message) = match (metrics_before, metrics_after) {
        (Some(before), Some(after)) if after.count > before.count => {
            let count = after.count - before.count;
            (
                Some((after.seconds - before.seconds) * 1000.0 / count),
                Some((after.members - before.members) / count),
            )
        }
        _ => (None, None),
    };
    Ok(PushResult {
        members: users.len(),
        messages,
        send_to_gateway: Distribution::of(&to_gateway),
        send: Distribution::of(&send),
        evaluation_ms_per_message,
        members_per_message,
    })
}

struct EvaluationMetrics {
    seconds: f64,
    count: f64,
    members: f64,
}

/// Hearth's evaluation counters from `/metrics` (None for servers without them).
async fn evaluation_metrics(server: &Server) -> Option<EvaluationMetrics> {
    let text = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    };
    Some(EvaluationMetrics {
        seconds: value("hearth_push_evaluation_seconds_sum")?,
        count: value("hearth_push_evaluation_seconds_count")?,
        members: value("hearth_push_rule_evaluations_total")?,
    })
}

/// A push gateway on loopback: records when each notification arrives, accepts them all.
async fn start_gateway(arrivals: Arrivals) -> Result<String> {
    let handler: receiver::Handler = Arc::new(move |_path, body, arrived| {
        if let Some(event_id) = body["notification"]["event_id"].as_str() {
            arrivals.lock().expect("arrivals").insert(event_id.to_owned(), arrived);
        }
        (200, r#"{"rejected":[]}"#)
    });
    receiver::start("127.0.0.1:0", handler).await
}
