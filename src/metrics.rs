//! Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/_matrix/client/v3/profile/{user_id}/{field}`), never the raw path,
    /// so the label set stays small.
    pub endpoint: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub method: String,
    pub endpoint: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<EndpointLabels, Histogram>,
    pub db_connections: Gauge,
    pub db_connections_idle: Gauge,
    /// Clients waiting for news: `/sync` and sliding sync long-polls and WebSocket pushers.
    pub sync_waiters: Gauge,
    pub websockets: Gauge,
    /// Notifications push gateways took, and attempts that failed.
    pub pushes_sent: Counter,
    pub push_failures: Counter,
    /// Time to evaluate one event's push rules for all its room's local members.
    pub push_evaluation_seconds: Histogram,
    /// Members' rule sets run (one per event and member).
    pub push_rule_evaluations: Counter,
    /// PDUs other servers accepted from us, and PDUs we took in from them.
    pub federation_pdus_sent: Counter,
    pub federation_pdus_received: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        let db_connections = Gauge::default();
        let db_connections_idle = Gauge::default();
        let sync_waiters = Gauge::default();
        let websockets = Gauge::default();
        let pushes_sent = Counter::default();
        let push_failures = Counter::default();
        let push_evaluation_seconds = Histogram::new([
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
        ]);
        let push_rule_evaluations = Counter::default();
        let federation_pdus_sent = Counter::default();
        let federation_pdus_received = Counter::default();
        registry.register(
            "federation_pdus_sent",
            "PDUs sent to other servers in transactions they accepted",
            federation_pdus_sent.clone(),
        );
        registry.register(
            "federation_pdus_received",
            "PDUs from other servers that entered a room",
            federation_pdus_received.clone(),
        );
        registry.register(
            "push_evaluation_seconds",
            "Time to evaluate one event for every local member of its room",
            push_evaluation_seconds.clone(),
        );
        registry.register(
            "push_rule_evaluations",
            "Rule sets run: one per event and member",
            push_rule_evaluations.clone(),
        );
        registry.register(
            "pushes_sent",
            "Notifications push gateways accepted",
            pushes_sent.clone(),
        );
        registry.register(
            "push_failures",
            "Attempts to reach a push gateway that failed (each retry counts)",
            push_failures.clone(),
        );
        registry.register(
            "sync_waiters",
            "Connections waiting for news (long-polls and WebSockets)",
            sync_waiters.clone(),
        );
        registry.register("websockets_open", "WebSocket connections open", websockets.clone());
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by endpoint",
            request_seconds.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections open",
            db_connections.clone(),
        );
        registry.register(
            "db_pool_connections_idle",
            "Database connections idle",
            db_connections_idle.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            db_connections,
            db_connections_idle,
            sync_waiters,
            websockets,
            pushes_sent,
            push_failures,
            push_evaluation_seconds,
            push_rule_evaluations,
            federation_pdus_sent,
            federation_pdus_received,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::error!(%error, "could not encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
