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
pub(crate) type Sent = Arc<Mutex<HashMap<String, (Instant, usize)>>>;

/// Runs a `/sync` loop per user until aborted, recording for every tagged message from
/// someone else how long after its send started it arrived.
/// How recipients receive: `/sync` long-polls (any server), or Hearth's WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    LongPoll,
    Websocket,
}

/// Shared by the receiving loops: what was sent when, and what arrived.
#[derive(Clone)]
struct Arrivals {
    sent: Sent,
    latencies: Arc<Mutex<Vec<f64>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Arrivals {
    /// Records the messages in one sync response that `index` receives from someone else.
    fn record(&self, body: &serde_json::Value, index: usize) {
        let now = Instant::now();
        for (_, text) in messages_in_sync(body) {
            let started = self.sent.lock().unwrap().get(&text).copied();
            if let Some((started, sender)) = started
                && sender != index
            {
                self.latencies.lock().unwrap().push((now - started).as_secs_f64());
                *self.counts.lock().unwrap().entry(text).or_default() += 1;
            }
        }
    }
}

pub(crate) fn start_sync_loops(
    server: &Server,
    users: &[User],
    transport: Transport,
    sent: &Sent,
    latencies: &Arc<Mutex<Vec<f64>>>,
    arrivals: &Arc<Mutex<HashMap<String, usize>>>,
) -> (JoinSet<()>, Arc<Mutex<u64>>) {
    let errors = Arc::new(Mutex::new(0u64));
    let mut loops = JoinSet::new();
    let shared = Arrivals {
        sent: sent.clone(),
        latencies: latencies.clone(),
        counts: arrivals.clone(),
    };
    for (index, user) in users.iter().cloned().enumerate() {
        let (server, shared, errors) = (server.clone(), shared.clone(), errors.clone());
        loops.spawn(async move {
            let mut since = match server.sync(&user, None, 0, SYNC_FILTER).await {
                Ok(body) => body["next_batch"].as_str().map(str::to_owned),
                Err(_) => None,
            };
            loop {
                let result = match transport {
                    Transport::LongPoll => {
                        server
                            .sync(&user, since.as_deref(), 30_000, SYNC_FILTER)
                            .await
                            .map(|body| {
                                shared.record(&body, index);
                                since = body["next_batch"].as_str().map(str::to_owned);
                            })
                    }
                    // Returns only when the socket fails; `since` follows every frame.
                    Transport::Websocket => {
                        receive_websocket(&server, &user, &mut since, |body| {
                            shared.record(body, index);
                        })
                        .await
                    }
                };
                if result.is_err() {
                    *errors.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    (loops, errors)
}

/// Connects a WebSocket from `since` and hands every update to `each`, keeping `since` at the
/// last `next_batch`; returns when the socket closes or fails.
async fn receive_websocket(
    server: &Server,
    user: &User,
    since: &mut Option<String>,
    mut each: impl FnMut(&serde_json::Value),
) -> Result<()> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let request = websocket_request(server, user, since.as_deref())?;
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            let body: serde_json::Value = serde_json::from_str(&text)?;
            if body.get("next_batch").is_some() {
                each(&body);
                *since = body["next_batch"].as_str().map(str::to_owned);
            }
        }
    }
    anyhow::bail!("the server closed the WebSocket")
}

/// The upgrade request for Hearth's WebSocket transport, from `since`.
fn websocket_request(
    server: &Server,
    user: &User,
    since: Option<&str>,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let host = server
        .base
        .strip_prefix("http://")
        .context("WebSockets are measured over plain http:// only")?
        .trim_end_matches('/');
    let mut url = format!(
        "ws://{host}{WEBSOCKET_PATH}?access_token={}&filter={}",
        crate::client::encode(&user.token),
        crate::client::encode(SYNC_FILTER)
    );
    if let Some(since) = since {
        url.push_str(&format!("&since={}", crate::client::encode(since)));
    }
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "m.json".parse()?);
    Ok(request)
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub transport: Transport,
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
    transport: Transport,
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
    let (mut loops, sync_errors) = start_sync_loops(server, users, transport, &sent, &latencies, &arrivals);
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
        transport,
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
    pub transport: Transport,
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
pub async fn fanout(
    server: &Server,
    users: &[User],
    transport: Transport,
    repeats: usize,
    parallel: usize,
) -> Result<FanoutResult> {
    let room = server
        .create_room(&users[0], &json!({ "preset": "public_chat" }))
        .await?;
    join_all(server, &users[1..], &room, parallel).await?;
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let arrivals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (mut loops, _) = start_sync_loops(server, users, transport, &sent, &latencies, &arrivals);
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
        transport,
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
    /// Long-polls open at the server when measured: its socket count grew by this much (or,
    /// without `--server-pid`, the requests still pending).
    pub held: usize,
    pub errors: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    pub bytes_per_connection: Option<f64>,
    /// The same number of idle WebSockets, when the server offers Hearth's transport.
    pub websockets: Option<HeldResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeldResult {
    pub held: usize,
    pub errors: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    pub bytes_per_connection: Option<f64>,
}

const WEBSOCKET_PATH: &str = "/_matrix/client/unstable/io.hearth.websocket/stream";
/// Connections per source address: below the ~28,000 ephemeral ports of one address.
const PER_ADDRESS: usize = 20_000;

fn source_address(i: usize) -> IpAddr {
    let a = i / PER_ADDRESS;
    IpAddr::V4(Ipv4Addr::new(127, 0, (a / 250) as u8, (a % 250 + 2) as u8))
}

/// The sockets the server process has open (from /proc), if its PID is known.
fn server_sockets(pid: Option<u32>) -> Option<usize> {
    let entries = std::fs::read_dir(format!("/proc/{}/fd", pid?)).ok()?;
    Some(
        entries
            .flatten()
            .filter(|entry| {
                std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count(),
    )
}

fn held_result(
    opened: usize,
    errors: usize,
    before: (Option<ProcessSample>, Option<usize>),
    held: (Option<ProcessSample>, Option<usize>),
) -> HeldResult {
    // The server's own socket count is the truth; a client-side connection still in the
    // accept queue is not held.
    let held_count = match (before.1, held.1) {
        (Some(b), Some(h)) => opened.min(h.saturating_sub(b)),
        _ => opened,
    };
    let rss_before = before.0.map(|s| s.rss_kib);
    let rss_held = held.0.map(|s| s.rss_kib);
    HeldResult {
        held: held_count,
        errors,
        rss_before_kib: rss_before,
        rss_held_kib: rss_held,
        bytes_per_connection: rss_before
            .zip(rss_held)
            .map(|(b, h)| (h.saturating_sub(b) as f64 * 1024.0) / held_count.max(1) as f64),
    }
}

/// Scenario 4: `count` idle `/sync` long-polls held at once, then as many idle WebSockets
/// (when the server has Hearth's transport), spread over source addresses 127.0.0.2.. so the
/// client side never runs out of ports. Reports the server's RSS growth per connection.
pub async fn connections(server: &Server, users: &[User], count: usize, pid: Option<u32>) -> Result<ConnectionsResult> {
    // A first sync per user gives the token the idle polls wait from.
    let mut tokens = Vec::new();
    for user in users {
        let body = server.sync(user, None, 0, SYNC_FILTER).await?;
        tokens.push(body["next_batch"].as_str().context("next_batch")?.to_owned());
    }
    let before = (sample_process(pid), server_sockets(pid));
    let mut clients = Vec::new();
    for a in 0..count.div_ceil(PER_ADDRESS) {
        clients.push(
            reqwest::Client::builder()
                .local_address(source_address(a * PER_ADDRESS))
                .pool_max_idle_per_host(PER_ADDRESS)
                .timeout(Duration::from_secs(180))
                .build()?,
        );
    }
    let mut polls = JoinSet::new();
    for i in 0..count {
        let client = clients[i / PER_ADDRESS].clone();
        let user = &users[i % users.len()];
        let url = format!(
            "{}/_matrix/client/v3/sync?timeout=120000&since={}&filter={}",
            server.base,
            crate::client::encode(&tokens[i % users.len()]),
            crate::client::encode(SYNC_FILTER)
        );
        let token = user.token.clone();
        polls.spawn(async move {
            let request = client.get(url).bearer_auth(token).send();
            request.await.map(|r| r.status().is_success()).unwrap_or(false)
        });
        if i % 1000 == 999 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Give the server a moment to accept and park them all, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = (sample_process(pid), server_sockets(pid));
    let mut errors = 0;
    let mut finished = 0;
    while let Some(Ok(ok)) = polls.try_join_next() {
        finished += 1;
        if !ok {
            errors += 1;
        }
    }
    polls.abort_all();
    drop(clients);
    let polls = held_result(count - finished, errors, before, held);

    let websockets = if server.unstable_feature("io.hearth.websocket").await? {
        // Let the server let go of the long-polls first.
        for _ in 0..100 {
            if server_sockets(pid)
                .zip(before.1)
                .is_none_or(|(now, b)| now <= b + count / 100)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(hold_websockets(server, users, &tokens, count, pid).await?)
    } else {
        None
    };
    Ok(ConnectionsResult {
        requested: count,
        held: polls.held,
        errors: polls.errors,
        rss_before_kib: polls.rss_before_kib,
        rss_held_kib: polls.rss_held_kib,
        bytes_per_connection: polls.bytes_per_connection,
        websockets,
    })
}

async fn hold_websockets(
    server: &Server,
    users: &[User],
    tokens: &[String],
    count: usize,
    pid: Option<u32>,
) -> Result<HeldResult> {
    use futures_util::StreamExt;

    let host = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let address = tokio::net::lookup_host(&host).await?.next().context("server address")?;
    let before = (sample_process(pid), server_sockets(pid));
    let (release, released) = tokio::sync::watch::channel(false);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
    let handshakes = Arc::new(Semaphore::new(256));
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sockets = JoinSet::new();
    for i in 0..count {
        let request = websocket_request(server, &users[i % users.len()], Some(&tokens[i % users.len()]))?;
        let mut released = released.clone();
        let opened = opened_tx.clone();
        let handshakes = handshakes.clone();
        let closed = closed.clone();
        sockets.spawn(async move {
            let open = async {
                let _permit = handshakes.acquire().await?;
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(std::net::SocketAddr::new(source_address(i), 0))?;
                let stream = socket.connect(address).await?;
                let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
                anyhow::Ok(socket)
            };
            let Ok(mut socket) = open.await else {
                let _ = opened.send(false);
                return;
            };
            let _ = opened.send(true);
            // Idle until released; reading answers the server's pings.
            loop {
                tokio::select! {
                    _ = released.changed() => return,
                    frame = socket.next() => if frame.is_none_or(|frame| frame.is_err()) {
                        closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    },
                }
            }
        });
    }
    drop(opened_tx);
    let mut opened = 0;
    let mut errors = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while opened + errors < count && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), opened_rx.recv()).await {
            Ok(Some(true)) => opened += 1,
            Ok(Some(false)) => errors += 1,
            Ok(None) | Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = (sample_process(pid), server_sockets(pid));
    // A socket the server closed while it should have idled is an error too.
    let closed = closed.load(std::sync::atomic::Ordering::Relaxed);
    let _ = release.send(true);
    sockets.shutdown().await;
    Ok(held_result(
        opened.saturating_sub(closed),
        errors + closed,
        before,
        held,
    ))
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eeResult {
    /// `PUT /sendToDevice` → the recipient's waiting `/sync` returns it.
    pub to_device: Distribution,
    pub one_time_keys: usize,
    pub claimers: usize,
    pub claims_per_second: f64,
    /// One-time keys handed out twice (must be 0).
    pub duplicates: usize,
}

/// Scenario 7: end-to-end encryption plumbing. To-device latency: `messages` messages, one
/// after the other, from one user's device to another's waiting long-poll. Then `keys`
/// one-time keys claimed by `claimers` concurrent clients until they run out.
pub async fn e2ee(
    server: &Server,
    users: &[User],
    messages: usize,
    keys: usize,
    claimers: usize,
) -> Result<E2eeResult> {
    let (sender, recipient) = (&users[0], &users[1]);
    // To-device latency.
    let mut since = server.sync(recipient, None, 0, SYNC_FILTER).await?["next_batch"]
        .as_str()
        .context("next_batch")?
        .to_owned();
    let mut samples = Vec::with_capacity(messages);
    for i in 0..messages {
        let started = Instant::now();
        let tag = format!("td-{i}");
        let path = format!("/_matrix/client/v3/sendToDevice/org.example.bench/{tag}");
        let body = json!({ "messages": { &recipient.user_id: { &recipient.device_id: { "tag": tag } } } });
        let send = server.put(&path, Some(&sender.token), &body);
        let wait = async {
            loop {
                let body = server.sync(recipient, Some(&since), 30_000, SYNC_FILTER).await?;
                since = body["next_batch"].as_str().context("next_batch")?.to_owned();
                let events = body["to_device"]["events"].as_array().cloned().unwrap_or_default();
                if events.iter().any(|e| e["content"]["tag"] == tag.as_str()) {
                    return anyhow::Ok(started.elapsed().as_secs_f64());
                }
            }
        };
        let (sent, elapsed) = tokio::join!(send, wait);
        sent?;
        samples.push(elapsed?);
    }

    // One-time key claims: the recipient's device publishes `keys` keys (no device keys, so
    // the server cannot check their signatures; the content does not matter here).
    let mut uploaded = serde_json::Map::new();
    for i in 0..keys {
        uploaded.insert(
            format!("signed_curve25519:K{i:08}"),
            json!({ "key": format!("{i:043}"), "signatures": {} }),
        );
    }
    for chunk in uploaded.into_iter().collect::<Vec<_>>().chunks(1000) {
        let body = json!({ "one_time_keys": serde_json::Map::from_iter(chunk.iter().cloned()) });
        server
            .post("/_matrix/client/v3/keys/upload", Some(&recipient.token), &body)
            .await?;
    }
    let claimed: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for claimer in 0..claimers {
        let server = server.clone();
        let user = users[2 + claimer % (users.len() - 2)].clone();
        let (target, device) = (recipient.user_id.clone(), recipient.device_id.clone());
        let claimed = Arc::clone(&claimed);
        tasks.spawn(async move {
            let body = json!({ "one_time_keys": { &target: { &device: "signed_curve25519" } } });
            loop {
                let response = server
                    .post("/_matrix/client/v3/keys/claim", Some(&user.token), &body)
                    .await?;
                let Some(keys) = response["one_time_keys"][&target][&device].as_object() else {
                    return anyhow::Ok(());
                };
                let Some(id) = keys.keys().next() else {
                    return Ok(());
                };
                claimed.lock().unwrap().push(id.clone());
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let claimed = claimed.lock().unwrap().clone();
    let distinct: std::collections::HashSet<&String> = claimed.iter().collect();
    Ok(E2eeResult {
        to_device: Distribution::of(&samples),
        one_time_keys: keys,
        claimers,
        claims_per_second: claimed.len() as f64 / elapsed,
        duplicates: claimed.len() - distinct.len(),
    })
}
