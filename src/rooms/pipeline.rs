//! The event pipeline for events this server creates: build the PDU on the room's forward
//! extremities, choose its auth events, hash and sign it, authorize it against the state
//! before it, and persist it with its edges, state and stream position in one transaction.
//! Only then is it acknowledged. Remote events will enter at the authorization step.

use std::collections::HashMap;

use hearth_federation::{
    finalize_pdu,
    pdu::{PduError, PduEvent, event_references},
};
use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, RoomVersionId, UserId,
    api::error::ErrorKind,
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    state_res::{auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules},
};
use serde_json::{Value, value::RawValue};

use super::{access::power_levels, persister::NewEvent};
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    storage::{EventRow, StateMap, now_ms},
    streams::Stream,
};

/// An event a local user wants to add to a room.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub event_type: String,
    pub state_key: Option<String>,
    /// A JSON object.
    pub content: Value,
    /// For redactions: the event redacted.
    pub redacts: Option<OwnedEventId>,
}

impl EventDraft {
    pub fn state(event_type: &str, state_key: &str, content: Value) -> Self {
        Self {
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }
}

/// The sending device's transaction, for idempotent client requests. Transaction IDs are
/// scoped per device, room and endpoint (`send`, `redact`).
pub struct Transaction<'a> {
    pub device_id: &'a str,
    pub endpoint: &'static str,
    pub txn_id: &'a str,
}

/// An event that made it into the room.
#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: OwnedEventId,
    pub stream_ordering: i64,
}

pub fn room_version_rules(version: &str) -> ApiResult<(RoomVersionId, RoomVersionRules)> {
    let id = RoomVersionId::try_from(version).map_err(|_| unsupported_version(version))?;
    let rules = id.rules().ok_or_else(|| unsupported_version(version))?;
    Ok((id, rules))
}

pub(super) fn unsupported_version(version: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::UnsupportedRoomVersion,
        format!("Room version {version} is not supported"),
    )
}

/// Longest event type and state key (spec, "Size limits": 255 bytes each).
const MAX_IDENTIFIER_BYTES: usize = 255;

/// The spec's size limits on an event's identifiers: 400 `M_INVALID_PARAM` past them.
pub(super) fn check_identifier_sizes(draft: &EventDraft) -> ApiResult<()> {
    if draft.event_type.len() > MAX_IDENTIFIER_BYTES {
        return Err(ApiError::invalid_param(format!(
            "Event types are at most {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    if draft
        .state_key
        .as_ref()
        .is_some_and(|key| key.len() > MAX_IDENTIFIER_BYTES)
    {
        return Err(ApiError::invalid_param(format!(
            "State keys are at most {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Appends a local user's event to a room. 404 if the room is unknown, 403 `M_FORBIDDEN`
/// with the reason if the authorization rules refuse it, 413 if the PDU is too large.
pub async fn append_event(
    state: &AppState,
    room_id: &RoomId,
    sender: &UserId,
    draft: EventDraft,
    transaction: Option<Transaction<'_>>,
) -> ApiResult<Appended> {
    check_identifier_sizes(&draft)?;
    let storage = &state.storage;
    let room_lock = state.room_locks.lock(room_id).await;
    // A retry racing the first send waits for the lock, then finds the first one's event.
    if let Some(txn) = &transaction
        && let Some(event_id) = storage
            .event_for_transaction(
                sender.as_str(),
                txn.device_id,
                room_id.as_str(),
                txn.endpoint,
                txn.txn_id,
            )
            .await?
    {
        let stream_ordering = storage.event(&event_id).await?.map_or(0, |row| row.stream_ordering);
        let event_id = OwnedEventId::try_from(event_id).map_err(|_| ApiError::internal())?;
        return Ok(Appended {
            event_id,
            stream_ordering,
        });
    }
    let mut draft = draft;
    if draft.event_type == "m.room.redaction" {
        check_redaction(state, room_id, sender, &mut draft).await?;
    }
    let version = state
        .caches
        .room_version(storage, room_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("Unknown room"))?;
    let (_, rules) = room_version_rules(&version)?;

    let extremities = storage.forward_extremities(room_id.as_str()).await?;
    let depth = extremities.iter().map(|(_, depth, _)| *depth).max().unwrap_or(0) + 1;
    // Local events always build on the room's current state: the state after the newest
    // extremity, which is what current state holds.
    let state_before = extremities.last().map(|(_, _, group)| *group);
    let prev_ids: Vec<String> = extremities.iter().rev().take(20).map(|(id, _, _)| id.clone()).collect();

    let event_type = TimelineEventType::from(draft.event_type.as_str());
    let content_raw = RawValue::from_string(draft.content.to_string()).map_err(|_| ApiError::internal())?;
    let auth_types = auth_types_for_event(
        &event_type,
        sender,
        draft.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    )
    .map_err(|reason| ApiError::bad_json(format!("Invalid event content: {reason}")))?;
    // Only the state the rules look at is loaded, not the whole room (500 members' worth).
    let mut wanted_state: Vec<(String, String)> = auth_types
        .iter()
        .map(|(kind, key)| (kind.to_string(), key.clone()))
        .collect();
    wanted_state.push(("m.room.create".to_owned(), String::new()));
    wanted_state.push(("m.room.history_visibility".to_owned(), String::new()));
    let current = storage.current_state_entries(room_id.as_str(), &wanted_state).await?;
    let auth_ids: Vec<String> = auth_types
        .iter()
        .filter_map(|(kind, key)| current.get(&(kind.to_string(), key.clone())).cloned())
        .collect();
    // The create event is always needed by the rules (in v12 it is implied, not listed).
    let create_id = current.get(&("m.room.create".to_owned(), String::new())).cloned();
    let mut wanted = auth_ids.clone();
    wanted.extend(prev_ids.iter().cloned());
    wanted.extend(create_id.clone());
    let visibility_id = current
        .get(&("m.room.history_visibility".to_owned(), String::new()))
        .cloned();
    wanted.extend(visibility_id.clone());
    let loaded: HashMap<String, EventRow> = storage
        .events(&wanted)
        .await?
        .into_iter()
        .map(|row| (row.event_id.clone(), row))
        .collect();

    let references = |ids: &[String]| -> ApiResult<Vec<(String, CanonicalJsonObject)>> {
        ids.iter()
            .map(|id| {
                let row = loaded.get(id).ok_or_else(ApiError::internal)?;
                Ok((id.clone(), parse_object(&row.json)?))
            })
            .collect()
    };
    let prev_refs = references(&prev_ids)?;
    let auth_refs = references(&auth_ids)?;
    let mut object = build_object(&draft, Some(room_id), sender, depth, &prev_refs, &auth_refs, &rules)?;
    let event_id = finalize(&mut object, &rules, state)?;
    let pdu = to_pdu(&event_id, &object)?;

    // Authorize: the auth events must be right for the event, and the event must pass the
    // rules against the state before it.
    let mut by_id: HashMap<OwnedEventId, PduEvent> = HashMap::new();
    for row in loaded.values() {
        let id = OwnedEventId::try_from(row.event_id.as_str()).map_err(|_| ApiError::internal())?;
        by_id.insert(
            id.clone(),
            PduEvent::from_json(id, &row.json, false).map_err(|_| ApiError::internal())?,
        );
    }
    let state_events = state_pdus(&current, &by_id);
    check_state_independent_auth_rules(&rules.authorization, &pdu, |id| by_id.get(id).cloned())
        .and_then(|()| {
            check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind, key| {
                state_events.get(&(kind.to_string(), key.to_owned())).cloned()
            })
        })
        .map_err(|reason| ApiError::forbidden(format!("Not allowed: {reason}")))?;

    let membership = (draft.event_type == "m.room.member")
        .then(|| draft.content.get("membership").and_then(Value::as_str))
        .flatten();
    let relation = relation_of(&draft.content);
    // Who may read this event is fixed by the visibility in force as it is sent.
    let history_visibility = visibility_id
        .as_ref()
        .and_then(|id| loaded.get(id))
        .and_then(|row| super::access::content_field(&row.json, "history_visibility"))
        .unwrap_or_else(|| "shared".to_owned());
    let json = CanonicalJsonValue::Object(object).to_string();
    // Published by the writer once committed, under the room lock (see `persister`): the
    // room's caches are invalidated and its members woken, and for a membership change its
    // subject (who may not be in the room yet: an invite, a join).
    let after_commit = {
        let state = state.clone();
        let room_id = room_id.to_owned();
        let event_type = draft.event_type.clone();
        let state_key = draft.state_key.clone();
        let is_relation = relation.is_some();
        let subject = membership.and(draft.state_key.clone());
        Box::new(move |stream_ordering| {
            state
                .caches
                .event_persisted(room_id.as_str(), &event_type, state_key.as_deref(), is_relation);
            if subject.is_some() {
                state.caches.member_event_at(stream_ordering);
            }
            state.notifier.advance(
                Stream::Events,
                stream_ordering,
                std::iter::once(room_id.as_str()).chain(subject.as_deref()),
            );
            state.push.event_written();
            drop(room_lock);
        })
    };
    let stream_ordering = state
        .persister
        .persist(
            NewEvent {
                event_id: event_id.to_string(),
                room_id: room_id.to_string(),
                depth,
                event_type: draft.event_type.clone(),
                state_key: draft.state_key.clone(),
                sender: sender.to_string(),
                origin_server_ts: pdu.origin_server_ts.0.into(),
                json,
                prev_events: prev_ids,
                state_before,
                membership: membership.map(str::to_owned),
                transaction: transaction
                    .as_ref()
                    .map(|t| (t.device_id.to_owned(), t.endpoint, t.txn_id.to_owned())),
                relation,
                history_visibility,
                redacts: draft.redacts.as_ref().map(ToString::to_string),
            },
            after_commit,
        )
        .await?;
    tracing::debug!(%room_id, %event_id, stream_ordering, "persisted event");
    Ok(Appended {
        event_id,
        stream_ordering,
    })
}

/// A redaction, however it is sent (`/redact` or `/send/m.room.redaction`), must name an
/// event of this room, and a sender may redact others' events only with the `redact` power
/// level. (The v3+ auth rules accept any redaction and leave this check to the server that
/// applies it.)
async fn check_redaction(state: &AppState, room_id: &RoomId, sender: &UserId, draft: &mut EventDraft) -> ApiResult<()> {
    let target = match &draft.redacts {
        Some(target) => target.clone(),
        None => draft
            .content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|id| OwnedEventId::try_from(id).ok())
            .ok_or_else(|| ApiError::bad_json("A redaction must name the event it redacts (`redacts`)"))?,
    };
    let row = state
        .storage
        .event(target.as_str())
        .await?
        .filter(|row| row.room_id == room_id.as_str())
        .ok_or_else(|| ApiError::not_found("The event to redact is not in this room"))?;
    if row.sender != sender.as_str() {
        let (own, needed) = power_levels(state, room_id, sender, "redact").await?;
        if own < needed {
            return Err(ApiError::forbidden(format!(
                "Redacting other users' events needs power level {needed}; you have {own}"
            )));
        }
    }
    draft.redacts = Some(target);
    Ok(())
}

/// The state events the rules may look up, keyed by (type, state key).
fn state_pdus(current: &StateMap, loaded: &HashMap<OwnedEventId, PduEvent>) -> HashMap<(String, String), PduEvent> {
    current
        .iter()
        .filter_map(|(key, id)| {
            let id = OwnedEventId::try_from(id.as_str()).ok()?;
            Some((key.clone(), loaded.get(&id)?.clone()))
        })
        .collect()
}

pub(super) fn build_object(
    draft: &EventDraft,
    room_id: Option<&RoomId>,
    sender: &UserId,
    depth: i64,
    prev_events: &[(String, CanonicalJsonObject)],
    auth_events: &[(String, CanonicalJsonObject)],
    rules: &RoomVersionRules,
) -> ApiResult<CanonicalJsonObject> {
    let reference_list = |refs: &[(String, CanonicalJsonObject)]| {
        let pairs: Vec<(&str, &CanonicalJsonObject)> = refs.iter().map(|(id, pdu)| (id.as_str(), pdu)).collect();
        event_references(rules, &pairs).map_err(|_| ApiError::internal())
    };
    let mut content = draft.content.clone();
    if !content.is_object() {
        return Err(ApiError::bad_json("Event content must be a JSON object"));
    }
    let mut event = serde_json::json!({
        "type": draft.event_type,
        "sender": sender,
        "depth": depth,
        "origin_server_ts": now_ms(),
    });
    if let Some(room_id) = room_id {
        event["room_id"] = Value::from(room_id.as_str());
    }
    if let Some(state_key) = &draft.state_key {
        event["state_key"] = Value::from(state_key.as_str());
    }
    if let Some(redacts) = &draft.redacts {
        // Before v11 `redacts` is a top-level key; from v11 it lives in the content (we set
        // both, as Synapse does, so either reading works).
        event["redacts"] = Value::from(redacts.as_str());
        if rules.redaction.keep_room_redaction_redacts {
            content["redacts"] = Value::from(redacts.as_str());
        }
    }
    event["content"] = content;
    let mut object = match CanonicalJsonValue::try_from(event) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => {
            return Err(ApiError::bad_json(
                "Event content is not canonical JSON (floats or huge integers?)",
            ));
        }
    };
    object.insert("prev_events".to_owned(), reference_list(prev_events)?);
    object.insert("auth_events".to_owned(), reference_list(auth_events)?);
    Ok(object)
}

pub(super) fn finalize(
    object: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    state: &AppState,
) -> ApiResult<OwnedEventId> {
    finalize_pdu(object, rules, &state.config.server_name, &state.signing_key).map_err(|error| match error {
        PduError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            "Event is larger than 65536 bytes",
        ),
        other => {
            tracing::error!(error = %other, "could not finalize a PDU");
            ApiError::internal()
        }
    })
}

pub(super) fn to_pdu(event_id: &OwnedEventId, object: &CanonicalJsonObject) -> ApiResult<PduEvent> {
    let json = CanonicalJsonValue::Object(object.clone()).to_string();
    PduEvent::from_json(event_id.clone(), &json, false).map_err(|_| ApiError::internal())
}

pub fn parse_object(json: &str) -> ApiResult<CanonicalJsonObject> {
    serde_json::from_str(json).map_err(|_| ApiError::internal())
}

/// The relation an event's content declares (`m.relates_to` with `rel_type` and `event_id`).
/// Replies (`m.in_reply_to` alone) are not relations in this sense.
fn relation_of(content: &Value) -> Option<(String, String)> {
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let event_id = relates_to.get("event_id")?.as_str()?;
    Some((event_id.to_owned(), rel_type.to_owned()))
}
