//! Events as clients see them (the spec's "ClientEvent" format): the PDU's client-facing
//! fields, content redacted if a redaction applies, and `unsigned` data computed for the
//! viewer.

use ruma::{CanonicalJsonValue, canonical_json::redact_content_in_place};
use serde_json::{Map, Value, json};

use super::pipeline::room_version_rules;
use crate::storage::{EventRow, now_ms};

/// What the server adds for one viewer.
#[derive(Default)]
pub struct Unsigned {
    /// The transaction ID, shown only to the device that sent the event.
    pub transaction_id: Option<String>,
    /// The redaction event, in client format, when this event has been redacted.
    pub redacted_because: Option<Value>,
}

/// Renders a stored event in client format.
pub fn client_event(row: &EventRow, room_version: &str, unsigned: Unsigned) -> Value {
    let pdu: Map<String, Value> = serde_json::from_str(&row.json).unwrap_or_default();
    let mut content = pdu.get("content").cloned().unwrap_or_else(|| json!({}));
    if row.redacted_by.is_some() {
        content = redacted_content(&row.event_type, content, room_version);
    }
    let mut event = json!({
        "type": row.event_type,
        "content": content,
        "event_id": row.event_id,
        "sender": row.sender,
        "origin_server_ts": row.origin_server_ts,
        "room_id": row.room_id,
    });
    if let Some(state_key) = &row.state_key {
        event["state_key"] = Value::from(state_key.as_str());
    }
    if let Some(redacts) = pdu.get("redacts") {
        event["redacts"] = redacts.clone();
    }
    let mut extra = json!({ "age": (now_ms() - row.origin_server_ts).max(0) });
    if let Some(txn) = unsigned.transaction_id {
        extra["transaction_id"] = Value::from(txn);
    }
    if let Some(because) = unsigned.redacted_because {
        extra["redacted_because"] = because;
    }
    event["unsigned"] = extra;
    event
}

/// The content left after redaction, per the room version's rules.
fn redacted_content(event_type: &str, content: Value, room_version: &str) -> Value {
    let Ok((_, rules)) = room_version_rules(room_version) else {
        return json!({});
    };
    let Ok(CanonicalJsonValue::Object(mut object)) = CanonicalJsonValue::try_from(content) else {
        return json!({});
    };
    redact_content_in_place(&mut object, &rules.redaction, event_type);
    serde_json::to_value(object).unwrap_or_else(|_| json!({}))
}
