//! Joining a room that lives on other servers: ask a resident server for a join event
//! (`make_join`), sign it, hand it back (`send_join`), check the room's state and auth chain
//! that come back, and store them with our join on top. The room then appears in `/sync`.

use std::collections::{BTreeMap, HashMap, HashSet};

use hearth_federation::{finalize_pdu, pdu::PduEvent};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId,
    api::federation::membership::{create_join_event, prepare_join_event},
    room_version_rules::RoomVersionRules,
    state_res::{check_state_dependent_auth_rules, check_state_independent_auth_rules},
};
use serde_json::{Map, Value, value::to_raw_value};

use super::{Federation, pdu::PduCheckError};
use crate::{
    rooms::{
        error::{EventError, EventResult},
        membership::{Change, SERVER_SET_MEMBER_FIELDS, member_content},
        pipeline::{EventKind, published::announce, room_version_rules},
    },
    storage::{JoinedRoom, NewEvent, PartialStateRoom},
};

/// Room versions we can join (make_join's `ver`).
pub(super) const SUPPORTED_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// An event of the joined room's state or auth chain (or of backfilled history), checked.
pub(super) struct Checked {
    pub object: CanonicalJsonObject,
    pub pdu: PduEvent,
}

impl Federation {
    /// Joins `user_id` to a room through the first of `servers` that lets them in. `None`:
    /// while this waited for another local user's join of the same room, this server became
    /// a member, so the caller joins locally.
    pub async fn join_remote(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        extra: Map<String, Value>,
    ) -> EventResult<Option<OwnedRoomId>> {
        let _joining = self.joining.lock(room_id).await;
        if !self.must_join_remotely(room_id).await? {
            return Ok(None);
        }
        let mut last = EventError::not_found("Unknown room, and no server to join it through (give server_name / via)");
        for server in self.servers_to_try(servers) {
            match self.join_through(user_id, room_id, server, &extra).await {
                Ok(()) => return Ok(Some(room_id.to_owned())),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "joining through a server failed");
                    last = error;
                }
            }
        }
        Err(last)
    }

    async fn join_through(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        server: &OwnedServerName,
        extra: &Map<String, Value>,
    ) -> EventResult<()> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        request.ver = SUPPORTED_VERSIONS.to_vec();
        let made = self.client.send(server, request).await.map_err(remote_refusal)?;
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        let (_, rules) = room_version_rules(version.as_str())?;
        let mut event: CanonicalJsonObject = serde_json::from_str(made.event.get())
            .map_err(|_| EventError::bad_json("The resident server's join event is not JSON"))?;
        let field = |event: &CanonicalJsonObject, name: &str| match event.get(name) {
            Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
            _ => None,
        };
        if field(&event, "type").as_deref() != Some("m.room.member")
            || field(&event, "room_id").as_deref() != Some(room_id.as_str())
            || field(&event, "state_key").as_deref() != Some(user_id.as_str())
            || field(&event, "sender").as_deref() != Some(user_id.as_str())
        {
            return Err(EventError::bad_json(
                "The resident server offered a join event for someone else or another room",
            ));
        }
        // Our own content: membership, profile, and the client's extra fields.
        let mut content = member_content(&self.base, Change::Join, user_id).await?;
        for (key, value) in extra {
            if !SERVER_SET_MEMBER_FIELDS.contains(&key.as_str()) {
                content[key.as_str()] = value.clone();
            }
        }
        if let Some(CanonicalJsonValue::Object(offered)) = event.get("content")
            && let Some(via) = offered.get("join_authorised_via_users_server")
        {
            content["join_authorised_via_users_server"] = serde_json::to_value(via).unwrap_or_default();
        }
        let event_id = self.sign_template(&mut event, content, &rules)?;
        let raw = to_raw_value(&event).map_err(|_| EventError::internal())?;
        let mut send_join = create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw);
        // A big room's members come later, in the background (MSC3706).
        send_join.omit_members = self.base.config.federation.partial_state_joins;
        let answer = self
            .client
            .send(server, send_join)
            .await
            .map_err(remote_refusal)?
            .room_state;
        let partial_servers = answer
            .members_omitted
            .then(|| answer.servers_in_room.clone().unwrap_or_default());
        // A restricted join comes back signed by the resident server too: the same event
        // (same ID), of which only the signatures are taken.
        if let Some(signed) = &answer.event
            && let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(signed.get())
            && super::pdu::event_id_of(&object, &rules).is_ok_and(|id| id == event_id)
            && let Some(CanonicalJsonValue::Object(theirs)) = object.get("signatures")
            && let Some(CanonicalJsonValue::Object(ours)) = event.get_mut("signatures")
        {
            for (server, signature) in theirs {
                ours.entry(server.clone()).or_insert_with(|| signature.clone());
            }
        }
        let mut checked: HashMap<OwnedEventId, Checked> = HashMap::new();
        for raw in answer.auth_chain.iter().chain(answer.state.iter()) {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                continue;
            };
            match self.check_pdu(object, &rules).await {
                Ok((id, object)) => {
                    let json = CanonicalJsonValue::Object(object.clone()).to_string();
                    let Ok(pdu) = PduEvent::from_json(id.clone(), &json, false) else {
                        continue;
                    };
                    if is_of_room(&pdu, room_id) {
                        checked.insert(id, Checked { object, pdu });
                    } else {
                        tracing::info!(%room_id, event_id = %pdu.event_id, "dropped an event of another room from a join's state");
                    }
                }
                Err(PduCheckError::Internal) => return Err(EventError::internal()),
                Err(error) => tracing::info!(%room_id, %error, "dropped an event of a join's state"),
            }
        }
        let authorised = authorise_chain(&checked, HashSet::new(), room_id, &rules);
        let mut state: BTreeMap<(String, String), OwnedEventId> = BTreeMap::new();
        for raw in &answer.state {
            let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                continue;
            };
            let Ok(id) = super::pdu::event_id_of(&object, &rules) else {
                continue;
            };
            let Some(entry) = checked.get(&id).filter(|_| authorised.contains(&id)) else {
                continue;
            };
            if let Some(key) = &entry.pdu.state_key {
                state.insert((entry.pdu.kind.to_string(), key.clone()), id);
            }
        }
        let create = state
            .get(&("m.room.create".to_owned(), String::new()))
            .and_then(|id| checked.get(id))
            .ok_or_else(|| EventError::bad_json("The join's state has no create event for the room"))?;
        if create.pdu.room_id.as_deref().is_some_and(|id| id != room_id) {
            return Err(EventError::bad_json("The join's state is another room's"));
        }
        let creator = create.pdu.sender.to_string();
        // Our join must pass the rules against the state it lands on.
        let join_pdu = crate::rooms::pipeline::to_pdu(&event_id, &event)?;
        let by_id = |id: &ruma::EventId| checked.get(id).map(|c| c.pdu.clone());
        // With the members left out, a member the join names (a restricted join's
        // authoriser) is found among the join's own auth events.
        let omitted_member = |kind: &str, key: &str| {
            (partial_servers.is_some() && kind == "m.room.member")
                .then(|| {
                    join_pdu
                        .auth_events
                        .iter()
                        .filter_map(|id| by_id(id))
                        .find(|pdu| pdu.kind.to_string() == kind && pdu.state_key.as_deref() == Some(key))
                })
                .flatten()
        };
        check_state_independent_auth_rules(&rules.authorization, &join_pdu, by_id)
            .and_then(|()| {
                check_state_dependent_auth_rules(&rules.authorization, &join_pdu, |kind, key| {
                    state
                        .get(&(kind.to_string(), key.to_owned()))
                        .and_then(|id| by_id(id))
                        .or_else(|| omitted_member(&kind.to_string(), key))
                })
            })
            .map_err(|reason| EventError::forbidden(format!("The join does not pass the room's rules: {reason}")))?;
        let history_visibility = state
            .get(&("m.room.history_visibility".to_owned(), String::new()))
            .and_then(|id| checked.get(id))
            .and_then(|c| serde_json::from_str::<Value>(c.pdu.content.get()).ok())
            .and_then(|content| content.get("history_visibility")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "shared".to_owned());
        let new_event = |pdu: &PduEvent, object: &CanonicalJsonObject, kind: EventKind| {
            stored_event(room_id, pdu, object, kind, &history_visibility)
        };
        let outliers = checked
            .iter()
            .filter(|(id, _)| authorised.contains(*id))
            .map(|(_, c)| new_event(&c.pdu, &c.object, EventKind::Outlier))
            .collect();
        let state_rows = state
            .iter()
            .map(|((kind, key), id)| {
                let membership = checked.get(id).and_then(|c| membership_of(&c.pdu));
                (kind.clone(), key.clone(), id.to_string(), membership)
            })
            .collect();
        let partial = partial_servers.map(|servers| PartialStateRoom {
            room_id: room_id.to_string(),
            join_event_id: event_id.to_string(),
            servers: serde_json::to_string(&servers).unwrap_or_else(|_| "[]".to_owned()),
            joined_via: server.to_string(),
        });
        let room_lock = self.base.room_locks.lock(room_id).await;
        if partial.is_some() {
            // From now on, other servers' events for the room wait for its full state.
            self.partial.add(room_id);
        }
        let persisted = self
            .base
            .storage
            .persist_remote_join(JoinedRoom {
                room_id: room_id.to_string(),
                version: version.to_string(),
                creator,
                outliers,
                state: state_rows,
                join: new_event(&join_pdu, &event, EventKind::New),
                partial: partial.clone(),
            })
            .await;
        let position = match persisted {
            Ok(position) => position,
            Err(error) => {
                self.partial.finish(room_id);
                return Err(error.into());
            }
        };
        announce(
            &self.base,
            room_id.as_str(),
            position,
            [user_id.as_str()],
            true,
            |caches| caches.room_state_replaced(room_id.as_str()),
        );
        drop(room_lock);
        if let Some(partial) = partial {
            tracing::info!(%room_id, %server, %user_id, "joined a room over federation, members to follow");
            if let Some(federation) = self.this.upgrade() {
                federation.complete_in_background(partial);
            }
            return Ok(());
        }
        tracing::info!(%room_id, %server, %user_id, "joined a room over federation");
        Ok(())
    }
}

/// The events of a join's state and auth chain (or a backfilled batch) that pass the auth
/// rules against their own auth events (whose own checks passed first), oldest first.
/// `trusted`: events of `checked` stored here already, which pass as they are.
pub(super) fn authorise_chain(
    checked: &HashMap<OwnedEventId, Checked>,
    trusted: HashSet<OwnedEventId>,
    room_id: &RoomId,
    rules: &RoomVersionRules,
) -> HashSet<OwnedEventId> {
    let mut order: Vec<&Checked> = checked.values().collect();
    order.sort_by_key(|c| (c.pdu.depth, c.pdu.origin_server_ts));
    let is_create = |c: &&Checked| c.pdu.kind.to_string() == "m.room.create";
    // In version 12 the room's create event, whose hash is the room ID, is an auth event of
    // every other event without being listed.
    let room_create = checked
        .values()
        .find(|c| is_create(c) && c.pdu.room_id.is_none() && is_of_room(&c.pdu, room_id));
    let mut passed = trusted;
    for entry in order {
        let pdu = &entry.pdu;
        if passed.contains(&pdu.event_id) {
            continue;
        }
        let auth_ok = pdu.auth_events.iter().all(|id| passed.contains(id));
        if !auth_ok {
            continue;
        }
        let by_id = |id: &ruma::EventId| checked.get(id).map(|c| c.pdu.clone());
        // The create event the event itself lists (before version 12), or the room's.
        let create = pdu
            .auth_events
            .iter()
            .filter_map(|id| checked.get(id))
            .find(is_create)
            .or(room_create);
        let auth_state: HashMap<(String, String), PduEvent> = pdu
            .auth_events
            .iter()
            .filter_map(|id| checked.get(id))
            .chain(create)
            .filter_map(|c| Some(((c.pdu.kind.to_string(), c.pdu.state_key.clone()?), c.pdu.clone())))
            .collect();
        let result = check_state_independent_auth_rules(&rules.authorization, pdu, by_id).and_then(|()| {
            check_state_dependent_auth_rules(&rules.authorization, pdu, |kind, key| {
                auth_state.get(&(kind.to_string(), key.to_owned())).cloned()
            })
        });
        match result {
            Ok(()) => {
                passed.insert(pdu.event_id.clone());
            }
            Err(reason) => {
                tracing::info!(event_id = %pdu.event_id, %reason, "an event of a join's state fails the auth rules")
            }
        }
    }
    passed
}

pub(super) fn membership_of(pdu: &PduEvent) -> Option<String> {
    if pdu.kind.to_string() != "m.room.member" {
        return None;
    }
    serde_json::from_str::<Value>(pdu.content.get())
        .ok()?
        .get("membership")?
        .as_str()
        .map(str::to_owned)
}

/// Whether an event is of the room: in version 12 the create event has no room ID, but the
/// room ID is its hash.
pub(super) fn is_of_room(pdu: &PduEvent, room_id: &RoomId) -> bool {
    match &pdu.room_id {
        Some(id) => id == room_id,
        None => {
            pdu.kind.to_string() == "m.room.create"
                && hearth_federation::pdu::room_id_from_create_event_id(&pdu.event_id).is_ok_and(|id| id == room_id)
        }
    }
}

/// A checked remote event as storage takes it, outside the pipeline (a join's state, backfill).
pub(super) fn stored_event(
    room_id: &RoomId,
    pdu: &PduEvent,
    object: &CanonicalJsonObject,
    kind: EventKind,
    history_visibility: &str,
) -> NewEvent {
    NewEvent {
        event_id: pdu.event_id.to_string(),
        room_id: room_id.to_string(),
        depth: pdu.depth,
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        sender: pdu.sender.to_string(),
        origin_server_ts: i64::try_from(u64::from(pdu.origin_server_ts.0)).unwrap_or(0),
        json: CanonicalJsonValue::Object(object.clone()).to_string(),
        prev_events: pdu.prev_events.iter().map(ToString::to_string).collect(),
        state_before: None,
        membership: membership_of(pdu),
        transaction: None,
        relation: None,
        history_visibility: history_visibility.to_owned(),
        redacts: None,
        writes: kind.writes(),
        rejected_reason: None,
        resolved_state: None,
    }
}

/// A remote server's refusal as our error: its 403 stays a 403, anything else is a 404 ("could
/// not join").
fn remote_refusal(error: hearth_federation::client::FederationError) -> EventError {
    match error.errcode() {
        Some("M_FORBIDDEN") => EventError::forbidden(error.to_string()),
        Some("M_INCOMPATIBLE_ROOM_VERSION") => EventError::UnsupportedVersion(error.to_string()),
        _ => EventError::not_found(format!("Could not join through that server: {error}")),
    }
}

impl Federation {
    /// Completes a membership event a resident server offered (`make_join`, `make_leave`):
    /// our content, the time, our name as origin, then our hashes and signature. Returns its
    /// event ID.
    pub(super) fn sign_template(
        &self,
        event: &mut CanonicalJsonObject,
        content: Value,
        rules: &RoomVersionRules,
    ) -> EventResult<OwnedEventId> {
        let content = CanonicalJsonValue::try_from(content).map_err(|_| EventError::bad_json("member content"))?;
        event.insert("content".to_owned(), content);
        event.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(ruma::Int::new(crate::storage::now_ms()).unwrap_or_default()),
        );
        event.insert(
            "origin".to_owned(),
            CanonicalJsonValue::String(self.server_name().to_string()),
        );
        for generated in ["event_id", "hashes", "signatures", "unsigned"] {
            event.remove(generated);
        }
        finalize_pdu(event, rules, self.server_name(), &self.base.signing_key).map_err(|_| EventError::internal())
    }

    /// Whether a join must go through another server: the room is unknown here, or no local
    /// user is in it any more (our copy of it is stale) while other servers are, or it was
    /// made elsewhere and we only hold an invite or a knock.
    pub async fn must_join_remotely(&self, room_id: &RoomId) -> EventResult<bool> {
        let storage = &self.base.storage;
        if self
            .base
            .caches
            .room_version(storage, room_id.as_str())
            .await?
            .is_none()
        {
            return Ok(true);
        }
        let servers = storage.servers_in_room(room_id.as_str()).await?;
        if servers.iter().any(|s| s == self.server_name().as_str()) {
            return Ok(false);
        }
        if !servers.is_empty() {
            return Ok(true);
        }
        // Nobody is in it: a room made elsewhere (we hold only an invite, a knock or an old
        // copy) is joined through its servers; one made here is ours to join.
        let made_here = storage
            .current_state_event(room_id.as_str(), "m.room.create", "")
            .await?
            .and_then(|row| UserId::parse(&row.sender).ok())
            .is_some_and(|creator| creator.server_name() == self.server_name());
        Ok(!made_here)
    }

    /// Servers that may let `user_id` in: those the client named, the server of whoever
    /// invited them, and (before room version 12) the server in the room ID.
    pub async fn join_candidates(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        given: &[OwnedServerName],
    ) -> EventResult<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = given.to_vec();
        if let Some(row) = self
            .base
            .storage
            .current_state_event(room_id.as_str(), "m.room.member", user_id.as_str())
            .await?
            && let Ok(inviter) = UserId::parse(&row.sender)
        {
            servers.push(inviter.server_name().to_owned());
        }
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        Ok(servers)
    }

    /// The room a remote alias names, and servers in it (`/query/directory`).
    pub async fn resolve_remote_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> EventResult<(OwnedRoomId, Vec<OwnedServerName>)> {
        let request = ruma::api::federation::query::get_room_information::v1::Request::new(alias.to_owned());
        let answer = self
            .client
            .send(alias.server_name(), request)
            .await
            .map_err(|error| match error.errcode() {
                Some("M_NOT_FOUND") => EventError::not_found("Room alias not found"),
                _ => EventError::not_found(format!("Could not look up the alias: {error}")),
            })?;
        Ok((answer.room_id, answer.servers))
    }
}
