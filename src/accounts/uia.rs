//! User-interactive authentication (spec: "User-interactive authentication API").
//!
//! An endpoint that needs it calls [`authorize`] with its flows. Until the client has completed
//! every stage of one flow, the answer is a 401 carrying the flows, the stages done so far and
//! the session ID; the client resubmits the same request with an `auth` dict per stage. The
//! session lives in the database, so any worker can continue it.

use std::net::IpAddr;

use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use serde_json::{Map, Value};

use super::{password::verify_password, tokens::random_string};
use crate::{
    base::Base,
    error::{ApiError, ApiResult},
    storage::{Storage, Tx, UiaSession, now_ms},
};

/// A UIA session whose flow is complete. The operation it authorises must consume it
/// ([`Storage::consume_uia_session`]) in its own transaction, so that it authorises one
/// operation only, even when requests race.
#[derive(Debug)]
pub struct CompletedUia {
    pub session_id: String,
    /// The operation's parameters: those remembered from earlier requests of the session,
    /// overlaid with this request's.
    pub params: Map<String, Value>,
    /// Set when the session already authorised its operation, which produced this (a retried
    /// registration: the user ID it made). The caller answers as it did the first time.
    pub result: Option<String>,
}

/// How long after a session authorised its operation a retry of it is answered alike.
const RETRY_WINDOW_MS: i64 = 10 * 60 * 1000;

/// What the caller is authenticating for.
pub struct UiaRequest<'a> {
    /// Names the operation and what it acts on (`delete_devices:ABC,DEF`): a session started
    /// for one operation cannot authorise another.
    pub purpose: String,
    pub flows: Vec<AuthFlow>,
    /// The account the stages must prove (None during registration).
    pub user_id: Option<&'a UserId>,
    /// Where the request comes from: guessing stages is rate-limited per user, or per IP.
    pub client_ip: IpAddr,
}

pub async fn authorize(state: &Base, request: &UiaRequest<'_>, auth: Option<&AuthData>) -> ApiResult<CompletedUia> {
    authorize_with_params(state, request, auth, Map::new()).await
}

/// [`authorize`] for an operation whose parameters the session remembers: `params` (this
/// request's, fields it omits left out) are merged over those of earlier requests and stored.
pub async fn authorize_with_params(
    state: &Base,
    request: &UiaRequest<'_>,
    auth: Option<&AuthData>,
    params: Map<String, Value>,
) -> ApiResult<CompletedUia> {
    let storage = &state.storage;
    let unknown = || ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown UIA session ID");
    let session = match auth.and_then(AuthData::session) {
        Some(id) => {
            let session = storage.uia_session(id).await?.ok_or_else(unknown)?;
            if session.purpose != request.purpose || session.user_id.as_deref() != request.user_id.map(UserId::as_str) {
                return Err(ApiError::forbidden(
                    "The requested operation changed during user-interactive authentication",
                ));
            }
            session
        }
        None => new_session(storage, request).await?,
    };
    let mut merged: Map<String, Value> = session
        .params
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    if let Some(consumed_ts) = session.consumed_ts {
        // Used already: a retry, soon after, of an operation that reported what it made gets
        // that again (a registration whose response was lost); anything else is over. The
        // window keeps a leaked session ID from being a lasting way in.
        let recent = now_ms() - consumed_ts <= RETRY_WINDOW_MS;
        return match session.result {
            Some(result) if recent => Ok(CompletedUia {
                session_id: session.session_id,
                params: merged,
                result: Some(result),
            }),
            _ => Err(unknown()),
        };
    }
    if !params.is_empty() {
        let before = merged.clone();
        merged.extend(params);
        if merged != before {
            storage
                .set_uia_params(&session.session_id, &Value::Object(merged.clone()).to_string())
                .await?;
        }
    }
    let mut completed: Vec<AuthType> = serde_json::from_str::<Vec<String>>(&session.completed)
        .unwrap_or_default()
        .iter()
        .map(|stage| AuthType::from(stage.as_str()))
        .collect();
    let Some(auth) = auth else {
        return Err(progress(request, &session, &completed, None));
    };

    if let Some(stage) = auth.auth_type() {
        if !request.flows.iter().any(|flow| flow.stages.contains(&stage)) {
            let error = stage_error(ErrorKind::Unrecognized, "This authentication stage is not offered here");
            return Err(progress(request, &session, &completed, Some(error)));
        }
        if matches!(stage, AuthType::Password | AuthType::RegistrationToken) {
            // Each guess at a password or token counts against the login limit.
            let key = request
                .user_id
                .map_or_else(|| request.client_ip.to_string(), |user| user.to_string());
            state.rate_limits.login.check(&format!("uia:{key}"))?;
        }
        if let Err(error) = check_stage(storage, request, &session, auth).await? {
            return Err(progress(request, &session, &completed, Some(error)));
        }
        if !completed.contains(&stage) {
            completed.push(stage);
            let names: Vec<&str> = completed.iter().map(AuthType::as_str).collect();
            storage
                .set_uia_completed(&session.session_id, &serde_json::to_string(&names).unwrap_or_default())
                .await?;
        }
    }

    if request
        .flows
        .iter()
        .any(|flow| flow.stages.iter().all(|stage| completed.contains(stage)))
    {
        Ok(CompletedUia {
            session_id: session.session_id,
            params: merged,
            result: None,
        })
    } else {
        Err(progress(request, &session, &completed, None))
    }
}

async fn new_session(storage: &Storage, request: &UiaRequest<'_>) -> ApiResult<UiaSession> {
    let session_id = random_string(24);
    let user_id = request.user_id.map(UserId::as_str);
    storage
        .create_uia_session(&session_id, &request.purpose, user_id)
        .await?;
    storage.uia_session(&session_id).await?.ok_or_else(ApiError::internal)
}

/// Checks one submitted stage. The outer error is a server failure; the inner one is the
/// client's stage failing, reported inside the 401.
async fn check_stage(
    storage: &Storage,
    request: &UiaRequest<'_>,
    session: &UiaSession,
    auth: &AuthData,
) -> ApiResult<Result<(), StandardErrorBody>> {
    Ok(match auth {
        AuthData::Dummy(_) => Ok(()),
        AuthData::Password(password) => {
            let Some(user_id) = request.user_id else {
                return Ok(Err(stage_error(
                    ErrorKind::Forbidden,
                    "No account to check a password for",
                )));
            };
            let named = match &password.identifier {
                UserIdentifier::Matrix(id) => match UserId::parse(id.user.as_str()) {
                    Ok(full) => Some(full.to_string()),
                    Err(_) => UserId::parse(format!("@{}:{}", id.user.to_lowercase(), user_id.server_name()))
                        .ok()
                        .map(|id| id.to_string()),
                },
                _ => None,
            };
            let Some(named) = named else {
                return Ok(Err(stage_error(ErrorKind::Forbidden, "Invalid password")));
            };
            if named != user_id.as_str() {
                // Credentials of someone else never authorise this user's operation (as
                // Synapse, a hard 403). Their password is not even checked: the answer must not
                // tell whether it was right.
                return Err(ApiError::forbidden(
                    "The authenticated user is not the one making the request",
                ));
            }
            let hash = storage.user(&named).await?.and_then(|user| user.password_hash);
            if !verify_password(hash, &password.password).await {
                return Ok(Err(stage_error(ErrorKind::Forbidden, "Invalid password")));
            }
            Ok(())
        }
        AuthData::RegistrationToken(token) => match session.registration_token.as_deref() {
            Some(held) if held == token.token => Ok(()),
            Some(_) => Err(stage_error(
                ErrorKind::Unauthorized,
                "This session already used another registration token",
            )),
            None if storage
                .reserve_registration_token(&token.token, &session.session_id)
                .await? =>
            {
                Ok(())
            }
            None => Err(stage_error(ErrorKind::Unauthorized, "Invalid registration token")),
        },
        _ => Err(stage_error(ErrorKind::Unrecognized, "Unsupported authentication stage")),
    })
}

fn stage_error(kind: ErrorKind, message: &str) -> StandardErrorBody {
    StandardErrorBody::new(kind, message.to_owned())
}

fn progress(
    request: &UiaRequest<'_>,
    session: &UiaSession,
    completed: &[AuthType],
    error: Option<StandardErrorBody>,
) -> ApiError {
    let mut info = UiaaInfo::new(request.flows.clone());
    info.completed = completed.to_vec();
    info.session = Some(session.session_id.clone());
    // Always present (the spec requires it), empty when no stage takes parameters.
    info.params = serde_json::value::to_raw_value(&serde_json::json!({})).ok();
    info.auth_error = error.map(Box::new);
    ApiError::Uiaa(Box::new(info))
}

/// Consumes a completed UIA session in the operation's transaction; refuses if another request
/// already used it. Returns the registration token the session reserved, if any.
pub async fn consume_uia(tx: &mut Tx, session_id: &str) -> ApiResult<Option<String>> {
    consume_uia_with_result(tx, session_id, None).await
}

/// [`consume_uia`], recording what the operation produced for a retry of the same session.
pub(crate) async fn consume_uia_with_result(
    tx: &mut Tx,
    session_id: &str,
    result: Option<&str>,
) -> ApiResult<Option<String>> {
    Storage::consume_uia_session(tx, session_id, result)
        .await?
        .ok_or_else(|| ApiError::forbidden("This authentication session has already been used"))
}
