//! What the list filters look at (DMs, tags, encryption, room types, spaces), loaded once
//! per request.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use serde_json::Value;

use super::request::ListFilters;
use crate::{error::ApiResult, services::Services, storage::RoomActivity, sync::v3::ignored_users};

pub(super) struct RoomFacts {
    /// Users the user ignores (`m.ignored_user_list`).
    pub(super) ignored: Arc<HashSet<String>>,
    pub(super) direct: HashSet<String>,
    pub(super) tags: HashMap<String, HashSet<String>>,
    pub(super) encrypted: HashSet<String>,
    pub(super) room_types: HashMap<String, Option<String>>,
    pub(super) space_children: HashMap<String, HashSet<String>>,
}

impl RoomFacts {
    pub(super) async fn load(state: &Services, user_id: &str, activity: &[RoomActivity]) -> ApiResult<Self> {
        let storage = &state.storage;
        let direct: HashSet<String> = storage
            .account_data(user_id, "", "m.direct")
            .await?
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .and_then(|content| {
                content.as_object().map(|users| {
                    users
                        .values()
                        .filter_map(Value::as_array)
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
            })
            .unwrap_or_default();
        let mut tags = HashMap::new();
        for entry in storage.account_data_since(user_id, 0).await? {
            if entry.data_type == "m.tag" && !entry.room_id.is_empty() {
                let content: Value = serde_json::from_str(&entry.content).unwrap_or_default();
                let names = content["tags"]
                    .as_object()
                    .map(|t| t.keys().cloned().collect())
                    .unwrap_or_default();
                tags.insert(entry.room_id, names);
            }
        }
        let mut encrypted = HashSet::new();
        let mut room_types = HashMap::new();
        let mut space_children: HashMap<String, HashSet<String>> = HashMap::new();
        let wanted = [
            ("m.room.encryption".to_owned(), String::new()),
            ("m.room.create".to_owned(), String::new()),
        ];
        for room in activity.iter().filter(|r| r.membership == "join") {
            let entries = storage.current_state_entries(&room.room_id, &wanted).await?;
            if entries.contains_key(&wanted[0]) {
                encrypted.insert(room.room_id.clone());
            }
            if let Some(create) = entries.get(&wanted[1])
                && let Some(row) = storage.event(create).await?
            {
                let kind = serde_json::from_str::<Value>(&row.json)
                    .ok()
                    .and_then(|pdu| pdu["content"]["type"].as_str().map(str::to_owned));
                if kind.as_deref() == Some("m.space") {
                    let children = space_children_of(state, &room.room_id).await?;
                    space_children.insert(room.room_id.clone(), children);
                }
                room_types.insert(room.room_id.clone(), kind);
            }
        }
        Ok(Self {
            ignored: ignored_users(state, user_id).await?,
            direct,
            tags,
            encrypted,
            room_types,
            space_children,
        })
    }

    pub(super) fn passes(&self, room: &RoomActivity, filters: &ListFilters) -> bool {
        let id = room.room_id.as_str();
        let invited = room.membership == "invite";
        if let Some(wanted) = filters.is_invited.or(filters.is_invite)
            && wanted != invited
        {
            return false;
        }
        if let Some(wanted) = filters.is_dm
            && wanted != self.direct.contains(id)
        {
            return false;
        }
        if let Some(wanted) = filters.is_encrypted
            && wanted != self.encrypted.contains(id)
        {
            return false;
        }
        let kind = self.room_types.get(id).cloned().flatten();
        if let Some(types) = &filters.room_types
            && !types.contains(&kind)
        {
            return false;
        }
        if let Some(types) = &filters.not_room_types
            && types.contains(&kind)
        {
            return false;
        }
        let tags = self.tags.get(id);
        let has_tag = |names: &Vec<String>| tags.is_some_and(|t| names.iter().any(|n| t.contains(n)));
        if filters.not_tags.as_ref().is_some_and(has_tag) {
            return false;
        }
        if let Some(names) = &filters.tags
            && !has_tag(names)
        {
            return false;
        }
        if let Some(spaces) = &filters.spaces
            && !spaces
                .iter()
                .any(|space| self.space_children.get(space).is_some_and(|c| c.contains(id)))
        {
            return false;
        }
        true
    }
}

/// Rooms a space lists as children (`m.space.child` with a `via`).
async fn space_children_of(state: &Services, space: &str) -> ApiResult<HashSet<String>> {
    let current = state.storage.current_state(space).await?;
    let ids: Vec<String> = current
        .iter()
        .filter(|((kind, _), _)| kind == "m.space.child")
        .map(|(_, id)| id.clone())
        .collect();
    Ok(state
        .storage
        .events(&ids)
        .await?
        .into_iter()
        .filter(|row| {
            serde_json::from_str::<Value>(&row.json)
                .is_ok_and(|pdu| pdu["content"]["via"].as_array().is_some_and(|via| !via.is_empty()))
        })
        .filter_map(|row| row.state_key)
        .collect())
}
