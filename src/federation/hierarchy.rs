//! Space hierarchies across servers: asking another server about a space this server is not
//! in (`/hierarchy/{roomId}`), and answering such questions about ours.

use ruma::{OwnedServerName, RoomId, ServerName, api::federation::space::get_hierarchy};
use serde_json::{Map, Value, json};

use super::Federation;
use crate::{
    error::{ApiError, ApiResult},
    rooms::summary::{Asker, can_peek, room_summary, space_children},
};

/// Another server's answer about a space: the room (with `children_state`), the summaries of
/// the children it could give, and the children nobody may see.
pub struct RemoteSpace {
    pub room: Map<String, Value>,
    pub children: Vec<Map<String, Value>>,
    pub inaccessible: Vec<String>,
}

fn object(value: impl serde::Serialize) -> Option<Map<String, Value>> {
    match serde_json::to_value(value).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

impl Federation {
    /// Asks the servers, in order, about a space; `None` if none could tell.
    pub async fn remote_hierarchy(
        &self,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        suggested_only: bool,
    ) -> Option<RemoteSpace> {
        for server in self.servers_to_try(servers).into_iter().take(5) {
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            match self.client.send(server, request).await {
                Ok(response) => {
                    let room = object(&response.room)?;
                    if room.get("room_id").and_then(Value::as_str) != Some(room_id.as_str()) {
                        tracing::info!(%server, %room_id, "a hierarchy answer for another room");
                        continue;
                    }
                    return Some(RemoteSpace {
                        room,
                        children: response.children.iter().filter_map(object).collect(),
                        inaccessible: response.inaccessible_children.iter().map(ToString::to_string).collect(),
                    });
                }
                Err(error) => tracing::info!(%server, %room_id, %error, "could not read a space from a server"),
            }
        }
        None
    }

    /// Our answer about a space to `origin`: the room and the children this server can tell
    /// of that `origin` may see.
    pub async fn local_hierarchy(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> ApiResult<Value> {
        let base = &self.base;
        let Some(mut room) = room_summary(base, room_id.as_str()).await? else {
            return Err(ApiError::not_found("This server does not know the room"));
        };
        if !can_peek(base, room_id.as_str(), Asker::Server(origin)).await? {
            // The spec: 404 when the asking server may not peek either.
            return Err(ApiError::not_found("The room is not visible to your server"));
        }
        let children_state: Vec<Value> = space_children(base, room_id.as_str())
            .await?
            .into_iter()
            .filter(|child| !suggested_only || child["content"]["suggested"] == true)
            .collect();
        let (mut children, mut inaccessible) = (Vec::new(), Vec::new());
        for child in &children_state {
            let Some(child_id) = child["state_key"].as_str() else {
                continue;
            };
            let Some(summary) = room_summary(base, child_id).await? else {
                continue;
            };
            if can_peek(base, child_id, Asker::Server(origin)).await? {
                children.push(Value::Object(summary));
            } else {
                inaccessible.push(Value::from(child_id));
            }
        }
        room.insert("children_state".to_owned(), Value::Array(children_state));
        Ok(json!({ "room": room, "children": children, "inaccessible_children": inaccessible }))
    }
}
