//! What can go wrong with one room event, as the rooms area says it. The API turns it into a
//! Matrix error (`api/errors.rs`); federation will turn it into a per-PDU result instead.

use crate::{ratelimit::Limited, storage::StorageError};

#[derive(Debug)]
pub enum EventError {
    /// The room is not known here.
    UnknownRoom,
    /// The room's version is not one this server implements.
    UnsupportedVersion(String),
    /// An identifier (type, state key) past the spec's limits.
    InvalidParam(String),
    /// Content that cannot be an event's (not an object, not canonical JSON, bad fields).
    BadContent(String),
    /// The authorization rules (or a server-side check such as redaction power) refuse it.
    Forbidden(String),
    /// Something the event names is not there (the event a redaction redacts).
    NotFound(String),
    /// The PDU is larger than 65,536 bytes.
    TooLarge,
    /// Guests may not do this (the room does not let guests in, or guests never may).
    GuestForbidden(String),
    /// A canonical alias that is malformed or does not point to the room.
    BadAlias(String),
    /// The alias asked for is taken (room creation).
    AliasInUse,
    /// The alias to create exists already (the directory API: 409).
    AliasExists,
    /// An application service's exclusive namespace claims the alias.
    Exclusive(String),
    /// Forgetting a room the user has not left.
    StillInRoom,
    /// A restricted join this server cannot vouch for (no local member may invite).
    UnableToGrantJoin(String),
    /// The user's rate limit for this action is spent.
    LimitExceeded(Limited),
    /// The database failed.
    Storage(StorageError),
    /// A state this server should never be in (logged where found).
    Internal(&'static str),
}

impl EventError {
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::Forbidden(reason.into())
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn bad_json(reason: impl Into<String>) -> Self {
        Self::BadContent(reason.into())
    }

    pub fn invalid_param(reason: impl Into<String>) -> Self {
        Self::InvalidParam(reason.into())
    }

    pub fn internal() -> Self {
        Self::Internal("unexpected state")
    }
}

impl From<Limited> for EventError {
    fn from(limited: Limited) -> Self {
        Self::LimitExceeded(limited)
    }
}

impl From<StorageError> for EventError {
    fn from(error: StorageError) -> Self {
        Self::Storage(error)
    }
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownRoom => write!(f, "Unknown room"),
            Self::UnsupportedVersion(version) => write!(f, "Room version {version} is not supported"),
            Self::InvalidParam(reason)
            | Self::BadContent(reason)
            | Self::Forbidden(reason)
            | Self::NotFound(reason)
            | Self::GuestForbidden(reason)
            | Self::BadAlias(reason)
            | Self::UnableToGrantJoin(reason)
            | Self::Exclusive(reason) => write!(f, "{reason}"),
            Self::AliasInUse => write!(f, "Room alias already taken"),
            Self::AliasExists => write!(f, "Room alias already exists"),
            Self::StillInRoom => write!(f, "Leave the room before forgetting it"),
            Self::LimitExceeded(limited) => write!(f, "Too many requests; retry after {:?}", limited.retry_after),
            Self::TooLarge => write!(f, "Event is larger than 65536 bytes"),
            Self::Storage(error) => write!(f, "storage: {error}"),
            Self::Internal(what) => write!(f, "internal: {what}"),
        }
    }
}

pub type EventResult<T> = Result<T, EventError>;
