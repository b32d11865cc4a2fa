//! Room creation (`POST /createRoom`): the create event, the creator's join, power levels,
//! presets, initial state, name, topic and invites, in the order the spec gives.

use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::{
    membership::{Change, change_membership},
    pipeline::{EventDraft, append_event, create_room_event},
};
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// The presets of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// Everything `createRoom` may ask for, already parsed.
pub struct RoomSpec {
    pub version: RoomVersionId,
    pub preset: Preset,
    /// Extra fields for the create event's content.
    pub creation_content: Map<String, Value>,
    /// Fields merged over the default power levels.
    pub power_level_override: Map<String, Value>,
    /// (type, state key, content) for `initial_state`.
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
}

pub async fn create_room(state: &AppState, creator: &UserId, spec: RoomSpec) -> ApiResult<OwnedRoomId> {
    let rules = spec.version.rules().ok_or_else(ApiError::internal)?;
    let mut create_content = spec.creation_content.clone();
    // The create event's `creator` field exists up to v10; from v11 the sender is the creator.
    if !rules.authorization.use_room_create_sender {
        create_content.insert("creator".into(), Value::from(creator.as_str()));
    }
    create_content.insert("room_version".into(), Value::from(spec.version.as_str()));
    let (room_id, _) = create_room_event(state, &spec.version, creator, Value::Object(create_content)).await?;

    change_membership(state, &room_id, creator, creator, Change::Join, None).await?;

    // In v12 creators hold infinite power and must not be listed in `users`.
    let creators_in_users = !rules.authorization.explicitly_privilege_room_creators;
    let mut users = Map::new();
    if creators_in_users {
        users.insert(creator.to_string(), json!(100));
    }
    if spec.preset == Preset::TrustedPrivateChat {
        for invitee in &spec.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut power_levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if spec.preset == Preset::PublicChat { 50 } else { 0 },
    });
    for (key, value) in &spec.power_level_override {
        power_levels[key] = value.clone();
    }
    let mut events = vec![EventDraft::state("m.room.power_levels", "", power_levels)];
    let join_rule = if spec.preset == Preset::PublicChat {
        "public"
    } else {
        "invite"
    };
    events.push(EventDraft::state(
        "m.room.join_rules",
        "",
        json!({ "join_rule": join_rule }),
    ));
    events.push(EventDraft::state(
        "m.room.history_visibility",
        "",
        json!({ "history_visibility": "shared" }),
    ));
    if spec.preset != Preset::PublicChat {
        events.push(EventDraft::state(
            "m.room.guest_access",
            "",
            json!({ "guest_access": "can_join" }),
        ));
    }
    for (event_type, state_key, content) in spec.initial_state {
        events.push(EventDraft::state(&event_type, &state_key, content));
    }
    if let Some(name) = spec.name {
        events.push(EventDraft::state("m.room.name", "", json!({ "name": name })));
    }
    if let Some(topic) = spec.topic {
        events.push(EventDraft::state("m.room.topic", "", json!({ "topic": topic })));
    }
    for draft in events {
        append_event(state, &room_id, creator, draft, None).await?;
    }
    for invitee in &spec.invite {
        let change = Change::Invite {
            is_direct: spec.is_direct,
        };
        change_membership(state, &room_id, creator, invitee, change, None).await?;
    }
    tracing::info!(%room_id, %creator, version = %spec.version, "created room");
    Ok(room_id)
}
