//! The client-server calls only the bridge makes (the echo bot needs none of them):
//! creating ghosts, inviting them, naming them, and finding rooms.

use http::Method;
use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde::{Deserialize, de::IgnoredAny};

use crate::common::homeserver::{Homeserver, HomeserverError, RoomIdAnswer};

/// The `body` argument of [`Homeserver::call`] for a request without one (`GET`).
const NO_BODY: Option<&()> = None;

impl Homeserver {
    /// `POST /_matrix/client/v3/register` with `m.login.application_service`: creates a user
    /// in our namespace, no password. `inhibit_login`: we need no access token for it, the
    /// `as_token` with `?user_id=` acts as it.
    pub async fn register_user(&self, localpart: &str) -> Result<(), HomeserverError> {
        let url = self.endpoint(&["_matrix", "client", "v3", "register"], None);
        let body = serde_json::json!({
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": true,
        });
        let _: IgnoredAny = self.call(Method::POST, url, Some(&body)).await?;
        Ok(())
    }

    /// `PUT /_matrix/client/v3/profile/{userId}/displayname`, as that user.
    pub async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), HomeserverError> {
        let url = self.endpoint(
            &["_matrix", "client", "v3", "profile", user.as_str(), "displayname"],
            Some(user),
        );
        let body = serde_json::json!({ "displayname": name });
        let _: IgnoredAny = self.call(Method::PUT, url, Some(&body)).await?;
        Ok(())
    }

    /// `POST /_matrix/client/v3/rooms/{roomId}/invite`, as the bot.
    pub async fn invite(&self, room_id: &RoomId, user: &UserId) -> Result<(), HomeserverError> {
        let url = self.endpoint(&["_matrix", "client", "v3", "rooms", room_id.as_str(), "invite"], None);
        let body = serde_json::json!({ "user_id": user });
        let _: IgnoredAny = self.call(Method::POST, url, Some(&body)).await?;
        Ok(())
    }

    /// `GET /_matrix/client/v3/directory/room/{roomAlias}`: the room an alias points to.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId, HomeserverError> {
        let url = self.endpoint(&["_matrix", "client", "v3", "directory", "room", alias.as_str()], None);
        let answer: RoomIdAnswer = self.call(Method::GET, url, NO_BODY).await?;
        Ok(answer.room_id)
    }

    /// `GET /_matrix/client/v3/joined_rooms`: the rooms the bot is in, to know at start-up
    /// which rooms are bridged.
    pub async fn joined_rooms(&self) -> Result<Vec<OwnedRoomId>, HomeserverError> {
        #[derive(Deserialize)]
        struct JoinedRooms {
            joined_rooms: Vec<OwnedRoomId>,
        }
        let url = self.endpoint(&["_matrix", "client", "v3", "joined_rooms"], None);
        let answer: JoinedRooms = self.call(Method::GET, url, NO_BODY).await?;
        Ok(answer.joined_rooms)
    }
}
