//! Build: a local user's draft becomes a PDU (type, content, `prev_events`,
//! `auth_events`, depth), hashed and signed by this server. Remote events skip this step:
//! they arrive built.

use hearth_federation::{
    ServerKey, finalize_pdu,
    pdu::{PduError, PduEvent, event_references},
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, ServerName, UserId,
    room_version_rules::RoomVersionRules,
};
use serde_json::Value;

use crate::{
    rooms::error::{EventError, EventResult},
    storage::now_ms,
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
    /// `origin_server_ts` chosen by an application service (timestamp massaging, for
    /// bridged history); `None`: now.
    pub origin_server_ts: Option<i64>,
}

impl EventDraft {
    pub fn state(event_type: &str, state_key: &str, content: Value) -> Self {
        Self {
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
            origin_server_ts: None,
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

/// The PDU object of a draft, before hashing and signing.
pub fn build_object(
    draft: &EventDraft,
    room_id: Option<&RoomId>,
    sender: &UserId,
    depth: i64,
    prev_events: &[(String, CanonicalJsonObject)],
    auth_events: &[(String, CanonicalJsonObject)],
    rules: &RoomVersionRules,
) -> EventResult<CanonicalJsonObject> {
    let reference_list = |refs: &[(String, CanonicalJsonObject)]| {
        let pairs: Vec<(&str, &CanonicalJsonObject)> = refs.iter().map(|(id, pdu)| (id.as_str(), pdu)).collect();
        event_references(rules, &pairs).map_err(|_| EventError::Internal("event references"))
    };
    let mut content = draft.content.clone();
    if !content.is_object() {
        return Err(EventError::BadContent("Event content must be a JSON object".to_owned()));
    }
    let mut event = serde_json::json!({
        "type": draft.event_type,
        "sender": sender,
        "depth": depth,
        "origin_server_ts": draft.origin_server_ts.unwrap_or_else(now_ms),
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
            return Err(EventError::BadContent(
                "Event content is not canonical JSON (floats or huge integers?)".to_owned(),
            ));
        }
    };
    object.insert("prev_events".to_owned(), reference_list(prev_events)?);
    object.insert("auth_events".to_owned(), reference_list(auth_events)?);
    Ok(object)
}

/// Hashes and signs the object with this server's key; returns the event ID.
pub fn finalize(
    object: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    server_name: &ServerName,
    key: &ServerKey,
) -> EventResult<OwnedEventId> {
    finalize_pdu(object, rules, server_name, key).map_err(|error| match error {
        PduError::TooLarge => EventError::TooLarge,
        other => {
            tracing::error!(error = %other, "could not finalize a PDU");
            EventError::Internal("finalize a PDU")
        }
    })
}

pub fn to_pdu(event_id: &OwnedEventId, object: &CanonicalJsonObject) -> EventResult<PduEvent> {
    let json = CanonicalJsonValue::Object(object.clone()).to_string();
    PduEvent::from_json(event_id.clone(), &json, false).map_err(|_| EventError::Internal("read back a built PDU"))
}

pub fn parse_object(json: &str) -> EventResult<CanonicalJsonObject> {
    serde_json::from_str(json).map_err(|_| EventError::Internal("a stored PDU is not a JSON object"))
}

/// The relation an event's content declares (`m.relates_to` with `rel_type` and `event_id`).
/// Replies (`m.in_reply_to` alone) are not relations in this sense.
pub fn relation_of(content: &Value) -> Option<(String, String)> {
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    let event_id = relates_to.get("event_id")?.as_str()?;
    Some((event_id.to_owned(), rel_type.to_owned()))
}
