//! The scenarios. Each builds what it needs through the API, runs, and returns its figures.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    client::{SYNC_FILTER, Server, User, messages_in_sync},
    stats::{Distribution, ProcessSample, sample_process},
};

/// Registers `count` users named `{prefix}{i}`, `parallel` at a time.
pub async fn register_many(server: &Server, prefix: &str, count: usize, parallel: usize) -> Result<Vec<User>> {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let server = server.clone();
        let gate = gate.clone();
        let name = format!("{prefix}{i}");
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            Ok::<_, anyhow::Error>((i, server.register(&name).await?))
        });
    }
    let mut users = vec![None; count];
    while let Some(result) = tasks.join_next().await {
        let (i, user) = result??;
        users[i] = Some(user);
    }
    Ok(users.into_iter().flatten().collect())
}

/// Has every user join the room, `parallel` at a time.
pub async fn join_all(server: &Server, users: &[User], room: &str, parallel: usize) -> Result<()> {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for user in users {
        let (server, gate, room, user) = (server.clone(), gate.clone(), room.to_owned(), user.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            server.join(&user, &room).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// Messages in flight: body tag → (send start, sender index, recipients expected).
type Sent = Arc<Mutex<HashMap<String, (Instant, usize)>>>;

/// Runs a `/sync` loop per user until aborted, recording for every tagged message from
/// someone else how long after its send started it arrived.
fn start_sync_loops(
    server: &Server,
    users: &[User],
    sent: &Sent,
    latencies: &Arc<Mutex<Vec<f64>>>,
    arrivals: &Arc<Mutex<HashMap<String, usize>>>,
) -> (JoinSet<()>, Arc<Mutex<u64>>) {
    let errors = Arc::new(Mutex::new(0u64));
    let mut loops = JoinSet::new();
    for (index, user) in users.iter().cloned().enumerate() {
        let (server, sent, latencies, arrivals, errors) = (
            server.clone(),
            sent.clone(),
            latencies.clone(),
            arrivals.clone(),
            errors.clone(),
        );
        loops.spawn(async move {
            let mut since = match server.sync(&user, None, 0, SYNC_FILTER).await {
                Ok(body) => body["next_batch"].as_str().map(str::to_owned),
                Err(_) => None,
            };
            loop {
                match server.sync(&user, since.as_deref(), 30_000, SYNC_FILTER).await {
                    Ok(body) => {
                        let now = Instant::now();
                        for (_, text) in messages_in_sync(&body) {
                            let started = sent.lock().unwrap().get(&text).copied();
                            if let Some((started, sender)) = started
                                && sender != index
                            {
                                latencies.lock().unwrap().push((now - started).as_secs_f64());
                                *arrivals.lock().unwrap().entry(text).or_default() += 1;
                            }
                        }
                        since = body["next_batch"].as_str().map(str::to_owned);
                    }
                    Err(_) => {
                        *errors.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    (loops, errors)
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub messages: usize,
    pub deliveries_expected: usize,
    pub deliveries_seen: usize,
    pub send_errors: u64,
    pub sync_errors: u64,
    /// Send request leaving → recipient's sync returning it.
    pub latency: Distribution,
    /// Every delivery's latency in seconds (for the CDF chart).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
    pub process: Option<(ProcessSample, ProcessSample)>,
}

/// Scenario 1: `users` online users in DMs (pairs) and groups of ten, each holding a
/// `/sync` long-poll; messages go out at `rate` per second for `duration`.
pub async fn latency(
    server: &Server,
    users: &[User],
    rate: f64,
    duration: Duration,
    pid: Option<u32>,
) -> Result<LatencyResult> {
    // Rooms: a DM per pair, and a group per ten users.
    let mut rooms: Vec<(String, Vec<usize>)> = Vec::new();
    for pair in (0..users.len()).collect::<Vec<_>>().chunks(2).filter(|c| c.len() == 2) {
        let body = json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [users[pair[1]].user_id] });
        let room = server.create_room(&users[pair[0]], &body).await?;
        server.join(&users[pair[1]], &room).await?;
        rooms.push((room, pair.to_vec()));
    }
    for group in (0..users.len()).collect::<Vec<_>>().chunks(10).filter(|c| c.len() > 2) {
        let room = server
            .create_room(&users[group[0]], &json!({ "preset": "public_chat" }))
            .await?;
        for &member in &group[1..] {
            server.join(&users[member], &room).await?;
        }
        rooms.push((room, group.to_vec()));
    }
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (mut loops, sync_errors) = start_sync_loops(server, users, &sent, &latencies, &arrivals);
    // Let every loop reach its long-poll.
    tokio::time::sleep(Duration::from_millis(500 + users.len() as u64 * 2)).await;

    let before = sample_process(pid);
    let send_errors = Arc::new(Mutex::new(0u64));
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = JoinSet::new();
    let mut expected = 0;
    let mut count = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        let (room, members) = &rooms[count % rooms.len()];
        let sender = members[(count / rooms.len()) % members.len()];
        let tag = format!("bench-{count}");
        expected += members.len() - 1;
        sent.lock().unwrap().insert(tag.clone(), (Instant::now(), sender));
        let (server, user, room, errors) = (server.clone(), users[sender].clone(), room.clone(), send_errors.clone());
        sends.spawn(async move {
            if server.send_text(&user, &room, &tag, &tag).await.is_err() {
                *errors.lock().unwrap() += 1;
            }
        });
        count += 1;
    }
    let achieved = count as f64 / started.elapsed().as_secs_f64();
    while sends.join_next().await.is_some() {}
    // Stragglers: up to five seconds for the last deliveries.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && latencies.lock().unwrap().len() < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = sample_process(pid);
    loops.abort_all();
    let samples = latencies.lock().unwrap().clone();
    let seen = samples.len();
    Ok(LatencyResult {
        target_rate: rate,
        achieved_rate: achieved,
        messages: count,
        deliveries_expected: expected,
        deliveries_seen: seen,
        send_errors: *send_errors.lock().unwrap(),
        sync_errors: *sync_errors.lock().unwrap(),
        latency: Distribution::of(&samples),
        samples,
        process: before.zip(after),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub senders: usize,
    pub seconds: f64,
    pub acknowledged: u64,
    pub errors: u64,
    pub messages_per_second: f64,
    /// Acknowledged sends in each second of the run (for the chart).
    pub per_second: Vec<u64>,
    pub send_latency: Distribution,
    pub process: Option<(ProcessSample, ProcessSample)>,
}

/// Scenario 2: `senders` users, each in its own room, sending as fast as acknowledged.
pub async fn throughput(
    server: &Server,
    users: &[User],
    duration: Duration,
    pid: Option<u32>,
) -> Result<ThroughputResult> {
    let mut rooms = Vec::new();
    for user in users {
        rooms.push(server.create_room(user, &json!({ "preset": "private_chat" })).await?);
    }
    let before = sample_process(pid);
    let started = Instant::now();
    let seconds = duration.as_secs() as usize + 2;
    let per_second: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..seconds).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    let mut tasks = JoinSet::new();
    for (index, (user, room)) in users.iter().cloned().zip(rooms).enumerate() {
        let (server, per_second) = (server.clone(), per_second.clone());
        tasks.spawn(async move {
            let (mut errors, mut latencies) = (0u64, Vec::new());
            let mut i = 0u64;
            while started.elapsed() < duration {
                let sent = Instant::now();
                match server
                    .send_text(&user, &room, &format!("t{index}-{i}"), "throughput")
                    .await
                {
                    Ok(()) => {
                        latencies.push(sent.elapsed().as_secs_f64());
                        let second = (started.elapsed().as_secs() as usize).min(per_second.len() - 1);
                        per_second[second].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            (errors, latencies)
        });
    }
    let (mut errors, mut latencies) = (0, Vec::new());
    while let Some(result) = tasks.join_next().await {
        let (e, l) = result?;
        errors += e;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample_process(pid);
    let acknowledged = latencies.len() as u64;
    let mut per_second: Vec<u64> = per_second
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    per_second.truncate(duration.as_secs() as usize);
    Ok(ThroughputResult {
        senders: users.len(),
        seconds: elapsed,
        acknowledged,
        errors,
        messages_per_second: acknowledged as f64 / elapsed,
        per_second,
        send_latency: Distribution::of(&latencies),
        process: before.zip(after),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub members: usize,
    pub repeats: usize,
    /// Per message: until the last member had it.
    pub all_members: Distribution,
    /// Every single delivery.
    pub each_member: Distribution,
    pub incomplete: usize,
}

/// Scenario 3: one room of `users`, everyone syncing; one message at a time from the first
/// user; how long until every other member has it.
pub async fn fanout(server: &Server, users: &[User], repeats: usize, parallel: usize) -> Result<FanoutResult> {
    let room = server
        .create_room(&users[0], &json!({ "preset": "public_chat" }))
        .await?;
    join_all(server, &users[1..], &room, parallel).await?;
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (mut loops, _) = start_sync_loops(server, users, &sent, &latencies, &arrivals);
    tokio::time::sleep(Duration::from_millis(1000 + users.len() as u64 * 4)).await;
    let mut complete = Vec::new();
    let mut incomplete = 0;
    let others = users.len() - 1;
    for i in 0..repeats {
        let tag = format!("fanout-{i}");
        let started = Instant::now();
        sent.lock().unwrap().insert(tag.clone(), (started, 0));
        server.send_text(&users[0], &room, &tag, &tag).await?;
        let deadline = started + Duration::from_secs(30);
        loop {
            if arrivals.lock().unwrap().get(&tag).copied().unwrap_or(0) >= others {
                complete.push(started.elapsed().as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                incomplete += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        // Let the receipts and re-polls settle between messages.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loops.abort_all();
    let each = latencies.lock().unwrap().clone();
    Ok(FanoutResult {
        members: users.len(),
        repeats,
        all_members: Distribution::of(&complete),
        each_member: Distribution::of(&each),
        incomplete,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryResult {
    pub events: usize,
    pub fill_seconds: f64,
    pub read_seconds: f64,
    pub events_per_second: f64,
}

/// Scenario 6: a room with `events` messages, read back through `/messages` 100 at a time.
pub async fn history(server: &Server, user: &User, events: usize, parallel: usize) -> Result<HistoryResult> {
    let room = server.create_room(user, &json!({ "preset": "private_chat" })).await?;
    let fill = Instant::now();
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..events {
        let (server, user, room, gate) = (server.clone(), user.clone(), room.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            server
                .send_text(&user, &room, &format!("h{i}"), &format!("history {i}"))
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let fill_seconds = fill.elapsed().as_secs_f64();
    let read = Instant::now();
    let (mut from, mut read_count) = (None::<String>, 0);
    loop {
        let page = server.messages(user, &room, from.as_deref(), 100).await?;
        let chunk = page["chunk"].as_array().map_or(0, Vec::len);
        read_count += page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.message")
            .count();
        match page["end"].as_str() {
            Some(end) if chunk > 0 => from = Some(end.to_owned()),
            _ => break,
        }
    }
    let read_seconds = read.elapsed().as_secs_f64();
    anyhow::ensure!(read_count == events, "read back {read_count} of {events} messages");
    Ok(HistoryResult {
        events,
        fill_seconds,
        read_seconds,
        events_per_second: events as f64 / read_seconds,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct InitialSyncResult {
    pub rooms: usize,
    pub members_per_room: usize,
    pub sync_seconds: f64,
    pub sync_bytes: usize,
    pub sliding_sync_seconds: Option<f64>,
}

/// Scenario 5: one user in `rooms` rooms of `members` members each: the first `/sync` and
/// the first sliding sync response (top 20 rooms).
pub async fn initial_sync(server: &Server, users: &[User], rooms: usize, parallel: usize) -> Result<InitialSyncResult> {
    let me = &users[0];
    for r in 0..rooms {
        let room = server
            .create_room(me, &json!({ "preset": "public_chat", "name": format!("room {r}") }))
            .await?;
        join_all(server, &users[1..], &room, parallel).await?;
        server.send_text(me, &room, &format!("i{r}"), "hello").await?;
    }
    let started = Instant::now();
    let body = server.get("/_matrix/client/v3/sync", Some(&me.token)).await?;
    let sync_seconds = started.elapsed().as_secs_f64();
    let joined = body["rooms"]["join"].as_object().map_or(0, |r| r.len());
    anyhow::ensure!(joined == rooms, "initial sync listed {joined} of {rooms} rooms");
    let sliding = json!({
        "lists": { "all": { "ranges": [[0, 19]], "timeline_limit": 1,
            "required_state": [["m.room.name", ""], ["m.room.create", ""], ["m.room.member", "$LAZY"]] } },
    });
    let started = Instant::now();
    let sliding_sync_seconds = server
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            Some(&me.token),
            &sliding,
        )
        .await
        .ok()
        .map(|_| started.elapsed().as_secs_f64());
    Ok(InitialSyncResult {
        rooms,
        members_per_room: users.len(),
        sync_seconds,
        sync_bytes: body.to_string().len(),
        sliding_sync_seconds,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsResult {
    pub requested: usize,
    pub held: usize,
    pub errors: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    pub bytes_per_connection: Option<f64>,
}

/// Scenario 4: `count` idle `/sync` long-polls held at once, spread over source addresses
/// 127.0.0.2.. so the client side never runs out of ports. Reports the server's RSS growth.
pub async fn connections(server: &Server, users: &[User], count: usize, pid: Option<u32>) -> Result<ConnectionsResult> {
    // A first sync per user gives the token the idle polls wait from.
    let mut tokens = Vec::new();
    for user in users {
        let body = server.sync(user, None, 0, SYNC_FILTER).await?;
        tokens.push(body["next_batch"].as_str().context("next_batch")?.to_owned());
    }
    let before = sample_process(pid);
    let per_address = 20_000;
    let mut clients = Vec::new();
    for a in 0..count.div_ceil(per_address) {
        let address = IpAddr::V4(Ipv4Addr::new(127, 0, (a / 250) as u8, (a % 250 + 2) as u8));
        clients.push(
            reqwest::Client::builder()
                .local_address(address)
                .pool_max_idle_per_host(per_address)
                .timeout(Duration::from_secs(180))
                .build()?,
        );
    }
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut polls = JoinSet::new();
    for i in 0..count {
        let client = clients[i / per_address].clone();
        let user = &users[i % users.len()];
        let url = format!(
            "{}/_matrix/client/v3/sync?timeout=120000&since={}&filter={}",
            server.base,
            crate::client::encode(&tokens[i % users.len()]),
            crate::client::encode(SYNC_FILTER)
        );
        let token = user.token.clone();
        let started = started.clone();
        polls.spawn(async move {
            let request = client.get(url).bearer_auth(token).send();
            started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            request.await.map(|r| r.status().is_success()).unwrap_or(false)
        });
        if i % 1000 == 999 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Give the server a moment to accept and park them all, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_sample = sample_process(pid);
    let mut errors = 0;
    let mut finished = 0;
    while let Some(Ok(ok)) = polls.try_join_next() {
        finished += 1;
        if !ok {
            errors += 1;
        }
    }
    polls.abort_all();
    let rss_before = before.map(|s| s.rss_kib);
    let rss_held = held_sample.map(|s| s.rss_kib);
    let held = count - finished;
    Ok(ConnectionsResult {
        requested: count,
        held,
        errors,
        rss_before_kib: rss_before,
        rss_held_kib: rss_held,
        bytes_per_connection: rss_before
            .zip(rss_held)
            .map(|(b, h)| (h.saturating_sub(b) as f64 * 1024.0) / held.max(1) as f64),
    })
}
