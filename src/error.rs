//! The one error type of the API: every failure leaves the server as a Matrix error, with the
//! HTTP status and `errcode` the spec gives for it.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponseExt,
    client::uiaa::UiaaInfo,
    error::{
        Error as RumaError, ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody,
        UnknownTokenErrorData,
    },
};

use crate::storage::StorageError;

#[derive(Debug)]
pub enum ApiError {
    /// A standard Matrix error.
    Matrix {
        status: StatusCode,
        kind: ErrorKind,
        message: String,
    },
    /// User-interactive authentication must continue: 401 with the flows and progress.
    Uiaa(Box<UiaaInfo>),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }

    pub fn unrecognized(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Unrecognized, message)
    }

    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::MissingToken,
            "Missing access token",
        )
    }

    /// The token is not (or no longer) valid. `soft_logout` tells the client it may log in
    /// again keeping its device and keys (the token merely expired).
    pub fn unknown_token(soft_logout: bool) -> Self {
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = soft_logout;
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(data),
            "Unknown or expired access token",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }

    /// The client stopped sending the request body (`limits.body_timeout_secs`).
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Unknown,
            "The request body stopped arriving".to_owned(),
        )
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            "Too many requests",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unknown,
            "Internal server error",
        )
    }

    /// The error code, for callers that react to a specific one.
    pub fn errcode(&self) -> Option<ErrorKind> {
        match self {
            Self::Matrix { kind, .. } => Some(kind.clone()),
            Self::Uiaa(_) => None,
        }
    }

    /// The `errcode` and message, for transports that carry errors in their own frames
    /// (the WebSocket).
    pub fn errcode_and_message(&self) -> (String, String) {
        match self {
            Self::Matrix { kind, message, .. } => (kind.errcode().to_string(), message.clone()),
            Self::Uiaa(_) => (
                "M_FORBIDDEN".to_owned(),
                "This needs user-interactive authentication; use the HTTP API".to_owned(),
            ),
        }
    }

    /// The HTTP status, for tests and logs.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Matrix { status, .. } => *status,
            Self::Uiaa(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        StorageError::from(error).into()
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        if error.is_unavailable() {
            // The database is away for a moment (a lost connection, a restart, a full pool):
            // the client should retry, not give up.
            tracing::warn!(%error, "database unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unknown,
                "The database is briefly unavailable; retry shortly",
            );
        }
        tracing::error!(%error, "storage failure");
        Self::internal()
    }
}

/// How long a client is asked to wait after a 503.
const RETRY_AFTER_SECS: u64 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            // A 503 tells the client when to retry, in the header and in the body.
            Self::Matrix { status, kind, message } if status == StatusCode::SERVICE_UNAVAILABLE => {
                let body = serde_json::json!({
                    "errcode": kind.errcode().to_string(),
                    "error": message,
                    "retry_after_ms": RETRY_AFTER_SECS * 1000,
                });
                (
                    status,
                    [(http::header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                    axum::Json(body),
                )
                    .into_response()
            }
            Self::Matrix { status, kind, message } => {
                let error = RumaError::new(status, ErrorBody::Standard(StandardErrorBody::new(kind, message)));
                match error.try_into_http_response::<Vec<u8>>() {
                    Ok(response) => response.map(axum::body::Body::from),
                    Err(e) => {
                        tracing::error!(error = %e, "could not serialize an error response");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
            Self::Uiaa(info) => (StatusCode::UNAUTHORIZED, axum::Json(info)).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_and_a_bug_a_500() {
        let lost = ApiError::from(StorageError::Sqlx(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))));
        assert_eq!(lost.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            ApiError::from(StorageError::Sqlx(sqlx::Error::PoolTimedOut)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let response = lost.into_response();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
        assert_eq!(
            ApiError::from(StorageError::Invariant("broken")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::from(StorageError::Sqlx(sqlx::Error::RowNotFound)).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
