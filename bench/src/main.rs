//! `hearth-bench`: a load generator for Matrix homeservers. It speaks only the standard
//! client-server API, so the same run measures Hearth, Synapse or any other server.
//!
//! ```text
//! hearth-bench --base http://127.0.0.1:8008 --shared-secret SECRET --scenario all
//! ```
//!
//! Scenarios: `latency` (online users in DMs and groups, messages at fixed rates, send →
//! recipient's sync), `throughput` (concurrent senders as fast as acknowledged), `fanout`
//! (one message to a room where every member syncs), `connections` (idle long-polls held and
//! the server's memory per connection), `initial-sync` (first `/sync` and sliding sync of a
//! user in many rooms), `history` (`/messages` back through a long room), `e2ee` (to-device
//! latency, one-time key claims), `media` (upload and download throughput of a large file),
//! `push` (send → push gateway latency in a large room, and push rule evaluation cost). With
//! `--server-pid`, the server's RSS and CPU time are read from /proc around each scenario.

mod appservice;
mod client;
mod federation;
mod media;
mod push;
mod receiver;
mod scenarios;
mod stats;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::client::{Registration, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Latency,
    Throughput,
    Fanout,
    Connections,
    InitialSync,
    History,
    E2ee,
    Media,
    Push,
    /// Users of `--base` message users of `--remote-base` (not part of `all`).
    Federation,
    /// This process as an application service the server sends transactions to (not part of
    /// `all`: the server must have its registration; see bench/appservices.py).
    Appservice,
}

#[derive(Debug, Parser)]
#[command(version, about = "A Matrix load generator (client-server API only)")]
struct Args {
    /// The homeserver's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    base: String,
    /// Register through /_synapse/admin/v1/register with this secret; without it, open
    /// registration (m.login.dummy) is used.
    #[arg(long, env = "BENCH_SHARED_SECRET")]
    shared_secret: Option<String>,
    /// Which scenarios to run.
    #[arg(long, value_enum, default_values_t = [Scenario::All])]
    scenario: Vec<Scenario>,
    /// The server's process ID, to sample its RSS and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Prefix for user names, so repeated runs against one server do not collide.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Latency: online users.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Latency: rates in messages per second ("max" = the throughput result).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,max")]
    rates: Vec<String>,
    /// Seconds each latency rate and the throughput scenario run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Throughput: concurrent senders.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Fan-out: room members.
    #[arg(long, default_value_t = 500)]
    members: usize,
    /// Fan-out: messages.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Connections: idle long-polls to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Initial sync: rooms the user is in.
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    /// Initial sync: members per room.
    #[arg(long, default_value_t = 50)]
    room_members: usize,
    /// History: events in the room.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// E2EE: to-device messages sent one after another.
    #[arg(long, default_value_t = 200)]
    to_device: usize,
    /// E2EE: one-time keys published, then claimed until they run out.
    #[arg(long, default_value_t = 2000)]
    one_time_keys: usize,
    /// E2EE: concurrent claimers.
    #[arg(long, default_value_t = 32)]
    claimers: usize,
    /// Media: size of the file uploaded and downloaded, in MiB.
    #[arg(long, default_value_t = 50)]
    media_mib: usize,
    /// Media: uploads (each downloaded once).
    #[arg(long, default_value_t = 5)]
    media_rounds: usize,
    /// Media: downloads at once in the parallel round.
    #[arg(long, default_value_t = 4)]
    media_parallel: usize,
    /// Push: room members (one of them has a pusher).
    #[arg(long, default_value_t = 500)]
    push_members: usize,
    /// Push: messages sent, one at a time.
    #[arg(long, default_value_t = 50)]
    push_messages: usize,
    /// Requests in flight while setting up (registration, joins).
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// How recipients receive in the latency and fan-out scenarios: `/sync` long-polls, or
    /// Hearth's WebSocket transport.
    #[arg(long, value_enum, default_value = "long-poll")]
    transport: scenarios::Transport,
    /// Federation: the receiving server's base URL.
    #[arg(long)]
    remote_base: Option<String>,
    /// Federation: register on the receiving server with this shared secret (else open
    /// registration).
    #[arg(long)]
    remote_shared_secret: Option<String>,
    /// Federation: rooms, each with a sender here and a recipient there.
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// Federation: messages per second in the latency part.
    #[arg(long, default_value_t = 100.0)]
    federation_rate: f64,
    /// Appservice: where this process listens (its registration's `url`).
    #[arg(long, default_value = "127.0.0.1:9009")]
    appservice_listen: String,
    /// Appservice: its `as_token`.
    #[arg(long, env = "BENCH_AS_TOKEN")]
    appservice_token: Option<String>,
    /// Appservice: the ghost's localpart (in its user namespace).
    #[arg(long, default_value = "benchas_ghost")]
    appservice_ghost: String,
    /// Appservice: messages sent one at a time for the latency part.
    #[arg(long, default_value_t = 200)]
    appservice_messages: usize,
    /// Appservice: messages queued while it is down, for the catch-up part.
    #[arg(long, default_value_t = 5000)]
    appservice_backlog: usize,
    /// Print the results as JSON (with every latency sample, for charts) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    base: String,
    latency: Vec<scenarios::LatencyResult>,
    throughput: Option<scenarios::ThroughputResult>,
    fanout: Option<scenarios::FanoutResult>,
    connections: Option<scenarios::ConnectionsResult>,
    initial_sync: Option<scenarios::InitialSyncResult>,
    history: Option<scenarios::HistoryResult>,
    e2ee: Option<scenarios::E2eeResult>,
    media: Option<media::MediaResult>,
    push: Option<push::PushResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    federation: Option<federation::FederationResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appservice: Option<appservice::AppserviceResult>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Built together with Hearth, reqwest has no default TLS provider (Hearth installs ring's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registration = match &args.shared_secret {
        Some(secret) => Registration::SharedSecret(secret.clone()),
        None => Registration::Open,
    };
    let server = Server::new(&args.base, registration, 4096)?;
    let wants = |s: Scenario| {
        (args.scenario.contains(&Scenario::All) && !matches!(s, Scenario::Federation | Scenario::Appservice))
            || args.scenario.contains(&s)
    };
    let log = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let mut report = Report {
        base: args.base.clone(),
        ..Report::default()
    };
    let duration = Duration::from_secs(args.seconds);
    let prefix = &args.prefix;

    if wants(Scenario::Throughput) || (wants(Scenario::Latency) && args.rates.iter().any(|r| r == "max")) {
        let users = scenarios::register_many(&server, &format!("{prefix}-tp-"), args.senders, args.parallel).await?;
        let result = scenarios::throughput(&server, &users, duration, args.server_pid).await?;
        log(format!(
            "throughput   {} senders, {:.1} s: {:.0} msg/s, {} errors; send {}",
            result.senders,
            result.seconds,
            result.messages_per_second,
            result.errors,
            result.send_latency.row()
        ));
        report.throughput = Some(result);
    }
    if wants(Scenario::Latency) {
        let users = scenarios::register_many(&server, &format!("{prefix}-lat-"), args.users, args.parallel).await?;
        for (round, rate) in args.rates.iter().enumerate() {
            let rate: f64 = match rate.as_str() {
                "max" => report
                    .throughput
                    .as_ref()
                    .map_or(1000.0, |t| t.messages_per_second.floor().max(1.0)),
                number => number.parse()?,
            };
            // Fresh rooms per rate, so each round starts from quiet rooms.
            let slice = &users[..];
            let result = scenarios::latency(&server, slice, args.transport, rate, duration, args.server_pid).await?;
            log(format!(
                "latency      {} users @ {:.0} msg/s (achieved {:.0}): {}; {} of {} deliveries, {} send errors (round {})",
                args.users,
                rate,
                result.achieved_rate,
                result.latency.row(),
                result.deliveries_seen,
                result.deliveries_expected,
                result.send_errors,
                round + 1
            ));
            let mut result = result;
            if !args.json {
                result.samples.clear();
            }
            report.latency.push(result);
        }
    }
    if wants(Scenario::Fanout) {
        let users = scenarios::register_many(&server, &format!("{prefix}-fan-"), args.members, args.parallel).await?;
        let result = scenarios::fanout(&server, &users, args.transport, args.repeats, args.parallel).await?;
        log(format!(
            "fan-out      {} members, {} messages: all members {}; each {}; {} incomplete",
            result.members,
            result.repeats,
            result.all_members.row(),
            result.each_member.row(),
            result.incomplete
        ));
        report.fanout = Some(result);
    }
    if wants(Scenario::History) {
        let users = scenarios::register_many(&server, &format!("{prefix}-hist-"), 1, 1).await?;
        let result = scenarios::history(&server, &users[0], args.history, args.parallel).await?;
        log(format!(
            "history      {} events: filled in {:.1} s, read back in {:.2} s = {:.0} events/s",
            result.events, result.fill_seconds, result.read_seconds, result.events_per_second
        ));
        report.history = Some(result);
    }
    if wants(Scenario::InitialSync) {
        let users =
            scenarios::register_many(&server, &format!("{prefix}-init-"), args.room_members, args.parallel).await?;
        let result = scenarios::initial_sync(&server, &users, args.rooms, args.parallel).await?;
        log(format!(
            "initial sync {} rooms x {} members: /sync {:.3} s ({} KiB), sliding sync {}",
            result.rooms,
            result.members_per_room,
            result.sync_seconds,
            result.sync_bytes / 1024,
            result
                .sliding_sync_seconds
                .map_or("unsupported".to_owned(), |s| format!("{s:.3} s"))
        ));
        report.initial_sync = Some(result);
    }
    if wants(Scenario::E2ee) {
        let claimers = args.claimers.max(1);
        let users =
            scenarios::register_many(&server, &format!("{prefix}-e2ee-"), 2 + claimers.min(8), args.parallel).await?;
        let result = scenarios::e2ee(&server, &users, args.to_device, args.one_time_keys, claimers).await?;
        log(format!(
            "to-device    send → recipient's /sync: {}",
            result.to_device.row()
        ));
        log(format!(
            "key claims   {} one-time keys, {} claimers: {:.0} claims/s, {} handed out twice",
            result.one_time_keys, result.claimers, result.claims_per_second, result.duplicates
        ));
        report.e2ee = Some(result);
    }
    if wants(Scenario::Media) {
        let users = scenarios::register_many(&server, &format!("{prefix}-media-"), 1, args.parallel).await?;
        let result = media::media(
            &server,
            &users[0],
            args.media_mib,
            args.media_rounds,
            args.media_parallel,
            args.server_pid,
        )
        .await?;
        log(format!("media        {}", result.row()));
        report.media = Some(result);
    }
    if wants(Scenario::Federation) {
        let remote_base = args
            .remote_base
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the federation scenario needs --remote-base"))?;
        let remote_registration = match &args.remote_shared_secret {
            Some(secret) => Registration::SharedSecret(secret.clone()),
            None => Registration::Open,
        };
        let remote = Server::new(remote_base, remote_registration, 4096)?;
        let result = federation::federation(
            &server,
            &remote,
            prefix,
            args.pairs.max(1),
            args.federation_rate,
            duration,
            args.parallel,
        )
        .await?;
        log(format!(
            "federation   {} pairs, {:.0}/{:.0} msg/s: {}/{} delivered, latency {}; max {:.0} delivered/s ({}/{})",
            result.pairs,
            result.achieved_rate,
            result.target_rate,
            result.delivered,
            result.messages,
            result.latency.row(),
            result.max_delivered_per_second,
            result.max_delivered,
            result.max_sent
        ));
        report.federation = Some(result);
    }
    if wants(Scenario::Appservice) {
        let as_token = args
            .appservice_token
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the appservice scenario needs --appservice-token"))?;
        let users =
            scenarios::register_many(&server, &format!("{prefix}-as-"), args.senders.max(1), args.parallel).await?;
        let options = appservice::Options {
            listen: &args.appservice_listen,
            as_token,
            ghost: &args.appservice_ghost,
            messages: args.appservice_messages,
            seconds: duration,
            backlog: args.appservice_backlog,
        };
        let result = appservice::appservice(&server, &users, options).await?;
        log(format!("appservice   {}", result.row()));
        report.appservice = Some(result);
    }
    if wants(Scenario::Push) {
        let users = scenarios::register_many(
            &server,
            &format!("{prefix}-push-"),
            args.push_members.max(2),
            args.parallel,
        )
        .await?;
        let result = push::push(&server, &users, args.push_messages, args.parallel).await?;
        log(format!("push         {}", result.row()));
        report.push = Some(result);
    }
    if wants(Scenario::Connections) {
        let users = scenarios::register_many(
            &server,
            &format!("{prefix}-conn-"),
            100.min(args.connections),
            args.parallel,
        )
        .await?;
        let result = scenarios::connections(&server, &users, args.connections, args.server_pid).await?;
        log(format!(
            "connections  {} requested, {} held, {} errors; RSS {} → {} KiB; {} bytes per connection",
            result.requested,
            result.held,
            result.errors,
            result.rss_before_kib.map_or("?".into(), |v| v.to_string()),
            result.rss_held_kib.map_or("?".into(), |v| v.to_string()),
            result.bytes_per_connection.map_or("?".into(), |v| format!("{v:.0}"))
        ));
        if let Some(ws) = &result.websockets {
            log(format!(
                "websockets   {} held, {} errors; RSS {} → {} KiB; {} bytes per connection",
                ws.held,
                ws.errors,
                ws.rss_before_kib.map_or("?".into(), |v| v.to_string()),
                ws.rss_held_kib.map_or("?".into(), |v| v.to_string()),
                ws.bytes_per_connection.map_or("?".into(), |v| format!("{v:.0}"))
            ));
        }
        report.connections = Some(result);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
