//! Discovery: `GET /_matrix/client/versions`, `/.well-known/matrix/{client,server}` and
//! `GET /_matrix/client/v3/capabilities`.

use axum::extract::State;
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
    },
    get_supported_versions,
};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::api::state::AppState;
use crate::error::{ApiError, ApiResult};

/// The spec versions `/versions` lists. Clients switch features on by these (matrix-js-sdk:
/// threads at v1.4, authenticated media at v1.11; ruma-based clients pick stable endpoint paths
/// by them), so a version is listed once what clients switch on with it works. What each one
/// brings and what of it is still missing is in docs/versions.md, which a test holds to this.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14",
];

/// `unstable_features`, each `true`: MSCs Hearth implements, by the names clients check
/// (docs/versions.md says which client checks which). Stable versions imply most of them;
/// they stay for clients that look for the flag instead.
pub const UNSTABLE_FEATURES: &[&str] = &[
    // Refresh tokens (stable in v1.3).
    "org.matrix.msc2918.refresh_token",
    // Private read receipts (v1.4).
    "org.matrix.msc2285.stable",
    // Threads: relations and summaries, the thread list, `dir` on /relations (v1.4).
    "org.matrix.msc3440.stable",
    "org.matrix.msc3856.stable",
    "org.matrix.msc3715.stable",
    // Threaded read receipts and per-thread notification counts (v1.4); matrix-js-sdk wants both.
    "org.matrix.msc3771",
    "org.matrix.msc3773",
    // `room_types` filter on the public room directory (v1.4).
    "org.matrix.msc3827.stable",
    // `timestamp_to_event` (v1.6).
    "org.matrix.msc3030",
    // Intentional mentions push rules (v1.7).
    "org.matrix.msc3952_intentional_mentions",
    // `recurse` on /relations (v1.10).
    "org.matrix.msc3981",
    // Authenticated media (v1.11).
    "org.matrix.msc3916.stable",
    // Extended profile fields (v1.16, not listed as a whole yet).
    "uk.tcpip.msc4133",
    "uk.tcpip.msc4133.stable",
    // Cross-signing (matrix-js-sdk's old check).
    "org.matrix.e2e_cross_signing",
    // Dehydrated devices.
    "org.matrix.msc3814",
    // Simplified sliding sync, as Element X looks for it.
    "org.matrix.simplified_msc3575",
    // Hearth's WebSocket transport (docs/websocket.md).
    "io.hearth.websocket",
];

/// The room versions Hearth creates and joins (all stable ones of the spec).
pub const ROOM_VERSIONS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// `GET /_matrix/client/versions`
pub async fn versions(
    _state: AppState,
    _request: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = UNSTABLE_FEATURES.iter().map(|f| ((*f).to_owned(), true)).collect();
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

/// `GET /.well-known/matrix/server`: server delegation, if configured.
pub async fn well_known_server(
    State(state): State<AppState>,
) -> ApiResult<RumaResponse<ruma::api::federation::discovery::discover_homeserver::Response>> {
    let server = state
        .config
        .well_known
        .server
        .as_deref()
        .ok_or_else(|| ApiError::not_found("No server delegation configured"))?;
    let server = ruma::OwnedServerName::try_from(server).map_err(|_| {
        tracing::error!(server, "well_known.server is not a server name");
        ApiError::internal()
    })?;
    Ok(RumaResponse(
        ruma::api::federation::discovery::discover_homeserver::Response::new(server),
    ))
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
