//! Federation: this server's side of talking to other homeservers. The protocol pieces that
//! need no database (discovery, signing, the HTTP client, key documents, PDU checks) live in
//! the `hearth-federation` crate; this area holds what needs our storage: other servers' keys,
//! request verification, and (in later files) inbound transactions and the outbound queue.
//!
//! It sits above `rooms` (it feeds remote events into the same pipeline) and below the API.

pub mod backfill;
pub mod devices;
pub mod edus;
pub mod hierarchy;
pub mod history;
pub mod invite;
pub mod join;
pub mod keys;
pub mod media;
pub mod membership;
pub mod outbound_edus;
pub mod partial;
pub mod pdu;
pub mod queries;
pub mod request;
pub mod sender;
pub mod transactions;

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hearth_federation::client::{ClientSettings, FederationClient};
use ruma::ServerName;

use crate::{base::Base, config::split_host_port, outbound::AddressPolicy, ratelimit::RateLimiter};

/// Federation with other servers; present only when `federation.enabled`.
pub struct Federation {
    pub base: Base,
    pub client: Arc<FederationClient>,
    /// The outbound queue (one task per destination).
    pub sender: Arc<sender::FederationSender>,
    blocked: HashSet<String>,
    /// Inbound requests per origin.
    pub inbound_limits: RateLimiter,
    keys: keys::KeyCache,
    /// One remote join per room at a time: a second local user joining the same room waits,
    /// then joins locally through the first one's membership.
    joining: crate::rooms::RoomLocks,
    /// One backfill per room at a time: readers paging back together wait for one fetch.
    backfilling: crate::rooms::RoomLocks,
    /// Typing notices and presence, where other servers' EDUs land.
    typing: Arc<crate::ephemeral::typing::Typing>,
    presence: Arc<crate::ephemeral::presence::Presence>,
    /// Remote users whose device list is being fetched again.
    resyncing: std::sync::Mutex<HashSet<ruma::OwnedUserId>>,
    /// This service, for tasks it starts.
    this: std::sync::Weak<Federation>,
    /// Fetches media from where other servers point (plain HTTPS, the address policy).
    media_client: reqwest::Client,
    /// Rooms joined with partial state, and the events waiting for their full state.
    pub partial: partial::PartialStates,
}

impl Federation {
    /// The federation service, or `None` when federation is off.
    pub fn new(
        base: &Base,
        typing: Arc<crate::ephemeral::typing::Typing>,
        presence: Arc<crate::ephemeral::presence::Presence>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let config = &base.config.federation;
        if !config.enabled {
            return Ok(None);
        }
        crate::outbound::install_crypto_provider();
        let policy = Arc::new(AddressPolicy {
            denylist: config.ip_range_denylist.clone(),
            allowlist: config.ip_range_allowlist.clone(),
        });
        let media_client = crate::outbound::guarded_client(
            AddressPolicy {
                denylist: config.ip_range_denylist.clone(),
                allowlist: config.ip_range_allowlist.clone(),
            },
            Duration::from_secs(config.request_timeout_secs),
        );
        let extra_roots_pem = match &config.extra_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("federation.extra_ca_file: cannot read {}", path.display()))?,
            ),
            None => None,
        };
        let overrides = config
            .destination_overrides
            .iter()
            .filter_map(|(server, target)| {
                let (host, port) = split_host_port(target)?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Some((server.clone(), (host.to_owned(), port)))
            })
            .collect();
        if !config.verify_certificates {
            tracing::warn!(
                "federation.verify_certificates = false: other servers' TLS certificates are NOT checked; \
                 anyone on the network path can impersonate them. Use this for test set-ups only"
            );
        }
        let client = FederationClient::new(ClientSettings {
            origin: base.config.server_name.clone(),
            key: base.signing_key.clone(),
            extra_roots_pem,
            verify_certificates: config.verify_certificates,
            timeout: Duration::from_secs(config.request_timeout_secs),
            permit: Arc::new(move |ip: IpAddr| policy.permits(ip)),
            overrides,
        })
        .context("cannot build the federation client (check federation.extra_ca_file)")?;
        let client = Arc::new(client);
        let sender = sender::FederationSender::start(base, client.clone());
        let subscriber: Arc<dyn crate::base::Subscriber> = sender.clone();
        base.subscribe(Arc::downgrade(&subscriber));
        let federation = Arc::new_cyclic(|this| Self {
            base: base.clone(),
            client,
            sender,
            blocked: config.blocked_servers.iter().map(|s| s.to_ascii_lowercase()).collect(),
            inbound_limits: RateLimiter::new(crate::config::RateLimit {
                per_second: config.inbound_per_second,
                burst_count: config.inbound_burst,
            }),
            keys: keys::KeyCache::default(),
            joining: crate::rooms::RoomLocks::default(),
            backfilling: crate::rooms::RoomLocks::default(),
            typing,
            presence,
            resyncing: std::sync::Mutex::default(),
            this: this.clone(),
            media_client,
            partial: partial::PartialStates::default(),
        });
        federation.resume_partial_states();
        let countersigner: Arc<dyn crate::base::Countersigner> = federation.clone();
        base.set_countersigner(Arc::downgrade(&countersigner));
        Ok(Some(federation))
    }

    /// Whether the operator refused this server (`federation.blocked_servers`).
    pub fn is_blocked(&self, server: &ServerName) -> bool {
        self.blocked.contains(&server.as_str().to_ascii_lowercase())
    }

    /// The servers of `servers` worth asking, in order: each once, never ours nor a blocked
    /// one.
    pub(crate) fn servers_to_try<'a>(&self, servers: &'a [ruma::OwnedServerName]) -> Vec<&'a ruma::OwnedServerName> {
        let mut to_try: Vec<&ruma::OwnedServerName> = Vec::new();
        for server in servers {
            if server != self.server_name() && !self.is_blocked(server) && !to_try.contains(&server) {
                to_try.push(server);
            }
        }
        to_try
    }

    pub fn server_name(&self) -> &ServerName {
        &self.base.config.server_name
    }
}
