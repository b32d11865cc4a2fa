//! Discovery: `GET /_matrix/client/versions`, `/.well-known/matrix/{client,server}` and
//! `GET /_matrix/client/v3/capabilities`.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
    },
    get_supported_versions,
};
use serde_json::{Value, json};

use super::ruma::Ruma;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// The spec versions whose client-server API we implement as far as clients depend on it.
/// Add a version only when everything it made mandatory works.
pub const SUPPORTED_VERSIONS: &[&str] = &["v1.1", "v1.2", "v1.3"];

/// The room versions Hearth creates and joins (all stable ones of the spec).
pub const ROOM_VERSIONS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// `GET /_matrix/client/versions`
pub async fn versions(
    _state: AppState,
    _request: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    // Refresh tokens went stable in v1.3; older clients look for the MSC flag.
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc2918.refresh_token".to_owned(), true),
        ("org.matrix.simplified_msc3575".to_owned(), true),
        ("io.hearth.websocket".to_owned(), true),
        ("org.matrix.e2e_cross_signing".to_owned(), true),
        ("org.matrix.msc3814".to_owned(), true),
        // Authenticated media (v1.11): clients that gate /_matrix/client/v1/media on it.
        ("org.matrix.msc3916.stable".to_owned(), true),
    ]);
    Ok(response)
}

/// `GET /.well-known/matrix/client`: where clients find us, if configured.
pub async fn well_known_client(
    state: AppState,
    _request: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    let base_url = state
        .config
        .client_base_url()
        .ok_or_else(|| ApiError::not_found("No client discovery configured"))?;
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(
        base_url.to_owned(),
    )))
}

/// `GET /.well-known/matrix/server`: server delegation, if configured. (Hand-written: this
/// document belongs to the federation API, which ruma's client crate does not carry.)
pub async fn well_known_server(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let server = state
        .config
        .well_known
        .server
        .as_deref()
        .ok_or_else(|| ApiError::not_found("No server delegation configured"))?;
    Ok(Json(json!({ "m.server": server })))
}

/// `GET /_matrix/client/v3/capabilities`
pub async fn capabilities(
    state: AppState,
    request: Ruma<get_capabilities::v3::Request>,
) -> ApiResult<get_capabilities::v3::Response> {
    request.sender()?;
    let mut capabilities = Capabilities::new();
    capabilities.change_password.enabled = true;
    // We store no third-party identifiers and issue no login tokens.
    capabilities.thirdparty_id_changes.enabled = false;
    capabilities.get_login_token.enabled = false;
    let default = ruma::RoomVersionId::try_from(state.config.rooms.default_room_version.as_str())
        .map_err(|_| crate::error::ApiError::internal())?;
    let available = ROOM_VERSIONS
        .iter()
        .filter_map(|v| ruma::RoomVersionId::try_from(*v).ok())
        .map(|v| (v, RoomVersionStability::Stable))
        .collect();
    capabilities.room_versions = RoomVersionsCapability::new(default, available);
    Ok(get_capabilities::v3::Response::new(capabilities))
}
