//! HTTP only: the route table and the handlers. A handler authenticates (through its
//! extractor), calls the area that does the work, and maps the result.
//!
//! Every endpoint is listed in [`router`], next to the handler that serves it.

pub mod auth;
pub mod client;
mod errors;
mod extract;
pub mod federation;
mod guests;
mod ops;
pub mod ruma;
pub mod state;

use std::time::Duration;

use axum::{
    Router, middleware,
    routing::{get, post, put},
};
use http::{HeaderName, Method, Request, header};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::info_span;

pub use self::client::discovery::{SUPPORTED_VERSIONS, UNSTABLE_FEATURES};
pub use self::extract::check_json_body;
use self::state::AppState;
use self::{
    client::{
        account, account_data, admin, appservice, dehydrated_device, devices, directory, discovery, key_backup, keys,
        media, membership, profile, push, register, relations, rooms, session, spaces, sync, user_directory,
    },
    federation::keys as server_keys,
    ruma::RumaRouter,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route table.
pub fn router(state: AppState) -> Router {
    let matrix = Router::new()
        // Discovery
        .ruma(discovery::versions)
        .ruma(discovery::well_known_client)
        .route("/.well-known/matrix/server", get(discovery::well_known_server))
        .ruma(discovery::capabilities)
        // Registration
        .ruma_raw(register::register)
        .ruma(register::username_available)
        .ruma(register::registration_token_validity)
        // Sessions
        .ruma(session::login_types)
        .ruma(session::login)
        .ruma(session::refresh)
        .ruma(session::logout)
        .ruma(session::logout_all)
        .ruma(session::whoami)
        // Account
        .ruma(account::change_password)
        .ruma(account::deactivate)
        .ruma(account::third_party_ids)
        // Devices
        .ruma_raw(devices::list)
        .ruma_raw(devices::get)
        .ruma_raw(devices::update)
        .ruma(devices::delete)
        .ruma(devices::delete_many)
        // Profile
        .ruma(profile::get)
        .ruma(profile::get_field)
        .ruma(profile::set_field)
        .ruma(profile::delete_field)
        // Account data
        .ruma(account_data::get)
        .ruma(account_data::set)
        .ruma(account_data::get_room)
        .ruma(account_data::set_room)
        .ruma(account_data::tags)
        .ruma(account_data::add_tag)
        .ruma(account_data::remove_tag)
        // Rooms
        .ruma(rooms::create)
        .ruma(rooms::send_message)
        .ruma(rooms::send_state)
        .ruma(rooms::get_state)
        .ruma(rooms::get_state_event)
        .ruma(rooms::get_event)
        .ruma(rooms::messages)
        .ruma(rooms::redact)
        .ruma(rooms::context)
        .ruma(rooms::timestamp_to_event)
        .ruma(rooms::upgrade)
        .ruma(relations::all)
        .ruma(relations::by_type)
        .ruma(relations::by_type_and_event_type)
        .ruma(relations::threads)
        // Aliases, directory, reports
        .ruma(directory::create)
        .ruma(directory::resolve)
        .ruma(directory::delete)
        .ruma(directory::room_aliases)
        .ruma(directory::visibility)
        .ruma(directory::set_visibility)
        .ruma(directory::list_public)
        .ruma(directory::search_public)
        .ruma(directory::report_event)
        .ruma(directory::report_whole_room)
        .ruma(directory::report_user)
        // Application services
        .ruma(appservice::ping)
        .ruma(appservice::set_network_visibility)
        .ruma_raw(appservice::protocols)
        .ruma_raw(appservice::protocol)
        .ruma_raw(appservice::locations)
        .ruma_raw(appservice::locations_by_alias)
        .ruma_raw(appservice::users)
        .ruma_raw(appservice::users_by_id)
        // Membership
        .ruma(membership::join_by_id)
        .ruma(membership::join_by_id_or_alias)
        .ruma(membership::invite)
        .ruma(membership::knock)
        .ruma(membership::leave)
        .ruma(membership::forget)
        .ruma(membership::kick)
        .ruma(membership::ban)
        .ruma(membership::unban)
        .ruma(membership::members)
        .ruma_raw(membership::joined)
        .ruma(membership::rooms_joined)
        // Sync, filters, typing, receipts, presence
        .ruma_raw(sync::sync)
        .ruma(sync::create)
        .ruma(sync::get)
        .ruma(sync::typing)
        .ruma(sync::receipt)
        .ruma(sync::read_markers)
        .ruma_raw(sync::get_status)
        .ruma(sync::set_status)
        .route(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            post(sync::sliding),
        )
        .route(
            "/_matrix/client/unstable/io.hearth.websocket/stream",
            get(sync::websocket),
        )
        // End-to-end encryption: keys, to-device messages, key backup
        .ruma(keys::upload)
        .ruma_raw(keys::query)
        .ruma_raw(keys::claim)
        .ruma(keys::changes)
        .ruma(keys::upload_signing_keys)
        .ruma_raw(keys::upload_signatures)
        .ruma(keys::send_to_device)
        .ruma(key_backup::create_version)
        .ruma_raw(key_backup::latest_version)
        .ruma_raw(key_backup::get_version)
        .ruma(key_backup::update_version)
        .ruma(key_backup::delete_version)
        .ruma(key_backup::put_all)
        .ruma(key_backup::put_room)
        .ruma(key_backup::put_session)
        .ruma_raw(key_backup::get_all)
        .ruma_raw(key_backup::get_room)
        .ruma_raw(key_backup::get_session)
        .ruma(key_backup::delete_all)
        .ruma(key_backup::delete_room)
        .ruma(key_backup::delete_session)
        .ruma(dehydrated_device::put)
        .ruma(dehydrated_device::get)
        .ruma(dehydrated_device::delete)
        .ruma_raw(dehydrated_device::events)
        // Media
        .route("/_matrix/media/v3/upload", post(media::upload))
        .route("/_matrix/media/r0/upload", post(media::upload))
        .route("/_matrix/media/v1/create", post(media::create))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(media::upload_to),
        )
        .route("/_matrix/client/v1/media/config", get(media::config))
        .route("/_matrix/media/v3/config", get(media::config))
        .route("/_matrix/client/v1/media/preview_url", get(media::preview_url))
        .route("/_matrix/media/v3/preview_url", get(media::preview_url))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(media::download),
        )
        // matrix-nio asks with an empty file name (a trailing slash).
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/",
            get(media::download),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(media::thumbnail),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}",
            get(media::legacy_download),
        )
        .route(
            "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
            get(media::legacy_download),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
            get(media::legacy_thumbnail),
        )
        .route(
            "/_matrix/media/r0/download/{server_name}/{media_id}",
            get(media::legacy_download),
        )
        .route(
            "/_matrix/media/r0/download/{server_name}/{media_id}/{file_name}",
            get(media::legacy_download),
        )
        .route(
            "/_matrix/media/r0/thumbnail/{server_name}/{media_id}",
            get(media::legacy_thumbnail),
        )
        // Push rules, pushers, notifications
        .ruma(push::all)
        .ruma(push::global)
        .ruma(push::get_rule)
        .ruma(push::set_rule)
        .ruma(push::delete_rule)
        .ruma(push::get_enabled)
        .ruma(push::set_enabled)
        .ruma(push::get_actions)
        .ruma(push::set_actions)
        .ruma_raw(push::get_pushers)
        .ruma(push::set_pusher)
        .ruma_raw(push::notifications)
        // User directory
        .ruma(user_directory::search)
        .ruma(account::openid_token)
        // Spaces
        .ruma_raw(spaces::hierarchy)
        // Server-server API
        .route("/_matrix/key/v2/server", get(server_keys::server_keys))
        .ruma(server_keys::query_keys)
        .ruma(server_keys::query_keys_batch)
        .ruma(federation::version::server_version)
        .ruma(federation::query::profile)
        .ruma(federation::query::directory)
        .ruma(federation::membership::make_join)
        .ruma(federation::membership::send_join)
        .ruma(federation::membership::make_leave)
        .ruma(federation::membership::send_leave)
        .ruma(federation::membership::make_knock)
        .ruma(federation::membership::send_knock)
        .ruma(federation::membership::invite)
        .ruma(federation::events::event)
        .ruma(federation::events::state_ids)
        .ruma(federation::events::state)
        .ruma(federation::events::event_auth)
        .ruma(federation::events::missing_events)
        .ruma(federation::events::backfill)
        .ruma(federation::events::timestamp_to_event)
        .ruma(federation::transactions::send_transaction)
        .ruma_raw(federation::devices::user_devices)
        .ruma_raw(media::federation_download)
        .ruma_raw(media::federation_thumbnail)
        .ruma(federation::directory::public_rooms_get)
        .ruma(federation::openid::userinfo)
        .ruma_raw(federation::directory::hierarchy)
        .ruma(federation::directory::public_rooms_post)
        .ruma_raw(federation::devices::user_keys_query)
        .ruma_raw(federation::devices::user_keys_claim)
        // Synapse-compatible admin API
        .route(
            "/_synapse/admin/v1/register",
            get(admin::register_nonce).post(admin::register_with_shared_secret),
        )
        .route(
            "/_synapse/admin/v1/registration_tokens",
            get(admin::list_registration_tokens),
        )
        .route(
            "/_synapse/admin/v1/registration_tokens/new",
            post(admin::create_registration_token),
        )
        .route(
            "/_synapse/admin/v1/registration_tokens/{token}",
            get(admin::get_registration_token)
                .put(admin::update_registration_token)
                .delete(admin::delete_registration_token),
        )
        // Operations
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), ops::record_metrics))
        .fallback(ops::unknown_endpoint)
        .method_not_allowed_fallback(ops::method_not_allowed);

    matrix
        // NUL is in no identifier; PostgreSQL cannot store it in text. Refused before any
        // handler, so both databases answer alike.
        .layer(middleware::from_fn(ops::check_uri))
        // A bug that panics in a handler answers 500 M_UNKNOWN instead of dropping the
        // connection; the server keeps running either way.
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            axum::response::IntoResponse::into_response(crate::error::ApiError::internal())
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-");
            // The path only: query strings may carry access tokens.
            info_span!("request", id, method = %request.method(), path = request.uri().path())
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(cors())
        .with_state(state)
}

/// CORS for browser clients such as Element Web, as the spec asks: any origin, the Matrix
/// methods and headers. Preflight `OPTIONS` requests are answered here.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::DATE,
            // Media players seek with it.
            header::RANGE,
        ])
        // Web clients read the file name and the part they got.
        .expose_headers([header::CONTENT_DISPOSITION, header::CONTENT_RANGE])
        .max_age(Duration::from_secs(24 * 60 * 60))
}
