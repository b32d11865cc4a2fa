//! `federation`: users on one server message users on another; each message's latency is
//! from its send request leaving to the recipient's `/sync` (on the other server) returning
//! it, and the rate is what reaches the other side per second. Run it with `--base` the
//! sending server and `--remote-base` the receiving one, for any pair of servers that
//! federate (Hearth→Hearth, Hearth→Synapse, Synapse→Synapse).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::{
    client::{Server, User},
    scenarios::{Sent, Transport, register_many, start_sync_loops},
    stats::Distribution,
};

#[derive(Debug, Serialize)]
pub struct FederationResult {
    pub pairs: usize,
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub messages: usize,
    pub delivered: usize,
    pub send_errors: u64,
    /// Send → the recipient's sync on the other server.
    pub latency: Distribution,
    /// Messages sent as fast as acknowledged, `parallel` at a time, for the same duration:
    /// how many per second reached the other server's users (over the time until the last
    /// arrival, backlog included).
    pub max_delivered_per_second: f64,
    pub max_sent: usize,
    pub max_delivered: usize,
}

/// Sets up `pairs` rooms, each with a user of `local` and one of `remote`, then measures.
pub async fn federation(
    local: &Server,
    remote: &Server,
    prefix: &str,
    pairs: usize,
    rate: f64,
    duration: Duration,
    parallel: usize,
) -> Result<FederationResult> {
    let senders = register_many(local, &format!("{prefix}-fed-s-"), pairs, parallel).await?;
    let receivers = register_many(remote, &format!("{prefix}-fed-r-"), pairs, parallel).await?;
    let mut rooms = Vec::with_capacity(pairs);
    for (sender, receiver) in senders.iter().zip(&receivers) {
        let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [receiver.user_id] });
        let room = local.create_room(sender, &body).await?;
        join_when_invited(remote, receiver, &room).await?;
        rooms.push(room);
    }
    // The receivers' servers must also have heard of the joins before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (mut loops, _) = start_sync_loops(remote, &receivers, Transport::LongPoll, &sent, &latencies, &arrivals);
    tokio::time::sleep(Duration::from_millis(500 + pairs as u64 * 5)).await;

    // At a fixed rate.
    let send_errors = Arc::new(Mutex::new(0u64));
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = JoinSet::new();
    let mut count = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        let pair = count % pairs;
        let tag = format!("{prefix}-fed-{count}");
        // No receiver's index is usize::MAX: every arrival counts.
        sent.lock().unwrap().insert(tag.clone(), (Instant::now(), usize::MAX));
        let (server, user, room, errors) = (
            local.clone(),
            senders[pair].clone(),
            rooms[pair].clone(),
            send_errors.clone(),
        );
        sends.spawn(async move {
            if server.send_text(&user, &room, &tag, &tag).await.is_err() {
                *errors.lock().unwrap() += 1;
            }
        });
        count += 1;
    }
    let achieved = count as f64 / started.elapsed().as_secs_f64();
    while sends.join_next().await.is_some() {}
    wait_for(&latencies, count, Duration::from_secs(10)).await;
    let samples = latencies.lock().unwrap().clone();

    // As fast as acknowledged.
    latencies.lock().unwrap().clear();
    let started = Instant::now();
    let mut sends = JoinSet::new();
    let mut max_sent = 0;
    while started.elapsed() < duration {
        while sends.len() < parallel {
            let pair = max_sent % pairs;
            let tag = format!("{prefix}-fed-max-{max_sent}");
            sent.lock().unwrap().insert(tag.clone(), (Instant::now(), usize::MAX));
            let (server, user, room) = (local.clone(), senders[pair].clone(), rooms[pair].clone());
            sends.spawn(async move { server.send_text(&user, &room, &tag, &tag).await.is_ok() });
            max_sent += 1;
        }
        sends.join_next().await;
    }
    while sends.join_next().await.is_some() {}
    // Delivered per second: what arrived, over the time until the last arrival.
    let last_arrival = wait_for(&latencies, max_sent, Duration::from_secs(30)).await;
    let elapsed = (last_arrival - started).as_secs_f64().max(0.001);
    let max_delivered = latencies.lock().unwrap().len();
    loops.abort_all();
    Ok(FederationResult {
        pairs,
        target_rate: rate,
        achieved_rate: achieved,
        messages: count,
        delivered: samples.len(),
        send_errors: *send_errors.lock().unwrap(),
        latency: Distribution::of(&samples),
        max_delivered_per_second: max_delivered as f64 / elapsed,
        max_sent,
        max_delivered,
    })
}

/// Joins once the invite has crossed over (retrying for up to 30 s).
async fn join_when_invited(server: &Server, user: &User, room: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match server.join(user, room).await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                return Err(error).with_context(|| format!("{} could not join {room}", user.user_id));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until `expected` deliveries arrived, or none arrived for `longest`; returns when the
/// last one seen arrived.
async fn wait_for(latencies: &Arc<Mutex<Vec<f64>>>, expected: usize, longest: Duration) -> Instant {
    let mut seen = latencies.lock().unwrap().len();
    let mut last_change = Instant::now();
    while seen < expected && last_change.elapsed() < longest {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now_seen = latencies.lock().unwrap().len();
        if now_seen != seen {
            seen = now_seen;
            last_change = Instant::now();
        }
    }
    last_change
}
