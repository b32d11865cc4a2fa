//! Operations endpoints and the answers for requests no endpoint takes.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ruma::api::error::ErrorKind;

use super::state::AppState;
use crate::{
    error::ApiError,
    metrics::{EndpointLabels, RequestLabels},
};

/// `GET /health`: 200 `OK` while the database answers, 503 otherwise.
pub async fn health(State(state): State<AppState>) -> Response {
    if state.storage.is_healthy().await {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let (open, idle) = state.storage.pool_usage();
    state.metrics.db_connections.set(i64::from(open));
    state.metrics.db_connections_idle.set(idle as i64);
    state.metrics.sync_waiters.set(state.notifier.waiting());
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// Unknown path: 404 `M_UNRECOGNIZED`.
pub async fn unknown_endpoint(uri: axum::http::Uri) -> ApiError {
    // A malformed push rule path (unknown scope, kind or attribute, no rule ID) is a bad
    // request, as Synapse answers it, not a missing endpoint.
    if uri.path().starts_with("/_matrix/client/") && uri.path().contains("/pushrules/") {
        return ApiError::unrecognized(StatusCode::BAD_REQUEST, "Unrecognized push rule path");
    }
    ApiError::unrecognized(StatusCode::NOT_FOUND, "Unrecognized request")
}

/// Longest request URI (path and query) served, as Synapse's (Twisted's) line limit. Past it:
/// 414 with a Matrix error. (URIs past 65534 bytes never get here: hyper answers those with a
/// bare 414 itself.)
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// A URI past [`MAX_URI_BYTES`]: 414 `M_TOO_LARGE`. A percent-encoded NUL anywhere in the path
/// or query (a state key, an event type, a transaction ID, a file name...): 400
/// `M_INVALID_PARAM`. Both before anything is looked up.
pub async fn check_uri(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let length = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if length > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorKind::TooLarge,
            format!("The request URI is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let has_nul = |part: &str| {
        part.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    };
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::invalid_param("NUL characters are not allowed in paths or parameters").into_response();
    }
    next.run(request).await
}

/// Known path, wrong method: 405 `M_UNRECOGNIZED`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::unrecognized(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed for this endpoint")
}

/// Counts every request and times it, labelled by route template and status.
pub async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = EndpointLabels { method, endpoint };
    state
        .metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: labels.method,
            endpoint: labels.endpoint,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
