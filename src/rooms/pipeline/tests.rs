//! The pipeline's steps on their own, without a database: build a small room's events,
//! authorise events against a context, and check drafts.

use std::collections::HashMap;

use hearth_federation::ServerKey;
use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId, room_version_rules::RoomVersionRules, server_name};
use serde_json::{Value, json};

use super::{
    EventDraft, EventKind, authorise::authorise, build::relation_of, build_object, check_identifier_sizes,
    context::EventContext, finalize, to_pdu,
};
use crate::{
    rooms::error::EventError,
    storage::{EventRow, StateMap},
};

struct Room {
    rules: RoomVersionRules,
    room_id: OwnedRoomId,
    key: ServerKey,
    /// Built events by ID, as storage would hold them.
    rows: HashMap<String, EventRow>,
    /// (type, state key) → event ID.
    state: StateMap,
    last: Option<String>,
}

fn user(name: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{name}:hs.test")).unwrap()
}

impl Room {
    fn new() -> Self {
        let (key, _) = ServerKey::generate().unwrap();
        Self {
            rules: RoomVersionId::V10.rules().unwrap(),
            room_id: OwnedRoomId::try_from("!room:hs.test").unwrap(),
            key,
            rows: HashMap::new(),
            state: StateMap::new(),
            last: None,
        }
    }

    /// Builds `draft` by `sender` on the room's last event, with the auth events the rules
    /// name; returns its context and the built object (not added to the room).
    fn build(&self, sender: &str, draft: &EventDraft) -> (EventContext, ruma::CanonicalJsonObject) {
        let sender = user(sender);
        let auth_types = super::context::auth_types(draft, &sender, &self.rules).unwrap();
        let mut wanted = auth_types.clone();
        wanted.push(("m.room.create".to_owned(), String::new()));
        let auth_state: StateMap = self
            .state
            .iter()
            .filter(|(key, _)| wanted.contains(key))
            .map(|(key, id)| (key.clone(), id.clone()))
            .collect();
        let context = EventContext {
            kind: EventKind::New,
            depth: self.rows.len() as i64 + 1,
            prev_events: self.last.iter().cloned().collect(),
            state_before: None,
            auth_state,
            loaded: self.rows.clone(),
            rejection: None,
            resolved_state: None,
        };
        let reference = |id: &String| (id.clone(), serde_json::from_str(&self.rows[id].json).unwrap());
        let prev: Vec<_> = context.prev_events.iter().map(reference).collect();
        let auth: Vec<_> = context.auth_ids(&auth_types).iter().map(reference).collect();
        let object = build_object(
            draft,
            Some(&self.room_id),
            &sender,
            context.depth,
            &prev,
            &auth,
            &self.rules,
        )
        .unwrap();
        (context, object)
    }

    /// Builds, authorises and adds an event; returns the authorisation's answer.
    fn add(&mut self, sender: &str, draft: EventDraft) -> Result<String, EventError> {
        let (context, mut object) = self.build(sender, &draft);
        let event_id = finalize(&mut object, &self.rules, server_name!("hs.test"), &self.key)?;
        let pdu = to_pdu(&event_id, &object)?;
        authorise(&self.rules, &pdu, &context)?;
        let id = event_id.to_string();
        let row = EventRow {
            stream_ordering: self.rows.len() as i64 + 1,
            event_id: id.clone(),
            room_id: self.room_id.to_string(),
            depth: context.depth,
            event_type: draft.event_type.clone(),
            state_key: draft.state_key.clone(),
            sender: user(sender).to_string(),
            origin_server_ts: 0,
            json: ruma::CanonicalJsonValue::Object(object).to_string(),
            redacted_by: None,
            replaces_state: None,
            history_visibility: "shared".to_owned(),
        };
        self.rows.insert(id.clone(), row);
        if let Some(key) = &draft.state_key {
            self.state.insert((draft.event_type.clone(), key.clone()), id.clone());
        }
        self.last = Some(id.clone());
        Ok(id)
    }
}

fn message(body: &str) -> EventDraft {
    EventDraft {
        event_type: "m.room.message".to_owned(),
        state_key: None,
        content: json!({ "msgtype": "m.text", "body": body }),
        redacts: None,
        origin_server_ts: None,
    }
}

/// A v10 room made by alice, who joined it.
fn alices_room() -> Room {
    let mut room = Room::new();
    let create = json!({ "creator": user("alice"), "room_version": "10" });
    room.add("alice", EventDraft::state("m.room.create", "", create))
        .unwrap();
    let join = json!({ "membership": "join" });
    room.add(
        "alice",
        EventDraft::state("m.room.member", user("alice").as_str(), join),
    )
    .unwrap();
    room
}

#[test]
fn a_member_may_send_and_a_stranger_may_not() {
    let mut room = alices_room();
    room.add("alice", message("hello")).expect("a member's message");
    match room.add("bob", message("let me in")) {
        Err(EventError::Forbidden(reason)) => assert!(reason.starts_with("Not allowed"), "{reason}"),
        other => panic!("a stranger's message must be refused, got {other:?}"),
    }
}

#[test]
fn a_stranger_may_not_join_an_invite_only_room_but_an_invitee_may() {
    let mut room = alices_room();
    let join = || EventDraft::state("m.room.member", user("bob").as_str(), json!({ "membership": "join" }));
    let rules = json!({ "join_rule": "invite" });
    room.add("alice", EventDraft::state("m.room.join_rules", "", rules))
        .unwrap();
    assert!(matches!(room.add("bob", join()), Err(EventError::Forbidden(_))));
    let invite = json!({ "membership": "invite" });
    room.add(
        "alice",
        EventDraft::state("m.room.member", user("bob").as_str(), invite),
    )
    .unwrap();
    room.add("bob", join()).expect("the invitee joins");
    room.add("bob", message("hi")).expect("and may send");
}

#[test]
fn building_refuses_content_that_is_not_a_canonical_object() {
    let room = alices_room();
    let sender = user("alice");
    for content in [json!("text"), json!({ "number": 1.5 })] {
        let draft = EventDraft { content, ..message("") };
        let built = build_object(&draft, Some(&room.room_id), &sender, 3, &[], &[], &room.rules);
        assert!(matches!(built, Err(EventError::BadContent(_))), "{built:?}");
    }
}

#[test]
fn identifiers_past_255_bytes_are_refused() {
    let long = "x".repeat(256);
    let mut draft = message("");
    draft.event_type = long.clone();
    assert!(matches!(
        check_identifier_sizes(&draft),
        Err(EventError::InvalidParam(_))
    ));
    let draft = EventDraft::state("m.room.topic", &long, json!({}));
    assert!(matches!(
        check_identifier_sizes(&draft),
        Err(EventError::InvalidParam(_))
    ));
    let draft = EventDraft::state("m.room.topic", &"x".repeat(255), json!({}));
    assert!(check_identifier_sizes(&draft).is_ok());
}

#[test]
fn relations_are_read_from_m_relates_to() {
    let content: Value = json!({ "m.relates_to": { "rel_type": "m.thread", "event_id": "$root" } });
    assert_eq!(relation_of(&content), Some(("$root".to_owned(), "m.thread".to_owned())));
    let reply = json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$x" } } });
    assert_eq!(relation_of(&reply), None);
}
