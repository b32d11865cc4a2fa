//! Domain errors become Matrix errors here, and only here: the areas below the API say what
//! went wrong in their own terms (a rejected PDU is a per-event result for federation, not an
//! HTTP status).

use http::StatusCode;
use ruma::api::error::ErrorKind;

use crate::{error::ApiError, json::JsonRefusal, ratelimit::Limited, rooms::EventError, streams::token::InvalidToken};

impl From<EventError> for ApiError {
    fn from(error: EventError) -> Self {
        match error {
            EventError::UnknownRoom => ApiError::not_found("Unknown room"),
            EventError::UnsupportedVersion(version) => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            ),
            EventError::InvalidParam(reason) => ApiError::invalid_param(reason),
            EventError::BadContent(reason) => ApiError::bad_json(reason),
            EventError::Forbidden(reason) => ApiError::forbidden(reason),
            EventError::NotFound(reason) => ApiError::not_found(reason),
            EventError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                "Event is larger than 65536 bytes",
            ),
            EventError::GuestForbidden(reason) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorKind::GuestAccessForbidden, reason)
            }
            EventError::BadAlias(reason) => ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::BadAlias, reason),
            EventError::UnableToGrantJoin(reason) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::UnableToGrantJoin, reason)
            }
            EventError::AliasInUse => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::RoomInUse,
                "Room alias already taken",
            ),
            EventError::Exclusive(reason) => ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::Exclusive, reason),
            EventError::AliasExists => {
                ApiError::new(StatusCode::CONFLICT, ErrorKind::Unknown, "Room alias already exists")
            }
            // The spec's (and Synapse's) answer: 400 `M_UNKNOWN`.
            EventError::StillInRoom => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Leave the room before forgetting it",
            ),
            EventError::LimitExceeded(limited) => limited.into(),
            EventError::Storage(error) => error.into(),
            EventError::Internal(what) => {
                tracing::error!(what, "event pipeline invariant broken");
                ApiError::internal()
            }
        }
    }
}

impl From<Limited> for ApiError {
    fn from(limited: Limited) -> Self {
        ApiError::limit_exceeded(limited.retry_after)
    }
}

impl From<InvalidToken> for ApiError {
    fn from(InvalidToken(text): InvalidToken) -> Self {
        ApiError::invalid_param(format!("Invalid sync token {text}"))
    }
}

impl From<JsonRefusal> for ApiError {
    fn from(refusal: JsonRefusal) -> Self {
        ApiError::bad_json(refusal.to_string())
    }
}
