//! Room creation (`POST /createRoom`, and the new room of an upgrade): the create event, the
//! creator's join, power levels, alias, presets, initial state, name, topic and invites, in the
//! order the spec gives. Every event is built and authorized in memory against the state the
//! ones before it make, and only when all pass are they written, with the room, its alias and
//! its directory entry, in one transaction: a refused event or a crash leaves no room behind.

use std::collections::HashMap;

use hearth_federation::pdu::{PduEvent, room_id_from_create_event_id};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId,
    UserId,
    events::TimelineEventType,
    room_version_rules::{RoomIdFormatVersion, RoomVersionRules},
    state_res::{auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules},
};
use serde_json::{Map, Value, json, value::RawValue};

use super::error::{EventError, EventResult};
use super::{
    membership::{Change, member_content},
    pipeline::{EventDraft, build_object, check_identifier_sizes, finalize, published::announce, to_pdu},
};
use crate::{
    accounts::tokens::random_string,
    base::Base,
    storage::{EventWrites, NewEvent, Storage, StorageError},
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
    /// A local alias for the room (`room_alias_name`), made with it.
    pub alias: Option<OwnedRoomAliasId>,
    /// Listed in the public room directory (`visibility: public`).
    pub publish: bool,
}

/// Identical creations in one millisecond give one hashed (v12) room ID: the later one moves
/// its create event a millisecond on, this many times at most.
const MAX_ID_ATTEMPTS: i64 = 100;

pub async fn create_room(state: &Base, creator: &UserId, spec: RoomSpec) -> EventResult<OwnedRoomId> {
    let rules = spec.version.rules().ok_or_else(EventError::internal)?;
    let drafts = drafts(state, creator, &spec, &rules).await?;
    for attempt in 0..MAX_ID_ATTEMPTS {
        let room = build(state, creator, &spec, &rules, &drafts, attempt)?;
        if let Some(room_id) = persist(state, creator, &spec, room).await? {
            tracing::info!(%room_id, %creator, version = %spec.version, "created room");
            return Ok(room_id);
        }
    }
    Err(EventError::internal())
}

/// The events after the create event, as (sender, draft), in the spec's order.
async fn drafts(
    state: &Base,
    creator: &UserId,
    spec: &RoomSpec,
    rules: &RoomVersionRules,
) -> EventResult<Vec<(OwnedUserId, EventDraft)>> {
    let mut events = Vec::new();
    let join = member_content(state, Change::Join, creator).await?;
    events.push(EventDraft::state("m.room.member", creator.as_str(), join));
    events.push(EventDraft::state(
        "m.room.power_levels",
        "",
        power_levels(creator, spec, rules),
    ));
    if let Some(alias) = &spec.alias {
        events.push(EventDraft::state(
            "m.room.canonical_alias",
            "",
            json!({ "alias": alias }),
        ));
    }
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
    for (event_type, state_key, content) in &spec.initial_state {
        events.push(EventDraft::state(event_type, state_key, content.clone()));
    }
    if let Some(name) = &spec.name {
        events.push(EventDraft::state("m.room.name", "", json!({ "name": name })));
    }
    if let Some(topic) = &spec.topic {
        events.push(EventDraft::state("m.room.topic", "", json!({ "topic": topic })));
    }
    let mut drafts: Vec<_> = events.into_iter().map(|draft| (creator.to_owned(), draft)).collect();
    // Users of other servers are invited once the room exists (their server signs the invite).
    for invitee in spec
        .invite
        .iter()
        .filter(|user| user.server_name() == state.config.server_name)
    {
        let change = Change::Invite {
            is_direct: spec.is_direct,
        };
        let content = member_content(state, change, invitee).await?;
        drafts.push((
            creator.to_owned(),
            EventDraft::state("m.room.member", invitee.as_str(), content),
        ));
    }
    Ok(drafts)
}

fn power_levels(creator: &UserId, spec: &RoomSpec, rules: &RoomVersionRules) -> Value {
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
    power_levels
}

/// A new room's events, built, signed and authorized, not yet written.
struct NewRoom {
    room_id: OwnedRoomId,
    events: Vec<BuiltEvent>,
}

struct BuiltEvent {
    event_id: OwnedEventId,
    sender: OwnedUserId,
    draft: EventDraft,
    depth: i64,
    origin_server_ts: i64,
    json: String,
    prev_events: Vec<String>,
    history_visibility: String,
}

/// The room so far: its state and its events, for authorizing the next one.
#[derive(Default)]
struct Chain {
    state: HashMap<(String, String), OwnedEventId>,
    objects: HashMap<OwnedEventId, CanonicalJsonObject>,
    pdus: HashMap<OwnedEventId, PduEvent>,
    events: Vec<BuiltEvent>,
}

impl Chain {
    fn references(&self, ids: &[OwnedEventId]) -> Vec<(String, CanonicalJsonObject)> {
        ids.iter()
            .filter_map(|id| Some((id.to_string(), self.objects.get(id)?.clone())))
            .collect()
    }

    fn history_visibility(&self) -> String {
        self.state
            .get(&("m.room.history_visibility".to_owned(), String::new()))
            .and_then(|id| self.pdus.get(id))
            .and_then(|pdu| {
                let content: Value = serde_json::from_str(pdu.content.get()).ok()?;
                Some(content.get("history_visibility")?.as_str()?.to_owned())
            })
            .unwrap_or_else(|| "shared".to_owned())
    }

    fn push(&mut self, object: CanonicalJsonObject, built: BuiltEvent, pdu: PduEvent) {
        if let Some(state_key) = &built.draft.state_key {
            self.state.insert(
                (built.draft.event_type.clone(), state_key.clone()),
                built.event_id.clone(),
            );
        }
        self.objects.insert(built.event_id.clone(), object);
        self.pdus.insert(built.event_id.clone(), pdu);
        self.events.push(built);
    }
}

/// Builds every event of the room; `attempt` moves the create event's timestamp on.
fn build(
    state: &Base,
    creator: &UserId,
    spec: &RoomSpec,
    rules: &RoomVersionRules,
    drafts: &[(OwnedUserId, EventDraft)],
    attempt: i64,
) -> EventResult<NewRoom> {
    let mut chain = Chain::default();
    let (room_id, create_object, create) = build_create(state, creator, spec, rules, attempt)?;
    let create_pdu = to_pdu(&create.event_id, &create_object)?;
    chain.push(create_object, create, create_pdu);
    for (sender, draft) in drafts {
        let draft = draft.clone();
        check_identifier_sizes(&draft)?;
        let content = RawValue::from_string(draft.content.to_string()).map_err(|_| EventError::internal())?;
        let auth_types = auth_types_for_event(
            &TimelineEventType::from(draft.event_type.as_str()),
            sender,
            draft.state_key.as_deref(),
            &content,
            &rules.authorization,
        )
        .map_err(|reason| EventError::bad_json(format!("Invalid event content: {reason}")))?;
        let auth_ids: Vec<OwnedEventId> = auth_types
            .iter()
            .filter_map(|(kind, key)| chain.state.get(&(kind.to_string(), key.clone())).cloned())
            .collect();
        let previous = chain.events.last().ok_or_else(EventError::internal)?;
        let prev_ids = vec![previous.event_id.clone()];
        let depth = previous.depth + 1;
        let mut object = build_object(
            &draft,
            Some(&room_id),
            sender,
            depth,
            &chain.references(&prev_ids),
            &chain.references(&auth_ids),
            rules,
        )?;
        let event_id = finalize(&mut object, rules, &state.config.server_name, &state.signing_key)?;
        let pdu = to_pdu(&event_id, &object)?;
        check_state_independent_auth_rules(&rules.authorization, &pdu, |id| chain.pdus.get(id).cloned())
            .and_then(|()| {
                check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind, key| {
                    let id = chain.state.get(&(kind.to_string(), key.to_owned()))?;
                    chain.pdus.get(id).cloned()
                })
            })
            .map_err(|reason| {
                EventError::forbidden(format!("Not allowed ({} in the new room): {reason}", draft.event_type))
            })?;
        let built = BuiltEvent {
            event_id,
            sender: sender.clone(),
            depth,
            origin_server_ts: pdu.origin_server_ts.0.into(),
            json: CanonicalJsonValue::Object(object.clone()).to_string(),
            prev_events: prev_ids.iter().map(ToString::to_string).collect(),
            history_visibility: chain.history_visibility(),
            draft,
        };
        chain.push(object, built, pdu);
    }
    Ok(NewRoom {
        room_id,
        events: chain.events,
    })
}

/// The `m.room.create` event and the room ID: random before v12, the create event's hash
/// from v12.
fn build_create(
    state: &Base,
    creator: &UserId,
    spec: &RoomSpec,
    rules: &RoomVersionRules,
    attempt: i64,
) -> EventResult<(OwnedRoomId, CanonicalJsonObject, BuiltEvent)> {
    let mut content = spec.creation_content.clone();
    // The create event's `creator` field exists up to v10; from v11 the sender is the creator.
    if !rules.authorization.use_room_create_sender {
        content.insert("creator".into(), Value::from(creator.as_str()));
    }
    content.insert("room_version".into(), Value::from(spec.version.as_str()));
    let hash_room_id = rules.room_id_format == RoomIdFormatVersion::V2;
    let random_room_id = (!hash_room_id)
        .then(|| OwnedRoomId::try_from(format!("!{}:{}", random_string(18), state.config.server_name)))
        .transpose()
        .map_err(|_| EventError::internal())?;
    let draft = EventDraft::state("m.room.create", "", Value::Object(content));
    let mut object = build_object(&draft, random_room_id.as_deref(), creator, 1, &[], &[], rules)?;
    if attempt > 0
        && let Some(CanonicalJsonValue::Integer(ts)) = object.get("origin_server_ts").cloned()
    {
        let moved = ruma::Int::new(i64::from(ts).saturating_add(attempt)).ok_or_else(EventError::internal)?;
        object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(moved));
    }
    let event_id = finalize(&mut object, rules, &state.config.server_name, &state.signing_key)?;
    let room_id = match random_room_id {
        Some(room_id) => room_id,
        None => room_id_from_create_event_id(&event_id).map_err(|_| EventError::internal())?,
    };
    let pdu = to_pdu(&event_id, &object)?;
    check_state_independent_auth_rules(&rules.authorization, &pdu, |_| None::<PduEvent>)
        .map_err(|reason| EventError::bad_json(format!("Invalid m.room.create event: {reason}")))?;
    let built = BuiltEvent {
        event_id,
        sender: creator.to_owned(),
        depth: 1,
        origin_server_ts: pdu.origin_server_ts.0.into(),
        json: CanonicalJsonValue::Object(object.clone()).to_string(),
        prev_events: Vec::new(),
        history_visibility: "shared".to_owned(),
        draft,
    };
    Ok((room_id, object, built))
}

/// Writes the room in one transaction and announces it. `None` when its (hashed) ID is
/// taken by an identical creation a moment ago.
async fn persist(state: &Base, creator: &UserId, spec: &RoomSpec, room: NewRoom) -> EventResult<Option<OwnedRoomId>> {
    let NewRoom { room_id, events } = room;
    let mut tx = state.storage.begin_write().await?;
    if !Storage::insert_room(&mut tx, room_id.as_str(), spec.version.as_str(), creator.as_str()).await? {
        return Ok(None);
    }
    let mut state_group = None;
    let mut last_position = 0;
    for event in &events {
        let membership = (event.draft.event_type == "m.room.member")
            .then(|| event.draft.content.get("membership").and_then(Value::as_str))
            .flatten();
        let row = NewEvent {
            event_id: event.event_id.to_string(),
            room_id: room_id.to_string(),
            depth: event.depth,
            event_type: event.draft.event_type.clone(),
            state_key: event.draft.state_key.clone(),
            sender: event.sender.to_string(),
            origin_server_ts: event.origin_server_ts,
            json: event.json.clone(),
            prev_events: event.prev_events.clone(),
            state_before: state_group,
            membership: membership.map(str::to_owned),
            transaction: None,
            relation: None,
            history_visibility: event.history_visibility.clone(),
            redacts: None,
            writes: EventWrites::ALL,
            rejected_reason: None,
            resolved_state: None,
        };
        let persisted = Storage::persist_event(&mut tx, &row).await?;
        state_group = Some(persisted.state_group);
        last_position = persisted.position;
    }
    if let Some(alias) = &spec.alias
        && !Storage::insert_alias_in(&mut tx, alias.as_str(), room_id.as_str(), creator.as_str()).await?
    {
        return Err(EventError::AliasInUse);
    }
    if spec.publish {
        Storage::set_published_in(&mut tx, room_id.as_str(), true).await?;
    }
    tx.commit().await.map_err(StorageError::from)?;

    // The room's members and its invitees (not members yet) hear of it.
    let subjects = std::iter::once(creator.as_str()).chain(spec.invite.iter().map(|user| user.as_str()));
    announce(state, room_id.as_str(), last_position, subjects, false, |caches| {
        for event in &events {
            caches.event_persisted(
                room_id.as_str(),
                &event.draft.event_type,
                event.draft.state_key.as_deref(),
                false,
            );
        }
    });
    Ok(Some(room_id))
}
