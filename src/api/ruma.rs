//! The bridge between axum and ruma: every Matrix endpoint is a handler that takes a typed ruma
//! request ([`Ruma<Req>`]) and returns the typed ruma response.
//!
//! The extractor does the cross-cutting work once for every endpoint: it authenticates the
//! access token as the endpoint's metadata requires, reads the body up to the configured limit,
//! and turns ruma's parse errors into the Matrix errors the spec names (`M_NOT_JSON`,
//! `M_BAD_JSON`, ...). Handlers see only well-formed requests.

use std::{future::Future, net::IpAddr};

use axum::{
    Router,
    body::Body,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request, State},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
    error::{DeserializationError, FromHttpRequestError},
    path_builder::PathBuilder,
};

use super::{
    auth::{AuthPolicy, TokenUse, authenticate, client_ip},
    state::AppState,
};
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
};

/// A parsed request, with who sent it.
pub struct Ruma<Req> {
    pub body: Req,
    /// The authenticated user, when the request carried a valid access token.
    pub sender: Option<Sender>,
    pub client_ip: IpAddr,
    /// The body as sent, for the few endpoints that keep fields ruma's types drop (extra keys
    /// of a `/join` body go into the member event).
    pub raw_body: Bytes,
    /// The server that signed a federation request (checked before parsing).
    pub origin: Option<ruma::OwnedServerName>,
}

impl<Req> Ruma<Req> {
    /// The origin of a federation request; server-server endpoints always have one.
    pub fn origin(&self) -> ApiResult<&ruma::ServerName> {
        self.origin.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ruma::api::error::ErrorKind::Unauthorized,
                "Missing X-Matrix authorization",
            )
        })
    }
}

impl<Req> Ruma<Req> {
    /// The authenticated user; endpoints that require a token always have one.
    pub fn sender(&self) -> ApiResult<&Sender> {
        self.sender.as_ref().ok_or_else(ApiError::missing_token)
    }
}

impl<Req> FromRequest<AppState> for Ruma<Req>
where
    Req: IncomingRequest,
    Req::Authentication: AuthPolicy,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
            Err(axum::extract::rejection::RawPathParamsRejection::MissingPathParams(_)) => Vec::new(),
            Err(_) => {
                return Err(ApiError::invalid_param("Path parameters must be valid UTF-8"));
            }
        };
        let client_ip = client_ip(&parts, state);
        let sender = authenticate(&parts, state, Req::Authentication::TOKEN).await?;
        let raw_body = read_body(body, body_limit(state, Req::Authentication::TOKEN)).await?;
        let origin = match Req::Authentication::TOKEN {
            TokenUse::Server => Some(super::auth::verify_origin(state, &parts, &raw_body).await?),
            _ => None,
        };
        crate::json::check_json_body(&raw_body)?;
        let body = raw_body.clone();
        let mut args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // A trailing empty parameter (`/state/{type}/` for the empty state key) is routed
        // without it; ruma still expects it.
        let expected = Req::PATH_BUILDER
            .all_paths()
            .next()
            .map_or(0, |path| path.matches('{').count());
        args.resize(expected.max(args.len()), "");
        // Clients send POSTs such as /join and /leave with no body at all; as Synapse does,
        // an empty POST body reads as `{}`. PUT bodies are the content itself and must exist
        // (Synapse: M_NOT_JSON).
        let body: &[u8] = if body.is_empty() && parts.method == http::Method::POST {
            b"{}"
        } else {
            &body
        };
        if body.is_empty() && parts.method == http::Method::PUT {
            return Err(ApiError::not_json("A PUT needs a JSON body"));
        }
        let template = Req::PATH_BUILDER.all_paths().next().unwrap_or_default();
        let lenient = lenient_body(template, body);
        let body = lenient.as_deref().unwrap_or(body);
        let request = http::Request::from_parts(parts, body);
        // ruma's parsers are not panic-free on every malformed input (a login body without
        // `type` once indexed a missing key); a panic here is a bad request, not a crash.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Req::try_from_http_request(request, &args)
        }));
        let body = match parsed {
            Ok(parsed) => parsed.map_err(parse_error)?,
            Err(_) => {
                tracing::warn!("request parser panicked; answered M_BAD_JSON");
                return Err(ApiError::bad_json("Malformed request"));
            }
        };
        Ok(Self {
            body,
            sender,
            client_ip,
            raw_body,
            origin,
        })
    }
}

/// The largest body read: a federation transaction (50 PDUs of up to 64 KiB, 100 EDUs) may
/// exceed what a client request needs.
fn body_limit(state: &AppState, token_use: TokenUse) -> usize {
    let limit = state.config.limits.max_request_body_bytes;
    match token_use {
        TokenUse::Server => limit.max(FEDERATION_BODY_LIMIT),
        _ => limit,
    }
}

/// 50 PDUs at the 64 KiB maximum, plus room for EDUs.
const FEDERATION_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Bodies where ruma's types are stricter than the spec (and Synapse): what the spec makes
/// optional is filled in with Synapse's default before ruma parses. `PUT /typing` with
/// `typing: true` may leave out `timeout` (30 s).
fn lenient_body(path_template: &str, body: &[u8]) -> Option<Vec<u8>> {
    if !path_template.ends_with("/typing/{user_id}") {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    if object.get("typing") != Some(&serde_json::Value::Bool(true)) || object.contains_key("timeout") {
        return None;
    }
    object.insert("timeout".into(), serde_json::Value::from(30_000));
    serde_json::to_vec(&value).ok()
}

/// Reads the whole body, refusing (413 `M_TOO_LARGE`) past `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(error) if crate::listener::is_body_timeout(error.as_ref()) => Err(ApiError::body_timeout()),
        Err(_) => Err(ApiError::bad_json("Could not read the request body")),
    }
}

/// Maps ruma's parse failure to the spec's error: unparseable JSON is `M_NOT_JSON`, JSON of
/// the wrong shape `M_BAD_JSON`, a bad identifier or query `M_INVALID_PARAM`.
fn parse_error(error: FromHttpRequestError) -> ApiError {
    match error {
        FromHttpRequestError::MethodMismatch { .. } => {
            ApiError::unrecognized(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        }
        FromHttpRequestError::Deserialization(DeserializationError::Json(error)) => json_error(&error),
        FromHttpRequestError::Deserialization(error) => ApiError::invalid_param(error.to_string()),
        _ => ApiError::bad_json("Invalid request"),
    }
}

pub fn json_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::not_json(format!("Body is not valid JSON: {error}"))
        }
        Category::Data => ApiError::bad_json(format!("Invalid request body: {error}")),
    }
}

/// A ruma response on its way out.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(Body::from),
            Err(error) => {
                tracing::error!(%error, "could not serialize a response");
                ApiError::internal().into_response()
            }
        }
    }
}

/// Adds ruma endpoints to the router: `router.ruma(handler)` registers `handler` on every path
/// (r0, v3, unstable) and the method ruma's metadata gives for the request type it takes.
pub trait RumaRouter {
    fn ruma<Req, H, Fut>(self, handler: H) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: AuthPolicy,
        Req::OutgoingResponse: Send,
        H: Fn(AppState, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ApiResult<Req::OutgoingResponse>> + Send + 'static;

    /// Like [`RumaRouter::ruma`], for handlers that build their own response body (large
    /// documents such as `/sync`, written as JSON directly).
    fn ruma_raw<Req, H, Fut, R>(self, handler: H) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: AuthPolicy,
        H: Fn(AppState, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ApiResult<R>> + Send + 'static,
        R: IntoResponse + 'static;
}

impl RumaRouter for Router<AppState> {
    fn ruma<Req, H, Fut>(self, handler: H) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: AuthPolicy,
        Req::OutgoingResponse: Send,
        H: Fn(AppState, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ApiResult<Req::OutgoingResponse>> + Send + 'static,
    {
        self.ruma_raw(move |state, request: Ruma<Req>| {
            let handler = handler.clone();
            async move { handler(state, request).await.map(RumaResponse) }
        })
    }

    fn ruma_raw<Req, H, Fut, R>(mut self, handler: H) -> Self
    where
        Req: IncomingRequest + Send + 'static,
        Req::Authentication: AuthPolicy,
        H: Fn(AppState, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ApiResult<R>> + Send + 'static,
        R: IntoResponse + 'static,
    {
        let method = MethodFilter::try_from(Req::METHOD).expect("ruma endpoints use standard HTTP methods");
        for path in Req::PATH_BUILDER.all_paths() {
            let mut paths = vec![path.to_owned()];
            // The empty state key may be written as a trailing slash or left out.
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                paths.push(format!("{prefix}/"));
                paths.push(prefix.to_owned());
            }
            for path in paths {
                let handler = handler.clone();
                self = self.route(
                    &path,
                    on(
                        method,
                        move |State(state): State<AppState>, request: Ruma<Req>| async move {
                            handler(state, request).await
                        },
                    ),
                );
            }
        }
        self
    }
}
