//! Errors we answer with, in the Matrix shape: an HTTP status and
//! `{"errcode": "M_…", "error": "…"}`. The homeserver logs them; bridges' webhook callers see
//! the same shape.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;

#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
        }
    }

    /// No token at all (the spec's client-server convention, which bridges follow).
    pub fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token")
    }

    /// A token that is not ours: the spec names 403 `M_FORBIDDEN` for a wrong `hs_token`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub fn unrecognized() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request")
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errcode": self.errcode, "error": self.message });
        (self.status, Json(body)).into_response()
    }
}
