//! Sliding sync connections: per user, device and `conn_id`, what was sent under each `pos`.

use std::{
    collections::HashMap,
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use http::StatusCode;
use ruma::api::error::ErrorKind;
use tokio::time::Instant;

use super::request::RequiredState;
use crate::{
    error::{ApiError, ApiResult},
    streams::token::StreamToken,
};

/// Connections (`conn_id`s) one device may hold; the least recently used goes first.
const MAX_CONNECTIONS_PER_DEVICE: usize = 10;
/// Connections kept across all users; past it the least recently used are dropped.
const MAX_CONNECTIONS: usize = 10_000;
/// Connections unused for this long are forgotten (the client gets `M_UNKNOWN_POS`).
const CONNECTION_IDLE: Duration = Duration::from_secs(60 * 60);

#[derive(Default)]
pub struct Connections {
    inner: Mutex<HashMap<(String, String, String), Connection>>,
}

struct Connection {
    /// (pos, what had been sent when it was handed out), oldest first.
    states: Vec<(String, ConnState)>,
    last_used: Instant,
}

#[derive(Debug, Clone, Default)]
pub(super) struct ConnState {
    pub(super) token: StreamToken,
    pub(super) rooms: HashMap<String, SentRoom>,
}

#[derive(Debug, Clone)]
pub(super) struct SentRoom {
    pub(super) timeline_limit: usize,
    /// The required state configs the room was last sent with.
    pub(super) required: Vec<RequiredState>,
    pub(super) membership: String,
}

pub(super) static POS_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn unknown_pos() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::UnknownPos,
        "Unknown or expired pos: start a new connection",
    )
}

impl Connections {
    pub(super) fn load(&self, key: &(String, String, String), pos: Option<&str>) -> ApiResult<Option<ConnState>> {
        let Some(pos) = pos else {
            return Ok(None);
        };
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let connection = inner.get_mut(key).ok_or_else(unknown_pos)?;
        connection.last_used = Instant::now();
        connection
            .states
            .iter()
            .find(|(p, _)| p == pos)
            .map(|(_, state)| Some(state.clone()))
            .ok_or_else(unknown_pos)
    }

    /// Records the state under a new `pos`; states older than the one the client continued
    /// from are dropped (the client has processed it, so it will never go back further).
    pub(super) fn store(&self, key: (String, String, String), used: Option<&str>, pos: String, state: ConnState) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.len() >= MAX_CONNECTIONS {
            inner.retain(|_, c| c.last_used.elapsed() < CONNECTION_IDLE);
        }
        if inner.len() >= MAX_CONNECTIONS {
            // Still full of live ones: the least recently used tenth goes (their clients get
            // M_UNKNOWN_POS and start again), so the sweep is paid once per thousand.
            let mut by_use: Vec<Instant> = inner.values().map(|c| c.last_used).collect();
            by_use.sort_unstable();
            let cutoff = by_use[MAX_CONNECTIONS / 10];
            inner.retain(|_, c| c.last_used > cutoff);
        }
        if !inner.contains_key(&key) {
            let device: Vec<(&(String, String, String), Instant)> = inner
                .iter()
                .filter(|(k, _)| k.0 == key.0 && k.1 == key.1)
                .map(|(k, c)| (k, c.last_used))
                .collect();
            if device.len() >= MAX_CONNECTIONS_PER_DEVICE
                && let Some(oldest) = device.iter().min_by_key(|(_, used)| *used).map(|(k, _)| (*k).clone())
            {
                inner.remove(&oldest);
            }
        }
        let connection = inner.entry(key).or_insert_with(|| Connection {
            states: Vec::new(),
            last_used: Instant::now(),
        });
        connection.last_used = Instant::now();
        match used {
            Some(used) => {
                if let Some(index) = connection.states.iter().position(|(p, _)| p == used) {
                    connection.states.drain(..index);
                }
            }
            // A new connection with this conn_id replaces the old one.
            None => connection.states.clear(),
        }
        connection.states.push((pos, state));
        // A client that keeps retrying one pos must not grow the list without end.
        while connection.states.len() > 4 {
            connection.states.remove(1);
        }
    }
}
