//! Invites across servers, both ways, and leaving a room we are not in (rejecting a remote
//! invite) through `make_leave`/`send_leave`.
//!
//! Outbound: an invite of another server's user is countersigned by that server
//! (`PUT /v2/invite`) before we store it ([`Countersigner`]). Inbound: we check the inviting
//! server's signature, add ours, and keep the invite (with the room's stripped state) as the
//! invitee's membership in a room we are not in yet.

use std::{future::Future, pin::Pin};

use hearth_federation::pdu::PduEvent;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName,
    UserId,
    api::federation::membership::{
        RawStrippedState, create_invite, create_knock_event, create_leave_event, prepare_knock_event,
        prepare_leave_event,
    },
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, hash_and_sign_event, verify_json},
};
use serde_json::{Value, json, value::RawValue};

use super::Federation;
use crate::base::Countersigner;
use crate::{
    rooms::{
        error::{EventError, EventResult},
        membership::{Change, member_content},
        pipeline::{EventKind, published::announce, remote::RemoteOutcome, room_version_rules, to_pdu},
    },
    storage::NewEvent,
};

impl Countersigner for Federation {
    fn countersign_invite<'a>(
        &'a self,
        room_id: &'a RoomId,
        event_id: &'a EventId,
        version: &'a str,
        event: CanonicalJsonObject,
    ) -> Pin<Box<dyn Future<Output = Result<CanonicalJsonObject, String>> + Send + 'a>> {
        Box::pin(async move {
            self.send_invite(room_id, event_id, version, event)
                .await
                .map_err(|error| error.to_string())
        })
    }
}

impl Federation {
    /// Has the invitee's server sign our invite; returns the event with both signatures.
    async fn send_invite(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        version: &str,
        event: CanonicalJsonObject,
    ) -> EventResult<CanonicalJsonObject> {
        let invitee = match event.get("state_key") {
            Some(CanonicalJsonValue::String(user)) => {
                UserId::parse(user).map_err(|_| EventError::bad_json("invitee"))?
            }
            _ => return Err(EventError::bad_json("An invite names its invitee")),
        };
        let server = invitee.server_name().to_owned();
        if self.is_blocked(&server) {
            return Err(EventError::forbidden(
                "This server does not federate with the invitee's",
            ));
        }
        let (room_version, rules) = room_version_rules(version)?;
        let invite_room_state = self
            .room_description_pdus(room_id)
            .await?
            .into_iter()
            .map(RawStrippedState::Pdu)
            .collect();
        let raw = serde_json::value::to_raw_value(&event).map_err(|_| EventError::internal())?;
        let request = create_invite::v2::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            room_version,
            raw,
            invite_room_state,
        );
        let answer = self.client.send(&server, request).await.map_err(|error| {
            EventError::forbidden(format!("The invitee's server did not accept the invite: {error}"))
        })?;
        let mut signed: CanonicalJsonObject = serde_json::from_str(answer.event.get())
            .map_err(|_| EventError::forbidden("The invitee's server answered with something else"))?;
        // The same event, with the invitee's server's signature added.
        let without_signatures = |object: &CanonicalJsonObject| {
            let mut object = object.clone();
            object.remove("signatures");
            object.remove("unsigned");
            object
        };
        if without_signatures(&signed) != without_signatures(&event) {
            return Err(EventError::forbidden("The invitee's server changed the invite"));
        }
        self.require_signature(&server, &signed, &rules).await?;
        // Our event, with their signature added (nothing else of theirs).
        let mut event = event;
        if let Some(CanonicalJsonValue::Object(theirs)) = signed.remove("signatures")
            && let Some(signature) = theirs.get(server.as_str())
            && let Some(CanonicalJsonValue::Object(ours)) = event.get_mut("signatures")
        {
            ours.insert(server.to_string(), signature.clone());
        }
        Ok(event)
    }

    /// Checks `server`'s signature on an event.
    async fn require_signature(
        &self,
        server: &ServerName,
        event: &CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> EventResult<()> {
        let key_ids: Vec<String> = match event.get("signatures") {
            Some(CanonicalJsonValue::Object(all)) => match all.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        if key_ids.is_empty() {
            return Err(EventError::forbidden(format!("{server} did not sign the invite")));
        }
        let keys = self
            .key_set(server, &key_ids, 0)
            .await
            .map_err(|_| EventError::internal())?;
        let redacted = ruma::canonical_json::redact(event.clone(), &rules.redaction, None)
            .map_err(|_| EventError::bad_json("The invite cannot be redacted"))?;
        let mut redacted = redacted;
        redacted.remove("unsigned");
        // Only this server's signature is checked here (verify_json wants keys for every
        // signer present).
        if let Some(CanonicalJsonValue::Object(signatures)) = redacted.get_mut("signatures") {
            signatures.retain(|entity, _| entity == server.as_str());
        }
        let map = PublicKeyMap::from([(server.to_string(), keys)]);
        verify_json(&map, &redacted)
            .map_err(|error| EventError::forbidden(format!("{server}'s signature does not verify: {error}")))
    }

    /// An invite from `origin` for one of our users: checked, signed by us, and kept.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        room_version: &RoomVersionId,
        event: &RawValue,
        invite_room_state: &[RawStrippedState],
    ) -> EventResult<CanonicalJsonObject> {
        let (_, rules) = room_version_rules(room_version.as_str())?;
        let object: CanonicalJsonObject =
            serde_json::from_str(event.get()).map_err(|_| EventError::bad_json("The invite is not JSON"))?;
        let field = |name: &str| match object.get(name) {
            Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
            _ => None,
        };
        let membership = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content.get("membership").cloned(),
            _ => None,
        };
        let invitee = field("state_key").and_then(|user| UserId::parse(user).ok());
        let sender = field("sender").and_then(|user| UserId::parse(user).ok());
        let (Some(invitee), Some(sender)) = (invitee, sender) else {
            return Err(EventError::bad_json("An invite names its sender and invitee"));
        };
        if field("type").as_deref() != Some("m.room.member")
            || membership != Some(CanonicalJsonValue::String("invite".into()))
            || field("room_id").as_deref().is_some_and(|id| id != room_id.as_str())
            || sender.server_name() != origin
        {
            return Err(EventError::bad_json("Not an invite from a user of the sending server"));
        }
        if invitee.server_name() != self.server_name() {
            return Err(EventError::invalid_param("The invitee is not on this server"));
        }
        if self
            .base
            .caches
            .room_version(&self.base.storage, room_id.as_str())
            .await?
            .is_some()
        {
            self.check_acl(origin, room_id).await?;
        }
        if self.base.storage.user(invitee.as_str()).await?.is_none() {
            return Err(EventError::not_found("No such user"));
        }
        let (checked_id, mut object) = self
            .check_pdu(object, &rules)
            .await
            .map_err(|error| EventError::forbidden(error.to_string()))?;
        if &checked_id != event_id {
            return Err(EventError::bad_json("The event ID does not match the event"));
        }
        // Our signature, as the spec asks of the invitee's server.
        hash_and_sign_event(
            self.server_name().as_str(),
            self.base.signing_key.pair(),
            &mut object,
            &rules.redaction,
        )
        .map_err(|_| EventError::internal())?;
        // In the room already (another of our users is): the invite reaches us as part of the
        // room, in a transaction, like any event of it. Otherwise it is kept on its own.
        if !self.must_leave_remotely(room_id).await? {
            tracing::info!(%room_id, %invitee, %sender, "invited from another server to a room we are in");
            return Ok(object);
        }
        let stripped: Vec<Value> = invite_room_state.iter().filter_map(stripped_of).collect();
        let stripped = serde_json::to_string(&stripped).map_err(|_| EventError::internal())?;
        let pdu = to_pdu(event_id, &object)?;
        self.store_membership(room_id, room_version, &pdu, &object, Some(&stripped))
            .await?;
        tracing::info!(%room_id, %invitee, %sender, "invited from another server");
        Ok(object)
    }

    /// Keeps a local user's membership in a room we are not in, and tells their clients.
    async fn store_membership(
        &self,
        room_id: &RoomId,
        room_version: &RoomVersionId,
        pdu: &PduEvent,
        object: &CanonicalJsonObject,
        invite_state: Option<&str>,
    ) -> EventResult<()> {
        let user = pdu.state_key.clone().ok_or(EventError::bad_json("no state key"))?;
        let membership = serde_json::from_str::<Value>(pdu.content.get())
            .ok()
            .and_then(|content| content.get("membership")?.as_str().map(str::to_owned));
        // In our timeline (the user's sync shows it), outside the room's DAG and state.
        let writes = crate::storage::EventWrites {
            timeline: true,
            ..EventKind::Outlier.writes()
        };
        let event = NewEvent {
            event_id: pdu.event_id.to_string(),
            room_id: room_id.to_string(),
            depth: pdu.depth,
            event_type: "m.room.member".to_owned(),
            state_key: Some(user.clone()),
            sender: pdu.sender.to_string(),
            origin_server_ts: i64::try_from(u64::from(pdu.origin_server_ts.0)).unwrap_or(0),
            json: CanonicalJsonValue::Object(object.clone()).to_string(),
            prev_events: Vec::new(),
            state_before: None,
            membership,
            transaction: None,
            relation: None,
            history_visibility: "shared".to_owned(),
            redacts: None,
            writes,
            rejected_reason: None,
            resolved_state: None,
        };
        let room_lock = self.base.room_locks.lock(room_id).await;
        let position = self
            .base
            .storage
            .persist_remote_membership(room_version.as_str(), &event, invite_state)
            .await?;
        announce(
            &self.base,
            room_id.as_str(),
            position,
            [user.as_str()],
            true,
            |caches| caches.room_state_replaced(room_id.as_str()),
        );
        drop(room_lock);
        Ok(())
    }

    /// Whether this server is outside the room (no local user joined): a local user's leave
    /// must then go through another server.
    pub async fn must_leave_remotely(&self, room_id: &RoomId) -> EventResult<bool> {
        let servers = self.base.storage.servers_in_room(room_id.as_str()).await?;
        Ok(!servers.iter().any(|server| server == self.server_name().as_str()))
    }

    /// Leaves (rejects an invite to) a room we are not in, through the inviter's server.
    pub async fn leave_remote(&self, user_id: &UserId, room_id: &RoomId, reason: Option<&str>) -> EventResult<()> {
        let membership = self
            .base
            .storage
            .current_state_event(room_id.as_str(), "m.room.member", user_id.as_str())
            .await?
            .ok_or_else(|| EventError::forbidden("You are not in this room"))?;
        // The inviter's server; for a knock, the servers of whoever sent the room's description.
        let inviter = UserId::parse(&membership.sender).map_err(|_| EventError::internal())?;
        let mut servers: Vec<OwnedServerName> = vec![inviter.server_name().to_owned()];
        let described: Vec<Value> = match self
            .base
            .storage
            .remote_invite_state(room_id.as_str(), user_id.as_str())
            .await?
        {
            Some(events) => serde_json::from_str(&events).unwrap_or_default(),
            None => Vec::new(),
        };
        for event in &described {
            if let Some(sender) = event["sender"].as_str().and_then(|s| UserId::parse(s).ok())
                && !servers.iter().any(|s| s == sender.server_name())
            {
                servers.push(sender.server_name().to_owned());
            }
        }
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        let mut last = EventError::not_found("No server could take the leave");
        for server in self.servers_to_try(&servers) {
            match self.leave_through(user_id, room_id, server, reason).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "leaving through a server failed");
                    last = error;
                }
            }
        }
        Err(last)
    }

    async fn leave_through(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        server: &OwnedServerName,
        reason: Option<&str>,
    ) -> EventResult<()> {
        let made = self
            .client
            .send(
                server,
                prepare_leave_event::v1::Request::new(room_id.to_owned(), user_id.to_owned()),
            )
            .await
            .map_err(|error| EventError::not_found(format!("Could not leave through that server: {error}")))?;
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        let mut content = json!({ "membership": "leave" });
        if let Some(reason) = reason {
            content["reason"] = Value::from(reason);
        }
        let (event_id, event) = self.sign_outside_template(user_id, room_id, &version, &made.event, content)?;
        let raw = serde_json::value::to_raw_value(&event).map_err(|_| EventError::internal())?;
        self.client
            .send(
                server,
                create_leave_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw),
            )
            .await
            .map_err(|error| EventError::forbidden(format!("The leave was refused: {error}")))?;
        let pdu = to_pdu(&event_id, &event)?;
        self.store_membership(room_id, &version, &pdu, &event, None).await
    }

    /// Checks that a resident server's membership template is `user_id`'s own, and signs it
    /// with our content. Returns the event ID and the signed event.
    fn sign_outside_template(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        version: &RoomVersionId,
        template: &RawValue,
        content: Value,
    ) -> EventResult<(OwnedEventId, CanonicalJsonObject)> {
        let (_, rules) = room_version_rules(version.as_str())?;
        let mut event: CanonicalJsonObject = serde_json::from_str(template.get())
            .map_err(|_| EventError::bad_json("The resident server's event is not JSON"))?;
        let is_ours = |name: &str| match event.get(name) {
            Some(CanonicalJsonValue::String(value)) => value == user_id.as_str(),
            _ => false,
        };
        let is_member = matches!(event.get("type"), Some(CanonicalJsonValue::String(kind)) if kind == "m.room.member");
        let of_room = matches!(event.get("room_id"), Some(CanonicalJsonValue::String(id)) if id == room_id.as_str());
        if !is_member || !of_room || !is_ours("sender") || !is_ours("state_key") {
            return Err(EventError::bad_json(
                "The resident server offered a membership event for someone else or another room",
            ));
        }
        let event_id = self.sign_template(&mut event, content, &rules)?;
        Ok((event_id, event))
    }

    /// Knocks on a room this server is not in, through the first of `servers` that takes it;
    /// the knock and the room's description (from the resident server) are kept for the user.
    pub async fn knock_remote(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        reason: Option<&str>,
    ) -> EventResult<()> {
        let mut last = EventError::not_found("Unknown room, and no server to knock through (give via)");
        for server in self.servers_to_try(servers) {
            match self.knock_through(user_id, room_id, server, reason).await {
                Ok(()) => {
                    tracing::info!(%room_id, %server, %user_id, "knocked on a room of another server");
                    return Ok(());
                }
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "knocking through a server failed");
                    last = error;
                }
            }
        }
        Err(last)
    }

    async fn knock_through(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        server: &OwnedServerName,
        reason: Option<&str>,
    ) -> EventResult<()> {
        let mut request = prepare_knock_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        request.ver = super::join::SUPPORTED_VERSIONS.to_vec();
        let made = self
            .client
            .send(server, request)
            .await
            .map_err(|error| match error.errcode() {
                Some("M_FORBIDDEN") => EventError::forbidden(format!("The room does not take knocks: {error}")),
                Some("M_INCOMPATIBLE_ROOM_VERSION") => EventError::UnsupportedVersion(error.to_string()),
                _ => EventError::not_found(format!("Could not knock through that server: {error}")),
            })?;
        let version = made.room_version;
        let mut content = member_content(&self.base, Change::Knock, user_id).await?;
        if let Some(reason) = reason {
            content["reason"] = Value::from(reason);
        }
        let (event_id, event) = self.sign_outside_template(user_id, room_id, &version, &made.event, content)?;
        let raw = serde_json::value::to_raw_value(&event).map_err(|_| EventError::internal())?;
        let answer = self
            .client
            .send(
                server,
                create_knock_event::v1::Request::new(room_id.to_owned(), event_id.clone(), raw),
            )
            .await
            .map_err(|error| EventError::forbidden(format!("The knock was refused: {error}")))?;
        let stripped: Vec<Value> = answer.knock_room_state.iter().filter_map(stripped_of).collect();
        let stripped = serde_json::to_string(&stripped).map_err(|_| EventError::internal())?;
        let pdu = to_pdu(&event_id, &event)?;
        self.store_membership(room_id, &version, &pdu, &event, Some(&stripped))
            .await
    }

    /// A leave event for `user_id` (of `origin`) to sign (`make_leave`).
    pub async fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        rules: &RoomVersionRules,
    ) -> EventResult<CanonicalJsonObject> {
        self.make_membership(origin, room_id, user_id, "leave", rules).await
    }

    /// Takes a signed leave into the room (`send_leave`), and passes it on to the room's other
    /// servers.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        pdu: &RawValue,
    ) -> EventResult<()> {
        match self.receive_membership(origin, room_id, event_id, pdu, "leave").await? {
            RemoteOutcome::Accepted(_) | RemoteOutcome::Duplicate => Ok(()),
            RemoteOutcome::Rejected(reason) => Err(EventError::forbidden(reason)),
            RemoteOutcome::SoftFailed => Err(EventError::forbidden(
                "The leave does not pass against the room's current state",
            )),
            RemoteOutcome::MissingEvents(_) => Err(EventError::forbidden(
                "The leave names events this server does not have",
            )),
        }
    }
}

/// A stripped state event from an invite's room state, whole PDU or already stripped.
fn stripped_of(state: &RawStrippedState) -> Option<Value> {
    let json = match state {
        RawStrippedState::Pdu(pdu) => pdu.get(),
        #[allow(deprecated)]
        RawStrippedState::Stripped(raw) => raw.json().get(),
        _ => return None,
    };
    let event: Value = serde_json::from_str(json).ok()?;
    Some(json!({
        "type": event.get("type")?,
        "state_key": event.get("state_key")?,
        "sender": event.get("sender")?,
        "content": event.get("content")?,
    }))
}
