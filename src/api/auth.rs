//! Who is calling: the access token (header or query), the client's address, and whether the
//! endpoint lets this caller in (guests get only what the spec allows them). Every extractor
//! ([`super::ruma::Ruma`], [`super::extract`]) authenticates through here; federation's
//! X-Matrix and appservice tokens will join it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath};
use http::{StatusCode, request::Parts};
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
};

use super::state::AppState;
use crate::{
    accounts::sessions::{Sender, authenticate_access_token},
    error::{ApiError, ApiResult},
};

/// Whether an endpoint wants an access token, derived from ruma's auth scheme for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    Required,
    Optional,
    Ignored,
    /// A server-server endpoint: the request is signed with `X-Matrix`, checked once the body
    /// is read (the signature covers it).
    Server,
    /// Only an application service may call it (its `as_token`).
    Appservice,
    /// Open to anyone; a token, if given, must be an application service's (`/register`,
    /// `/login`).
    AppserviceOptional,
}

pub trait AuthPolicy {
    const TOKEN: TokenUse;
}

impl AuthPolicy for AccessToken {
    const TOKEN: TokenUse = TokenUse::Required;
}
impl AuthPolicy for AccessTokenOptional {
    const TOKEN: TokenUse = TokenUse::Optional;
}
impl AuthPolicy for NoAuthentication {
    const TOKEN: TokenUse = TokenUse::Ignored;
}
impl AuthPolicy for NoAccessToken {
    const TOKEN: TokenUse = TokenUse::Ignored;
}
impl AuthPolicy for AppserviceToken {
    const TOKEN: TokenUse = TokenUse::Appservice;
}
impl AuthPolicy for AppserviceTokenOptional {
    const TOKEN: TokenUse = TokenUse::AppserviceOptional;
}
impl AuthPolicy for ruma::api::federation::authentication::ServerSignatures {
    const TOKEN: TokenUse = TokenUse::Server;
}

/// One query parameter by name, decoded (`None` when absent).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Finds the access token: the `Authorization: Bearer` header, or the `access_token` query
/// parameter (deprecated since Matrix 1.11, still allowed by the spec).
pub fn access_token(parts: &Parts) -> ApiResult<Option<String>> {
    if let Some(header) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = header.to_str().map_err(|_| ApiError::missing_token())?;
        return match value.strip_prefix("Bearer ") {
            Some(token) => Ok(Some(token.trim().to_owned())),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ruma::api::error::ErrorKind::MissingToken,
                "The Authorization header must use the Bearer scheme",
            )),
        };
    }
    Ok(query_param(parts.uri.query(), "access_token"))
}

pub async fn authenticate(parts: &Parts, state: &AppState, token_use: TokenUse) -> ApiResult<Option<Sender>> {
    if matches!(token_use, TokenUse::Ignored | TokenUse::Server) {
        return Ok(None);
    }
    match access_token(parts)? {
        Some(token) => {
            // An application service's token, acting as a user of its namespace (`user_id`) on
            // one of that user's devices (`device_id`, MSC4326; `org.matrix.msc3202.device_id`
            // is its unstable name).
            // `/register` and `/login` act for a user who may not exist yet: the appservice
            // itself calls them (frameworks still add `user_id`; Synapse ignores it there).
            let query = parts.uri.query().filter(|_| token_use != TokenUse::AppserviceOptional);
            let device_id =
                query_param(query, "device_id").or_else(|| query_param(query, "org.matrix.msc3202.device_id"));
            let user_id = query_param(query, "user_id");
            let appservice =
                crate::appservices::auth::authenticate(state, &token, user_id.as_deref(), device_id.as_deref()).await?;
            match (appservice, token_use) {
                (Some(sender), _) => return Ok(Some(sender)),
                // Another token on `/register` or `/login` means nothing (as Synapse): only the
                // appservice login type needs one, and says so.
                (None, TokenUse::AppserviceOptional) => return Ok(None),
                (None, _) => {}
            }
            let sender = authenticate_access_token(&state.storage, &token, client_ip(parts, state)).await?;
            if token_use == TokenUse::Appservice {
                // A valid token, but a user's: the spec's 403 for endpoints only appservices use.
                return Err(ApiError::forbidden("Only an application service can do this"));
            }
            // Endpoints open to everyone are open to guests too; of the others, guests get
            // only those the spec (and Synapse) allow them.
            if sender.is_guest && token_use == TokenUse::Required {
                let template = parts.extensions.get::<MatchedPath>().map_or("", MatchedPath::as_str);
                if !super::guests::may_call(&parts.method, template) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        ruma::api::error::ErrorKind::GuestAccessForbidden,
                        "Guest accounts cannot do this",
                    ));
                }
            }
            Ok(Some(sender))
        }
        None if matches!(token_use, TokenUse::Required | TokenUse::Appservice) => Err(ApiError::missing_token()),
        None => Ok(None),
    }
}

pub fn client_ip(parts: &Parts, state: &AppState) -> IpAddr {
    let forwarded = state
        .config
        .x_forwarded_for
        .then(|| {
            parts
                .headers
                .get("x-forwarded-for")?
                .to_str()
                .ok()?
                // The last entry is the one our proxy appended; earlier ones are whatever the
                // client sent, and would let it choose its rate-limit key.
                .rsplit(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .flatten();
    forwarded.unwrap_or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |info| info.0.ip())
    })
}

/// The federation service, or 404 `M_UNRECOGNIZED` when federation is off (as if the
/// endpoint did not exist).
pub fn federation(state: &AppState) -> ApiResult<&std::sync::Arc<crate::federation::Federation>> {
    state
        .federation
        .as_ref()
        .ok_or_else(|| ApiError::unrecognized(StatusCode::NOT_FOUND, "Federation is disabled on this server"))
}

/// The origin of a signed federation request (`X-Matrix`), checked against its key.
pub async fn verify_origin(state: &AppState, parts: &Parts, body: &[u8]) -> ApiResult<ruma::OwnedServerName> {
    use crate::federation::request::RequestAuthError;
    let federation = federation(state)?;
    federation.verify_request(parts, body).await.map_err(|error| {
        tracing::debug!(%error, "federation request refused");
        match error {
            RequestAuthError::Blocked(_) => ApiError::forbidden(error.to_string()),
            RequestAuthError::Limited(limited) => ApiError::limit_exceeded(limited.retry_after),
            RequestAuthError::Internal => ApiError::internal(),
            _ => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ruma::api::error::ErrorKind::Unauthorized,
                error.to_string(),
            ),
        }
    })
}
