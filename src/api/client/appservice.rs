//! What application services (and clients, for third-party lookups) call beside the usual
//! API: `POST /appservice/{appserviceId}/ping`, the appservice room directory
//! (`PUT /directory/list/appservice/{networkId}/{roomId}`), and `/thirdparty/*`, answered from
//! the appservices that declare the protocol.

use axum::Json;
use ruma::api::client::{
    appservice::{request_ping, set_room_visibility},
    room::Visibility,
    thirdparty::{
        get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols, get_user_for_protocol,
        get_user_for_user_id,
    },
};
use serde_json::Value;

use crate::api::ruma::Ruma;
use crate::api::state::AppState;
use crate::{
    appservices::auth::require_appservice,
    error::{ApiError, ApiResult},
};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the homeserver calls the
/// appservice's `/ping` and answers how long it took.
pub async fn ping(state: AppState, request: Ruma<request_ping::v1::Request>) -> ApiResult<request_ping::v1::Response> {
    let sender = request.sender()?;
    let service = require_appservice(sender)?;
    if service.id() != request.body.appservice_id {
        return Err(ApiError::forbidden("An application service can only ping itself"));
    }
    let transaction_id = request.body.transaction_id.as_ref().map(|id| id.as_str());
    let duration = state.appservices.ping(service, transaction_id).await?;
    Ok(request_ping::v1::Response::new(duration))
}

/// `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`: lists (or
/// unlists) a room in the directory of one of the appservice's networks.
pub async fn set_network_visibility(
    state: AppState,
    request: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let sender = request.sender()?;
    let service = require_appservice(sender)?;
    let body = &request.body;
    if state
        .caches
        .room_version(&state.storage, body.room_id.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("Unknown room"));
    }
    let listed = match &body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(ApiError::invalid_param("visibility must be public or private")),
    };
    state
        .storage
        .set_appservice_room_listed(service.id(), &body.network_id, body.room_id.as_str(), listed)
        .await?;
    Ok(set_room_visibility::v3::Response::new())
}

/// `GET /_matrix/client/v3/thirdparty/protocols`
pub async fn protocols(state: AppState, request: Ruma<get_protocols::v3::Request>) -> ApiResult<Json<Value>> {
    request.sender()?;
    Ok(Json(Value::Object(state.appservices.protocols().await)))
}

/// `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
pub async fn protocol(state: AppState, request: Ruma<get_protocol::v3::Request>) -> ApiResult<Json<Value>> {
    request.sender()?;
    state
        .appservices
        .protocol(&request.body.protocol)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::not_found("No application service bridges this protocol"))
}

/// `GET /_matrix/client/v3/thirdparty/location/{protocol}`
pub async fn locations(
    state: AppState,
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> ApiResult<Json<Value>> {
    request.sender()?;
    let body = &request.body;
    lookup(&state, "location", Some(&body.protocol), fields(&body.fields)).await
}

/// `GET /_matrix/client/v3/thirdparty/location?alias=`
pub async fn locations_by_alias(
    state: AppState,
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> ApiResult<Json<Value>> {
    request.sender()?;
    let query = vec![("alias".to_owned(), request.body.alias.to_string())];
    lookup(&state, "location", None, query).await
}

/// `GET /_matrix/client/v3/thirdparty/user/{protocol}`
pub async fn users(state: AppState, request: Ruma<get_user_for_protocol::v3::Request>) -> ApiResult<Json<Value>> {
    request.sender()?;
    let body = &request.body;
    lookup(&state, "user", Some(&body.protocol), fields(&body.fields)).await
}

/// `GET /_matrix/client/v3/thirdparty/user?userid=`
pub async fn users_by_id(state: AppState, request: Ruma<get_user_for_user_id::v3::Request>) -> ApiResult<Json<Value>> {
    request.sender()?;
    let query = vec![("userid".to_owned(), request.body.userid.to_string())];
    lookup(&state, "user", None, query).await
}

/// The lookup's fields, without what authenticated the request here (a client's
/// `access_token` in the query must never reach an appservice) or asserted an identity.
fn fields(fields: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    const OURS: [&str; 5] = [
        "access_token",
        "user_id",
        "device_id",
        "org.matrix.msc3202.device_id",
        "ts",
    ];
    fields
        .iter()
        .filter(|(key, _)| !OURS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Asks the appservices bridging `protocol` (or all that bridge any, for reverse lookups) and
/// concatenates their lists. A protocol nobody bridges is 404, as Synapse answers.
async fn lookup(
    state: &AppState,
    kind: &str,
    protocol: Option<&str>,
    query: Vec<(String, String)>,
) -> ApiResult<Json<Value>> {
    if let Some(protocol) = protocol
        && state.appservice_registry().with_protocol(protocol).next().is_none()
    {
        return Err(ApiError::not_found("No application service bridges this protocol"));
    }
    let answers = state.appservices.thirdparty(kind, protocol, &query).await;
    let merged: Vec<Value> = answers
        .into_iter()
        .filter_map(|answer| match answer {
            Value::Array(items) => Some(items),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(Json(Value::from(merged)))
}
