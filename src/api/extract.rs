//! Extractors for the hand-written (non-ruma) endpoints: a JSON body whose errors are Matrix
//! errors, and an authenticated server admin; and the checks every JSON body gets, whichever
//! extractor (or the WebSocket) reads it.

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

pub use super::auth::query_param;
use super::state::AppState;
use super::{
    auth::{TokenUse, authenticate},
    ruma::{json_error, read_body},
};
pub use crate::json::check_json_body;
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
};

/// A JSON body: `M_NOT_JSON` if it does not parse, `M_BAD_JSON` if it has the wrong shape,
/// `M_TOO_LARGE` past the body limit.
pub struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for MatrixJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> ApiResult<Self> {
        let body = read_body(request.into_body(), state.config.limits.max_request_body_bytes).await?;
        let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
        check_json_body(body)?;
        serde_json::from_slice(body)
            .map(Self)
            .map_err(|error| json_error(&error))
    }
}

/// A logged-in server admin (`403 M_FORBIDDEN` for everyone else).
pub struct Admin(pub Sender);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let sender = authenticate(parts, state, TokenUse::Required)
            .await?
            .ok_or_else(ApiError::missing_token)?;
        if !sender.is_admin {
            return Err(ApiError::forbidden("You are not a server admin"));
        }
        Ok(Self(sender))
    }
}

/// A logged-in user (`401` without a valid access token).
pub struct Authed(pub Sender);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        authenticate(parts, state, TokenUse::Required)
            .await?
            .map(Self)
            .ok_or_else(ApiError::missing_token)
    }
}

/// The single path parameter of a hand-written route, percent-decoded; `M_INVALID_PARAM`
/// if it is not UTF-8.
pub struct PathParam(pub String);

impl FromRequestParts<AppState> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid_param("Path parameters must be valid UTF-8"))?;
        let value = params.iter().next().map(|(_, value)| value.to_owned());
        value
            .map(Self)
            .ok_or_else(|| ApiError::invalid_param("Missing path parameter"))
    }
}
