//! Room versions: which this server supports, and their rules (from ruma).

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

use super::error::{EventError, EventResult};

pub fn room_version_rules(version: &str) -> EventResult<(RoomVersionId, RoomVersionRules)> {
    let id = RoomVersionId::try_from(version).map_err(|_| unsupported_version(version))?;
    let rules = id.rules().ok_or_else(|| unsupported_version(version))?;
    Ok((id, rules))
}

pub fn unsupported_version(version: &str) -> EventError {
    EventError::UnsupportedVersion(version.to_owned())
}
