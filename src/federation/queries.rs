//! Questions this server asks others for its clients: a remote user's profile
//! (`/query/profile`) and another server's public room directory (`/publicRooms`). Aliases
//! are in [`super::join`] (joins use them first).

use ruma::{
    UserId,
    api::federation::{directory::get_public_rooms_filtered, query::get_profile_information},
    directory::{Filter, PublicRoomsChunk, RoomNetwork},
    profile::ProfileFieldName,
};
use serde_json::{Map, Value};

use super::Federation;
use crate::error::{ApiError, ApiResult};

/// Another server's directory, one page: the rooms, the next and previous page tokens, and
/// its estimate of the total.
pub struct DirectoryPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: Option<ruma::UInt>,
}

/// A failure to ask another server, as a client sees it: its own Matrix error when it gave
/// one (a 404 stays a 404), else 502.
fn remote_error(error: &hearth_federation::client::FederationError, what: &str) -> ApiError {
    match error.errcode() {
        Some("M_NOT_FOUND") => ApiError::not_found(format!("{what}: not found")),
        Some("M_FORBIDDEN") => ApiError::forbidden(format!("{what}: refused by the other server")),
        _ => ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            ruma::api::error::ErrorKind::Unknown,
            format!("{what}: the other server did not answer ({error})"),
        ),
    }
}

impl Federation {
    /// A remote user's profile (or one field of it), from their server.
    pub async fn remote_profile(&self, user_id: &UserId, field: Option<&str>) -> ApiResult<Map<String, Value>> {
        if self.is_blocked(user_id.server_name()) {
            return Err(ApiError::forbidden(
                "This server does not federate with that user's server",
            ));
        }
        let mut request = get_profile_information::v1::Request::new(user_id.to_owned());
        request.field = field.map(ProfileFieldName::from);
        let response = self
            .client
            .send(user_id.server_name(), request)
            .await
            .map_err(|error| remote_error(&error, "The user's profile"))?;
        Ok(response.data.into_iter().collect())
    }

    /// One page of another server's public room directory, searched when `search` is given.
    pub async fn remote_public_rooms(
        &self,
        server: &ruma::ServerName,
        limit: Option<ruma::UInt>,
        since: Option<String>,
        filter: Option<Filter>,
        room_network: RoomNetwork,
    ) -> ApiResult<DirectoryPage> {
        if self.is_blocked(server) || server == self.server_name() {
            return Err(ApiError::forbidden("This server does not federate with that server"));
        }
        // The searched form with an empty filter is the whole list: one request type serves both.
        let mut request = get_public_rooms_filtered::v1::Request::new();
        request.limit = limit;
        request.since = since;
        request.filter = filter.unwrap_or_default();
        request.room_network = room_network;
        let response = self
            .client
            .send(server, request)
            .await
            .map_err(|error| remote_error(&error, "The other server's room directory"))?;
        Ok(DirectoryPage {
            chunk: response.chunk,
            next_batch: response.next_batch,
            prev_batch: response.prev_batch,
            total: response.total_room_count_estimate,
        })
    }
}
