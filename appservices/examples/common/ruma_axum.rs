//! Lets axum handlers take ruma's request types and return ruma's response types, so the
//! shapes of the appservice API come from ruma (which follows the spec) and not from us.

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ruma::api::{
    IncomingRequest, IncomingRequestExt as _, OutgoingResponse, OutgoingResponseExt as _,
    error::{DeserializationError, FromHttpRequestError},
};

use super::error::MatrixError;

/// A transaction holds at most a few hundred events of at most 64 KiB each; Synapse sends up
/// to 100 events and 100 ephemeral events at once.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// A request parsed into ruma's type for its endpoint.
pub struct Ruma<Req>(pub Req);

impl<Req: IncomingRequest, S: Send + Sync> FromRequest<S> for Ruma<Req> {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, MatrixError> {
        let (mut parts, body) = request.into_parts();
        // axum hands the path parameters over percent-decoded, as ruma expects them.
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(params) => params.iter().map(|(_, value)| value.to_owned()).collect(),
            Err(_) => Vec::new(),
        };
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| MatrixError::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", "Body too large"))?;
        // A POST without a body (a bare `/ping`) reads as `{}`.
        let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        Req::try_from_http_request(http::Request::from_parts(parts, body), &args)
            .map(Self)
            .map_err(parse_error)
    }
}

/// The spec's errors for a request we cannot use: a body that is not JSON at all, a bad
/// identifier in the path, or JSON of the wrong shape.
fn parse_error(error: FromHttpRequestError) -> MatrixError {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(error)) if !error.is_data() => {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_NOT_JSON",
                format!("Body is not JSON: {error}"),
            )
        }
        // ruma reads path parameters with the query string's deserializer.
        FromHttpRequestError::Deserialization(
            error @ (DeserializationError::Ident(_) | DeserializationError::Query(_)),
        ) => MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", error.to_string()),
        error => MatrixError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error.to_string()),
    }
}

/// A ruma response on its way out.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(Body::from),
            Err(error) => {
                tracing::error!(%error, "cannot serialize a response");
                MatrixError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Internal error").into_response()
            }
        }
    }
}
