//! The appservice scenario: this process is an application service (its registration,
//! listing `--appservice-listen` as its URL, must be loaded by the server before the run; see
//! bench/appservices.py). A ghost of its namespace joins a room of real users, then:
//!
//! - latency: messages are sent one at a time; for each, the time from the send request to the
//!   appservice receiving the transaction that carries it;
//! - rate: `senders` users send as fast as the server acknowledges for `seconds`; how many
//!   events per second and transactions per second reach the appservice, how many events a
//!   transaction carries, and how long the queue takes to drain after the last send;
//! - catch-up: the appservice refuses transactions (503) while `backlog` messages are sent,
//!   then takes them again; from its first transaction after that to the last event, how many
//!   events and transactions per second the server delivers from its queue.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{
    client::{Server, User, encode},
    receiver,
    scenarios::join_all,
    stats::Distribution,
};

#[derive(Debug, Serialize)]
pub struct AppserviceResult {
    /// Send request started → the appservice has the transaction carrying the event.
    pub send_to_appservice: Distribution,
    pub senders: usize,
    pub seconds: f64,
    pub sent: usize,
    pub delivered: usize,
    /// Events reaching the appservice per second, from the first send to the last arrival.
    pub events_per_second: f64,
    pub transactions: usize,
    pub transactions_per_second: f64,
    pub events_per_transaction: f64,
    /// From the last acknowledged send to the last event reaching the appservice.
    pub drain_seconds: f64,
    /// Catch-up after an outage: events queued, delivered, and the rates of the delivery.
    pub backlog: usize,
    pub backlog_delivered: usize,
    pub catch_up_events_per_second: f64,
    pub catch_up_transactions_per_second: f64,
}

impl AppserviceResult {
    pub fn row(&self) -> String {
        format!(
            "send → appservice {}; {} senders, {:.1} s: {}/{} delivered, {:.0} events/s in {:.0} transactions/s \
             ({:.1} events each), drained {:.2} s after the last send; catch-up of {}/{} queued events: \
             {:.0} events/s in {:.1} transactions/s",
            self.send_to_appservice.row(),
            self.senders,
            self.seconds,
            self.delivered,
            self.sent,
            self.events_per_second,
            self.transactions_per_second,
            self.events_per_transaction,
            self.drain_seconds,
            self.backlog_delivered,
            self.backlog,
            self.catch_up_events_per_second,
            self.catch_up_transactions_per_second
        )
    }
}

pub struct Options<'a> {
    /// Where this process listens as the appservice (the registration's `url`).
    pub listen: &'a str,
    pub as_token: &'a str,
    /// The ghost's localpart (in the registration's user namespace).
    pub ghost: &'a str,
    pub messages: usize,
    pub seconds: Duration,
    /// Messages queued while the appservice refuses transactions.
    pub backlog: usize,
}

/// What the appservice has received.
#[derive(Default)]
struct Received {
    /// Event ID → arrival.
    arrivals: HashMap<String, Instant>,
    /// Transaction IDs seen (a retry counts once), with the arrival of each.
    transactions: HashMap<String, Instant>,
    events_in_transactions: usize,
    /// Refusing transactions (503), as an appservice that is down.
    down: bool,
}

pub async fn appservice(server: &Server, users: &[User], options: Options<'_>) -> Result<AppserviceResult> {
    let Some(first) = users.first() else {
        bail!("the appservice scenario needs at least one user");
    };
    let received: Arc<Mutex<Received>> = Arc::default();
    let handler: receiver::Handler = {
        let received = received.clone();
        Arc::new(move |path, body, arrived| {
            if let Some(txn) = path.strip_prefix("/_matrix/app/v1/transactions/") {
                let mut received = received.lock().expect("received");
                if received.down {
                    return (503, "{}");
                }
                if received.transactions.insert(txn.to_owned(), arrived).is_none() {
                    let events = body["events"].as_array().cloned().unwrap_or_default();
                    received.events_in_transactions += events.len();
                    for event in events {
                        if let Some(id) = event["event_id"].as_str() {
                            received.arrivals.entry(id.to_owned()).or_insert(arrived);
                        }
                    }
                }
            }
            (200, "{}")
        })
    };
    receiver::start(options.listen, handler).await?;

    // The ghost: registered by the appservice (again on a rerun: M_USER_IN_USE is fine).
    let register = json!({ "type": "m.login.application_service", "username": options.ghost, "inhibit_login": true });
    let ghost = match server
        .post("/_matrix/client/v3/register", Some(options.as_token), &register)
        .await
    {
        Ok(body) => body["user_id"].as_str().context("user_id")?.to_owned(),
        Err(error) if error.to_string().contains("M_USER_IN_USE") => {
            let whoami = server
                .get("/_matrix/client/v3/account/whoami", Some(&first.token))
                .await?;
            let server_name = whoami["user_id"]
                .as_str()
                .and_then(|id| id.split_once(':'))
                .context("server name")?
                .1;
            format!("@{}:{server_name}", options.ghost)
        }
        Err(error) => return Err(error),
    };
    let room = server
        .create_room(first, &json!({ "preset": "public_chat", "name": "appservice bench" }))
        .await?;
    join_all(server, &users[1..], &room, 32).await?;
    server
        .post(
            &format!("/_matrix/client/v3/join/{}?user_id={}", encode(&room), encode(&ghost)),
            Some(options.as_token),
            &json!({}),
        )
        .await?;

    // Latency, one message at a time.
    let mut samples = Vec::with_capacity(options.messages);
    for i in 0..options.messages {
        let started = Instant::now();
        let event_id = send(server, first, &room, &format!("lat{i}")).await?;
        samples.push(wait_for(&received, &event_id, started).await?.as_secs_f64());
    }

    // Rate: every sender as fast as acknowledged.
    let start = Instant::now();
    let deadline = start + options.seconds;
    let mut tasks = JoinSet::new();
    for (index, user) in users.iter().enumerate() {
        let (server, user, room) = (server.clone(), user.clone(), room.clone());
        tasks.spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                if let Ok(event_id) = send(&server, &user, &room, &format!("rate{index}-{n}")).await {
                    sent.push(event_id);
                }
                n += 1;
            }
            (sent, Instant::now())
        });
    }
    let (mut sent, mut last_send) = (Vec::new(), start);
    while let Some(result) = tasks.join_next().await {
        let (ids, finished) = result?;
        sent.extend(ids);
        last_send = last_send.max(finished);
    }
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    let last_arrival = loop {
        let last = {
            let received = received.lock().expect("received");
            sent.iter()
                .map(|id| received.arrivals.get(id).copied())
                .collect::<Option<Vec<_>>>()
                .map(|arrivals| arrivals.into_iter().max().unwrap_or(start))
        };
        if let Some(last) = last {
            break last;
        }
        if Instant::now() > drain_deadline {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (backlog_delivered, catch_up_events_per_second, catch_up_transactions_per_second) =
        catch_up(server, users, &room, &received, options.backlog).await?;
    let received = received.lock().expect("received");
    let delivered = sent.iter().filter(|id| received.arrivals.contains_key(*id)).count();
    let window: HashSet<&String> = received
        .transactions
        .iter()
        .filter(|(_, at)| **at >= start)
        .map(|(id, _)| id)
        .collect();
    let elapsed = last_arrival.duration_since(start).as_secs_f64().max(1e-3);
    Ok(AppserviceResult {
        send_to_appservice: Distribution::of(&samples),
        senders: users.len(),
        seconds: options.seconds.as_secs_f64(),
        sent: sent.len(),
        delivered,
        events_per_second: delivered as f64 / elapsed,
        transactions: window.len(),
        transactions_per_second: window.len() as f64 / elapsed,
        events_per_transaction: received.events_in_transactions as f64 / received.transactions.len().max(1) as f64,
        drain_seconds: last_arrival.saturating_duration_since(last_send).as_secs_f64(),
        backlog: options.backlog,
        backlog_delivered,
        catch_up_events_per_second,
        catch_up_transactions_per_second,
    })
}

/// The appservice goes down, `backlog` messages are sent, it comes back: (delivered, events/s,
/// transactions/s) from its first transaction after coming back to the last event.
async fn catch_up(
    server: &Server,
    users: &[User],
    room: &str,
    received: &Arc<Mutex<Received>>,
    backlog: usize,
) -> Result<(usize, f64, f64)> {
    received.lock().expect("received").down = true;
    let per_sender = backlog.div_ceil(users.len().max(1));
    let mut tasks = JoinSet::new();
    for (index, user) in users.iter().enumerate() {
        let (server, user, room) = (server.clone(), user.clone(), room.to_owned());
        tasks.spawn(async move {
            let mut sent = Vec::new();
            for n in 0..per_sender {
                sent.push(send(&server, &user, &room, &format!("backlog{index}-{n}")).await?);
            }
            anyhow::Ok(sent)
        });
    }
    let mut queued = Vec::new();
    while let Some(result) = tasks.join_next().await {
        queued.extend(result??);
    }
    let back = Instant::now();
    received.lock().expect("received").down = false;
    let deadline = back + Duration::from_secs(300);
    loop {
        let done = {
            let received = received.lock().expect("received");
            queued.iter().all(|id| received.arrivals.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = received.lock().expect("received");
    let arrivals: Vec<Instant> = queued
        .iter()
        .filter_map(|id| received.arrivals.get(id).copied())
        .collect();
    let (Some(first), Some(last)) = (
        received.transactions.values().filter(|at| **at >= back).min().copied(),
        arrivals.iter().max().copied(),
    ) else {
        return Ok((arrivals.len(), 0.0, 0.0));
    };
    let seconds = last.duration_since(first).as_secs_f64().max(1e-3);
    let transactions = received
        .transactions
        .values()
        .filter(|at| **at >= first && **at <= last)
        .count();
    Ok((
        arrivals.len(),
        arrivals.len() as f64 / seconds,
        transactions as f64 / seconds,
    ))
}

async fn send(server: &Server, user: &User, room: &str, txn: &str) -> Result<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room));
    let body = json!({ "msgtype": "m.text", "body": format!("appservice bench {txn}") });
    let answer: Value = server.put(&path, Some(&user.token), &body).await?;
    Ok(answer["event_id"].as_str().context("event_id")?.to_owned())
}

async fn wait_for(received: &Mutex<Received>, event_id: &str, started: Instant) -> Result<Duration> {
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Some(arrived) = received.lock().expect("received").arrivals.get(event_id) {
            return Ok(arrived.duration_since(started));
        }
        if Instant::now() > deadline {
            bail!("{event_id} did not reach the appservice within 30 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}
