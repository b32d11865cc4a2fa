//! Extractors for the hand-written (non-ruma) endpoints: a JSON body whose errors are Matrix
//! errors, and an authenticated server admin; and the checks every JSON body gets, whichever
//! extractor (or the WebSocket) reads it.

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
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

/// One query parameter by name, decoded (`None` when absent).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Whether a JSON body holds a NUL character in any string (key or value). Checked only when
/// the raw text contains the escape at all, so ordinary bodies cost one scan.
pub fn json_has_nul(body: &[u8]) -> bool {
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(map) => map.iter().any(|(key, value)| key.contains('\0') || walk(value)),
            _ => false,
        }
    }
    let escaped = body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"));
    escaped && serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|value| walk(&value))
}

/// Deepest nesting of arrays and objects a JSON body may have: below serde_json's own limit
/// (128), so whatever is accepted and stored can always be read back.
pub const MAX_JSON_DEPTH: usize = 100;

/// Whether a JSON text nests arrays and objects deeper than [`MAX_JSON_DEPTH`] (one linear
/// scan; brackets inside strings do not count).
pub fn json_too_deep(body: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The checks every JSON body gets before it is parsed or stored: no NUL in any string, no
/// nesting past [`MAX_JSON_DEPTH`].
pub fn check_json_body(body: &[u8]) -> ApiResult<()> {
    if json_too_deep(body) {
        return Err(ApiError::bad_json(format!(
            "JSON may nest at most {MAX_JSON_DEPTH} levels deep"
        )));
    }
    if json_has_nul(body) {
        return Err(ApiError::bad_json("NUL characters are not allowed in JSON strings"));
    }
    Ok(())
}
