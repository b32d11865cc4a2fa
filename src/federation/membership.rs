//! The resident side of joins: `make_join` hands a remote server a join event to sign,
//! `send_join` takes the signed event into the room and answers with the room's state and its
//! auth chain.

use std::collections::{HashSet, VecDeque};

use hearth_federation::pdu::PduEvent;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId,
    room_version_rules::RoomVersionRules,
};
use serde_json::{json, value::RawValue};

use super::Federation;
use crate::rooms::{
    error::{EventError, EventResult},
    membership::{restricted_join_authoriser, room_description_events},
    pipeline::{
        EventDraft, authorise,
        build::build_object,
        context::{auth_types, local_context},
        parse_object,
        remote::{RemoteOutcome, append_remote_event},
        room_version_rules,
    },
};

/// The room's state for a joining server.
pub struct JoinedState {
    /// The join as stored, when this server signed it as a restricted join's authoriser.
    pub event: Option<Box<RawValue>>,
    pub state: Vec<Box<RawValue>>,
    pub auth_chain: Vec<Box<RawValue>>,
    pub servers_in_room: Vec<String>,
    /// The members were left out of `state` (the joining server asked, MSC3706).
    pub members_omitted: bool,
}

impl Federation {
    /// The room version and rules of a room we are in; `UnknownRoom` otherwise.
    pub async fn room_rules(&self, room_id: &RoomId) -> EventResult<(RoomVersionId, RoomVersionRules)> {
        let version = self
            .base
            .caches
            .room_version(&self.base.storage, room_id.as_str())
            .await?
            .ok_or(EventError::UnknownRoom)?;
        room_version_rules(&version)
    }

    /// A join event for `user_id` (of `origin`) to sign, if the room's rules let them join.
    pub async fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        rules: &RoomVersionRules,
    ) -> EventResult<CanonicalJsonObject> {
        self.make_membership(origin, room_id, user_id, "join", rules).await
    }

    /// A membership event (`join`, `leave`) for `user_id` of `origin` to sign, built on the
    /// room's head, if the room's rules allow it.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
        rules: &RoomVersionRules,
    ) -> EventResult<CanonicalJsonObject> {
        if user_id.server_name() != origin {
            return Err(EventError::forbidden("The user is not on the requesting server"));
        }
        self.require_resident(room_id).await?;
        self.check_acl(origin, room_id).await?;
        let mut content = json!({ "membership": membership });
        // A restricted room lets in an uninvited user who is in one of the allowed rooms, on
        // the word of a member here who may invite (the spec's authorising server).
        if membership == "join"
            && !matches!(
                self.base
                    .storage
                    .membership(room_id.as_str(), user_id.as_str())
                    .await?
                    .as_deref(),
                Some("invite" | "join")
            )
            && let Some(authoriser) = restricted_join_authoriser(&self.base, room_id, user_id).await?
        {
            content["join_authorised_via_users_server"] = authoriser.into();
        }
        let draft = EventDraft::state("m.room.member", user_id.as_str(), content);
        let types = auth_types(&draft, user_id, rules)?;
        let context = local_context(&self.base, room_id, &types).await?;
        let references = |ids: &[String]| -> EventResult<Vec<(String, CanonicalJsonObject)>> {
            ids.iter()
                .map(|id| {
                    let row = context
                        .loaded
                        .get(id)
                        .ok_or(EventError::Internal("an auth or prev event"))?;
                    Ok((id.clone(), parse_object(&row.json)?))
                })
                .collect()
        };
        let prev = references(&context.prev_events)?;
        let auth = references(&context.auth_ids(&types))?;
        let mut object = build_object(&draft, Some(room_id), user_id, context.depth, &prev, &auth, rules)?;
        object.insert("origin".to_owned(), CanonicalJsonValue::String(origin.to_string()));
        // Refused now rather than after the remote server signed it.
        let placeholder =
            OwnedEventId::try_from("$make_membership:hearth.invalid").map_err(|_| EventError::internal())?;
        let pdu = PduEvent::from_json(
            placeholder,
            &CanonicalJsonValue::Object(object.clone()).to_string(),
            false,
        )
        .map_err(|_| EventError::internal())?;
        authorise::authorise(rules, &pdu, &context)?;
        Ok(object)
    }

    /// Takes a signed membership event (`join`, `leave`) of a user of `origin` into the room,
    /// and marks it to be passed on to the room's other servers (which the sending server may
    /// not know).
    pub async fn receive_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        pdu: &RawValue,
        expected: &str,
    ) -> EventResult<RemoteOutcome> {
        self.require_resident(room_id).await?;
        self.check_acl(origin, room_id).await?;
        let (_, rules) = self.room_rules(room_id).await?;
        let object: CanonicalJsonObject =
            serde_json::from_str(pdu.get()).map_err(|e| EventError::bad_json(format!("The PDU is not JSON: {e}")))?;
        let field = |name: &str| match object.get(name) {
            Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
            _ => None,
        };
        let membership = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
                Some(CanonicalJsonValue::String(m)) => Some(m.as_str()),
                _ => None,
            },
            _ => None,
        };
        let sender = field("sender").and_then(|s| UserId::parse(s).ok());
        if field("type") != Some("m.room.member")
            || membership != Some(expected)
            || field("room_id") != Some(room_id.as_str())
            || sender.as_ref().map(|s| s.as_str()) != field("state_key")
            || sender.as_ref().map(|s| s.server_name()) != Some(origin)
        {
            return Err(EventError::bad_json(format!(
                "Not a {expected} of a user of the sending server to this room"
            )));
        }
        let object = if expected == "join" {
            self.countersign_restricted_join(room_id, object, &rules).await?
        } else {
            object
        };
        let (checked_id, object) = self
            .check_pdu(object, &rules)
            .await
            .map_err(|e| EventError::bad_json(e.to_string()))?;
        if &checked_id != event_id {
            return Err(EventError::bad_json("The event ID does not match the event"));
        }
        self.base.storage.forward_event(event_id.as_str()).await?;
        append_remote_event(&self.base, room_id, event_id, object, &rules).await
    }

    /// A join that names one of our users as its authoriser (a restricted join we offered in
    /// `make_join`) gets our signature, if the user still qualifies: the auth rules check the
    /// authoriser's power, only we can check the joining user's membership of an allowed room.
    async fn countersign_restricted_join(
        &self,
        room_id: &RoomId,
        mut object: CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> EventResult<CanonicalJsonObject> {
        let authoriser = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => match content.get("join_authorised_via_users_server") {
                Some(CanonicalJsonValue::String(user)) => UserId::parse(user).ok(),
                _ => None,
            },
            _ => None,
        };
        let Some(authoriser) = authoriser.filter(|user| user.server_name() == self.server_name()) else {
            return Ok(object);
        };
        let joining = match object.get("state_key") {
            Some(CanonicalJsonValue::String(user)) => {
                UserId::parse(user).map_err(|_| EventError::bad_json("state_key"))?
            }
            _ => return Err(EventError::bad_json("A join names its user")),
        };
        if restricted_join_authoriser(&self.base, room_id, &joining)
            .await?
            .is_none()
        {
            return Err(EventError::forbidden("The room is not restricted"));
        }
        tracing::info!(%room_id, %joining, %authoriser, "authorising a restricted join");
        let mut redacted = ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
            .map_err(|_| EventError::bad_json("The join cannot be redacted"))?;
        redacted.remove("signatures");
        redacted.remove("unsigned");
        ruma::signatures::sign_json(self.server_name().as_str(), self.base.signing_key.pair(), &mut redacted)
            .map_err(|_| EventError::internal())?;
        if let Some(CanonicalJsonValue::Object(ours)) = redacted.remove("signatures")
            && let Some(signature) = ours.get(self.server_name().as_str())
        {
            match object.get_mut("signatures") {
                Some(CanonicalJsonValue::Object(all)) => {
                    all.insert(self.server_name().to_string(), signature.clone());
                }
                _ => return Err(EventError::bad_json("The join is not signed")),
            }
        }
        Ok(object)
    }

    /// Takes a signed join into the room; answers with the state before it and its auth chain.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        pdu: &RawValue,
        omit_members: bool,
    ) -> EventResult<JoinedState> {
        match self.receive_membership(origin, room_id, event_id, pdu, "join").await? {
            RemoteOutcome::Accepted(_) | RemoteOutcome::Duplicate => {}
            RemoteOutcome::Rejected(reason) => return Err(EventError::forbidden(reason)),
            RemoteOutcome::SoftFailed => {
                return Err(EventError::forbidden(
                    "The join does not pass against the room's current state",
                ));
            }
            RemoteOutcome::MissingEvents(ids) => {
                return Err(EventError::bad_json(format!(
                    "Unknown prev or auth events: {}",
                    ids.join(", ")
                )));
            }
        }
        let stored = self
            .base
            .storage
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| EventError::forbidden("The join was refused"))?;
        let pdu = PduEvent::from_json(event_id.clone(), &stored.json, false).map_err(|_| EventError::internal())?;
        let prev = pdu
            .prev_events
            .first()
            .ok_or(EventError::bad_json("A join needs prev events"))?;
        let group = self
            .base
            .storage
            .state_group_after(prev.as_str())
            .await?
            .ok_or(EventError::Internal("the state before a join"))?;
        let state_map = self.base.storage.state_group(group).await?;
        let state_ids: Vec<String> = if omit_members {
            omitting_members(&state_map, pdu.sender.as_str())
        } else {
            state_map.into_values().collect()
        };
        let state_rows = self.base.storage.events(&state_ids).await?;
        let mut auth_roots: Vec<String> = Vec::new();
        for row in &state_rows {
            let event = PduEvent::from_json(
                OwnedEventId::try_from(row.event_id.as_str()).map_err(|_| EventError::internal())?,
                &row.json,
                false,
            )
            .map_err(|_| EventError::internal())?;
            auth_roots.extend(event.auth_events.iter().map(ToString::to_string));
        }
        auth_roots.extend(pdu.auth_events.iter().map(ToString::to_string));
        let mut auth_chain = self.auth_chain(auth_roots).await?;
        if omit_members {
            // Events already in `state` need not come twice.
            let in_state: HashSet<&str> = state_ids.iter().map(String::as_str).collect();
            auth_chain.retain(|row| !in_state.contains(row.event_id.as_str()));
        }
        let raw = |json: &str| RawValue::from_string(json.to_owned()).map_err(|_| EventError::internal());
        let authorised_here = serde_json::from_str::<serde_json::Value>(pdu.content.get())
            .ok()
            .and_then(|content| {
                content
                    .get("join_authorised_via_users_server")?
                    .as_str()
                    .map(str::to_owned)
            })
            .is_some_and(|user| user.ends_with(&format!(":{}", self.server_name())));
        Ok(JoinedState {
            event: if authorised_here {
                Some(raw(&stored.json)?)
            } else {
                None
            },
            state: state_rows
                .iter()
                .map(|row| raw(&row.json))
                .collect::<EventResult<_>>()?,
            auth_chain: auth_chain
                .iter()
                .map(|row| raw(&row.json))
                .collect::<EventResult<_>>()?,
            servers_in_room: self.servers_in_room(room_id).await?,
            members_omitted: omit_members,
        })
    }

    /// Takes a signed knock into the room; answers with the room's description for the
    /// knocker (whole events, the create event among them, as the spec asks).
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        pdu: &RawValue,
    ) -> EventResult<Vec<Box<RawValue>>> {
        match self.receive_membership(origin, room_id, event_id, pdu, "knock").await? {
            RemoteOutcome::Accepted(_) | RemoteOutcome::Duplicate => {}
            RemoteOutcome::Rejected(reason) => return Err(EventError::forbidden(reason)),
            RemoteOutcome::SoftFailed => {
                return Err(EventError::forbidden(
                    "The knock does not pass against the room's current state",
                ));
            }
            RemoteOutcome::MissingEvents(_) => {
                return Err(EventError::forbidden(
                    "The knock names events this server does not have",
                ));
            }
        }
        self.room_description_pdus(room_id).await
    }

    /// The room's descriptive state events, whole, for someone outside it (an invitee's or a
    /// knocker's server).
    pub(super) async fn room_description_pdus(&self, room_id: &RoomId) -> EventResult<Vec<Box<RawValue>>> {
        Ok(room_description_events(&self.base, room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|row| RawValue::from_string(row.json).ok())
            .collect())
    }

    /// The auth chain from `roots`: their auth events, theirs, and so on.
    pub(super) async fn auth_chain(&self, roots: Vec<String>) -> EventResult<Vec<crate::storage::EventRow>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue: VecDeque<String> = roots.into_iter().collect();
        let mut chain = Vec::new();
        while !queue.is_empty() {
            let batch: Vec<String> = queue.drain(..).filter(|id| seen.insert(id.clone())).collect();
            for row in self.base.storage.events(&batch).await? {
                let id = OwnedEventId::try_from(row.event_id.as_str()).map_err(|_| EventError::internal())?;
                let event = PduEvent::from_json(id, &row.json, false).map_err(|_| EventError::internal())?;
                queue.extend(
                    event
                        .auth_events
                        .iter()
                        .map(ToString::to_string)
                        .filter(|id| !seen.contains(id)),
                );
                chain.push(row);
            }
        }
        Ok(chain)
    }

    /// Servers with a joined member in the room, ours first.
    pub async fn servers_in_room(&self, room_id: &RoomId) -> EventResult<Vec<String>> {
        let mut servers = vec![self.server_name().to_string()];
        for member in self.base.storage.joined_members(room_id.as_str()).await? {
            if let Some((_, server)) = member.split_once(':')
                && !servers.iter().any(|s| s == server)
            {
                servers.push(server.to_owned());
            }
        }
        Ok(servers)
    }

    /// Only a server with a member in the room can hand out joins.
    async fn require_resident(&self, room_id: &RoomId) -> EventResult<()> {
        let ours = format!(":{}", self.server_name());
        let members = self.base.storage.joined_members(room_id.as_str()).await?;
        if members.iter().any(|member| member.ends_with(&ours)) {
            Ok(())
        } else {
            Err(EventError::not_found("This server is not in that room"))
        }
    }
}

/// The state a partial-state join gets: everything but the members, except (for a room with
/// neither name nor alias, whose clients name it by its members) up to five members other
/// than the joiner, as `m.heroes` would list them.
fn omitting_members(state: &crate::storage::StateMap, joiner: &str) -> Vec<String> {
    let named = state.contains_key(&("m.room.name".to_owned(), String::new()))
        || state.contains_key(&("m.room.canonical_alias".to_owned(), String::new()));
    let mut heroes = 0;
    state
        .iter()
        .filter(|((kind, key), _)| {
            if kind != "m.room.member" {
                return true;
            }
            if named || key == joiner || heroes >= 5 {
                return false;
            }
            heroes += 1;
            true
        })
        .map(|(_, id)| id.clone())
        .collect()
}
