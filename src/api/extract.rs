//! Extractors for the hand-written (non-ruma) endpoints: a JSON body whose errors are Matrix
//! errors, and an authenticated server admin.

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::ruma::{TokenUse, authenticate, json_error, read_body};
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
    state::AppState,
};

/// A JSON body: `M_NOT_JSON` if it does not parse, `M_BAD_JSON` if it has the wrong shape,
/// `M_TOO_LARGE` past the body limit.
pub struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for MatrixJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> ApiResult<Self> {
        let body = read_body(
            request.into_body(),
            state.config.limits.max_request_body_bytes,
        )
        .await?;
        let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
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
