//! What a room says of itself to those outside it: its summary (name, topic, alias, avatar,
//! join rule, members, type), as the public directory and space hierarchies show it, its
//! space children, and whether a user or another server may see it ("peek") at all.

use ruma::{ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::{base::Base, json::content_field, storage::StorageError};

/// Who asks about a room.
#[derive(Clone, Copy)]
pub enum Asker<'a> {
    User(&'a UserId),
    /// Another server, for its users.
    Server(&'a ServerName),
}

/// The room's summary (the spec's `room_summary`, with `room_type`, `room_version` and
/// `encryption`); `None` when this server holds no state of it.
pub async fn room_summary(state: &Base, room_id: &str) -> Result<Option<Map<String, Value>>, StorageError> {
    let storage = &state.storage;
    let Some(create) = storage.current_state_event(room_id, "m.room.create", "").await? else {
        return Ok(None);
    };
    let field = |event_type: &'static str, key: &'static str| async move {
        let row = storage.current_state_event(room_id, event_type, "").await?;
        Ok::<_, StorageError>(row.and_then(|row| content_field(&row.json, key)))
    };
    let join_rule = field("m.room.join_rules", "join_rule")
        .await?
        .unwrap_or_else(|| "invite".into());
    let history = field("m.room.history_visibility", "history_visibility").await?;
    let guest = field("m.room.guest_access", "guest_access").await?;
    let create: Value = serde_json::from_str(&create.json).unwrap_or_default();
    let members = storage.joined_member_count(room_id).await?;
    let mut summary = json!({
        "room_id": room_id,
        "num_joined_members": members,
        "world_readable": history.as_deref() == Some("world_readable"),
        "guest_can_join": guest.as_deref() == Some("can_join"),
        "join_rule": join_rule,
        "room_version": create["content"]["room_version"].as_str().unwrap_or("1"),
    });
    for (key, value) in [
        ("name", field("m.room.name", "name").await?),
        ("topic", field("m.room.topic", "topic").await?),
        ("canonical_alias", field("m.room.canonical_alias", "alias").await?),
        ("avatar_url", field("m.room.avatar", "url").await?),
        ("encryption", field("m.room.encryption", "algorithm").await?),
        ("room_type", create["content"]["type"].as_str().map(str::to_owned)),
    ] {
        if let Some(value) = value {
            summary[key] = Value::from(value);
        }
    }
    if join_rule.contains("restricted") {
        summary["allowed_room_ids"] = Value::from(allowed_rooms(state, room_id).await?);
    }
    Ok(summary.as_object().cloned())
}

/// The rooms a restricted room's join rule lets members of in.
async fn allowed_rooms(state: &Base, room_id: &str) -> Result<Vec<String>, StorageError> {
    let Some(row) = state
        .storage
        .current_state_event(room_id, "m.room.join_rules", "")
        .await?
    else {
        return Ok(Vec::new());
    };
    let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
    Ok(pdu["content"]["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|allow| allow["type"] == "m.room_membership")
        .filter_map(|allow| allow["room_id"].as_str().map(str::to_owned))
        .collect())
}

/// The room's `m.space.child` events that name a child (a non-empty `via`), as stripped
/// state with `origin_server_ts`, in the spec's order (`order`, then room ID).
pub async fn space_children(state: &Base, room_id: &str) -> Result<Vec<Value>, StorageError> {
    let mut children: Vec<Value> = Vec::new();
    for row in state.storage.current_state_of_type(room_id, "m.space.child").await? {
        let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
        let content = &pdu["content"];
        let has_via = content["via"]
            .as_array()
            .is_some_and(|via| via.iter().any(Value::is_string));
        if !has_via || ruma::RoomId::parse(row.state_key.as_deref().unwrap_or_default()).is_err() {
            continue;
        }
        children.push(json!({
            "type": "m.space.child",
            "state_key": row.state_key,
            "content": content,
            "sender": row.sender,
            "origin_server_ts": row.origin_server_ts,
        }));
    }
    // `order`: printable ASCII up to 50 characters; children without one come after.
    let order = |child: &Value| {
        child["content"]["order"]
            .as_str()
            .filter(|order| order.len() <= 50 && order.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .map(str::to_owned)
    };
    children.sort_by(|a, b| {
        let (oa, ob) = (order(a), order(b));
        match (oa, ob) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a["state_key"].as_str().cmp(&b["state_key"].as_str()))
    });
    Ok(children)
}

/// Whether the asker may see the room's summary: it is public, knockable or world-readable,
/// the user is in it (or invited), or (restricted rooms) the user, or a user of the asking
/// server, is in one of the rooms it lets in.
pub async fn can_peek(state: &Base, room_id: &str, asker: Asker<'_>) -> Result<bool, StorageError> {
    let storage = &state.storage;
    let field = |event_type: &'static str, key: &'static str| async move {
        let row = storage.current_state_event(room_id, event_type, "").await?;
        Ok::<_, StorageError>(row.and_then(|row| content_field(&row.json, key)))
    };
    let join_rule = field("m.room.join_rules", "join_rule").await?.unwrap_or_default();
    if matches!(join_rule.as_str(), "public" | "knock" | "knock_restricted")
        || field("m.room.history_visibility", "history_visibility")
            .await?
            .as_deref()
            == Some("world_readable")
    {
        return Ok(true);
    }
    let is_in = |room: String| async move {
        Ok::<_, StorageError>(match asker {
            Asker::User(user) => matches!(
                storage.membership(&room, user.as_str()).await?.as_deref(),
                Some("join" | "invite")
            ),
            Asker::Server(server) => storage
                .servers_in_room(&room)
                .await?
                .iter()
                .any(|s| s == server.as_str()),
        })
    };
    if is_in(room_id.to_owned()).await? {
        return Ok(true);
    }
    if join_rule.contains("restricted") {
        for allowed in allowed_rooms(state, room_id).await? {
            if is_in(allowed).await? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
