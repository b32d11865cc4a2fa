//! The homeserver asking appservices: does this user or alias exist (spec: "Querying"), are
//! you there (ping), and what do you know of a third-party network.

use hearth_appservices::{Appservice, CallError};
use http::StatusCode;
use ruma::api::error::{BadStatusErrorData, ErrorKind};
use serde_json::Value;

use super::Appservices;

/// How long an ID an appservice did not know is not asked about again.
const UNKNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// IDs remembered as unknown, at most (all are forgotten when full).
const MAX_UNKNOWN: usize = 10_000;
use crate::error::{ApiError, ApiResult};

impl Appservices {
    /// A local user nobody registered, in an appservice's namespace: the appservice is asked
    /// to create it (`GET /users/{userId}`). Returns whether the user exists afterwards.
    pub async fn query_user(&self, user_id: &ruma::UserId) -> bool {
        if user_id.server_name() != self.base.config.server_name {
            return false;
        }
        if self.recently_unknown(user_id.as_str()) {
            return false;
        }
        let registry = self.base.appservice_registry();
        for service in registry.with_user(user_id.as_str()) {
            match self.client.query_user(&service.registration, user_id.as_str()).await {
                Ok(true) => {
                    if matches!(self.base.storage.user(user_id.as_str()).await, Ok(Some(_))) {
                        return true;
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::debug!(appservice = service.id(), %error, "user query failed"),
            }
        }
        self.remember_unknown(user_id.as_str());
        false
    }

    fn recently_unknown(&self, id: &str) -> bool {
        let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown.get(id).is_some_and(|asked| asked.elapsed() < UNKNOWN_FOR)
    }

    fn remember_unknown(&self, id: &str) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if unknown.len() >= MAX_UNKNOWN {
            unknown.clear();
        }
        unknown.insert(id.to_owned(), std::time::Instant::now());
    }

    /// An alias of this server nobody created, in an appservice's namespace: the appservice is
    /// asked to create it (`GET /rooms/{alias}`). Returns whether it exists afterwards.
    pub async fn query_alias(&self, alias: &ruma::RoomAliasId) -> bool {
        if alias.server_name() != self.base.config.server_name {
            return false;
        }
        if self.recently_unknown(alias.as_str()) {
            return false;
        }
        let registry = self.base.appservice_registry();
        for service in registry.with_alias(alias.as_str()) {
            match self.client.query_alias(&service.registration, alias.as_str()).await {
                Ok(true) => {
                    if matches!(self.base.storage.alias(alias.as_str()).await, Ok(Some(_))) {
                        return true;
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::debug!(appservice = service.id(), %error, "alias query failed"),
            }
        }
        self.remember_unknown(alias.as_str());
        false
    }

    /// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the homeserver pings the
    /// appservice (`POST /_matrix/app/v1/ping`); the time it took, or the spec's errors.
    pub async fn ping(&self, service: &Appservice, transaction_id: Option<&str>) -> ApiResult<std::time::Duration> {
        let answered = self.client.ping(&service.registration, transaction_id).await;
        if answered.is_ok() {
            // It is up: a queue waiting out a backoff tries again now.
            self.outbox.renew_if_running(&service.id().to_owned());
        }
        answered.map_err(|error| match error {
            CallError::NoUrl => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UrlNotSet,
                "The application service has no URL",
            ),
            CallError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::ConnectionTimeout,
                "The application service did not answer in time",
            ),
            CallError::Connection(reason) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::ConnectionFailed,
                format!("Cannot reach the application service: {reason}"),
            ),
            CallError::Status { status, body } => {
                let mut data = BadStatusErrorData::new();
                data.status = StatusCode::from_u16(status).ok();
                data.body = Some(body.to_string());
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorKind::BadStatus(data),
                    format!("The application service answered {status}"),
                )
            }
            CallError::NotJson | CallError::TooLarge => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::BadStatus(BadStatusErrorData::new()),
                format!("The application service's answer: {error}"),
            ),
        })
    }

    /// A third-party lookup asked of every appservice bridging `protocol`
    /// (`GET /_matrix/app/v1/thirdparty/{kind}/{protocol}`): the answers of those that
    /// answered, lists concatenated.
    pub async fn thirdparty(&self, kind: &str, protocol: Option<&str>, query: &[(String, String)]) -> Vec<Value> {
        let registry = self.base.appservice_registry();
        let services: Vec<_> = match protocol {
            Some(protocol) => registry.with_protocol(protocol).cloned().collect(),
            None => registry
                .iter()
                .filter(|service| !service.registration.protocols.is_empty())
                .cloned()
                .collect(),
        };
        let mut segments = vec![kind];
        segments.extend(protocol);
        let asks = services.iter().map(|service| {
            let segments = segments.clone();
            async move { self.client.thirdparty(&service.registration, &segments, query).await }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|answer| {
                answer
                    .map_err(|error| tracing::debug!(%error, "third-party lookup failed"))
                    .ok()
            })
            .collect()
    }

    /// The protocols every appservice declares, each described by one that bridges it
    /// (`GET /thirdparty/protocol/{protocol}`), with the instances of all of them merged.
    pub async fn protocols(&self) -> serde_json::Map<String, Value> {
        let registry = self.base.appservice_registry();
        let mut names: Vec<String> = registry
            .iter()
            .flat_map(|service| service.registration.protocols.clone())
            .collect();
        names.sort();
        names.dedup();
        let mut protocols = serde_json::Map::new();
        for name in names {
            if let Some(protocol) = self.protocol(&name).await {
                protocols.insert(name, protocol);
            }
        }
        protocols
    }

    /// One protocol's description, instances merged across the appservices bridging it, each
    /// instance tagged with its appservice (`instance_id` is what `publicRooms` filters by).
    pub async fn protocol(&self, name: &str) -> Option<Value> {
        let registry = self.base.appservice_registry();
        let mut merged: Option<Value> = None;
        for service in registry.with_protocol(name) {
            let Ok(mut answer) = self
                .client
                .thirdparty(&service.registration, &["protocol", name], &[])
                .await
            else {
                continue;
            };
            if !answer.is_object() {
                continue;
            }
            let instances = answer
                .get_mut("instances")
                .and_then(Value::as_array_mut)
                .map(std::mem::take)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|mut instance| {
                    let network = instance.get("network_id")?.as_str()?.to_owned();
                    instance["instance_id"] = Value::from(instance_id(service.id(), &network));
                    Some(instance)
                });
            match &mut merged {
                None => {
                    answer["instances"] = Value::from(instances.collect::<Vec<_>>());
                    merged = Some(answer);
                }
                Some(existing) => {
                    if let Some(list) = existing["instances"].as_array_mut() {
                        list.extend(instances);
                    }
                }
            }
        }
        merged
    }
}

/// The `instance_id` of an appservice's network: what `third_party_instance_id` names in
/// `publicRooms` (Synapse's form).
pub fn instance_id(appservice_id: &str, network_id: &str) -> String {
    format!("{appservice_id}|{network_id}")
}

/// The appservice and network an `instance_id` names.
pub fn parse_instance_id(instance_id: &str) -> Option<(&str, &str)> {
    instance_id.split_once('|')
}
