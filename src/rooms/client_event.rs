//! Events as clients see them (the spec's "ClientEvent" format): the PDU's client-facing
//! fields, content redacted if a redaction applies, and `unsigned` data computed for the
//! viewer.

use std::{collections::HashMap, sync::Arc};

use ruma::{CanonicalJsonValue, UserId, canonical_json::redact_content_in_place};
use serde_json::{Map, Value, json};

use super::error::EventResult;
use super::pipeline::room_version_rules;
use crate::{
    base::Base,
    cache::MembershipEvent,
    storage::{EventRow, now_ms},
};

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
    // From room version 11 `redacts` lives in the content; clients written for earlier
    // versions read it at the top, so it is given there too (as Synapse does).
    if let Some(redacts) = pdu.get("redacts").or_else(|| {
        (row.event_type == "m.room.redaction")
            .then(|| pdu["content"].get("redacts"))
            .flatten()
    }) {
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

/// An event in federation format (a filter's `event_format: federation`): the PDU as stored,
/// with the content, event ID and `unsigned` data of its client rendering (so a redaction or an
/// erasure applies alike).
pub fn federation_event(row: &EventRow, client: &Value) -> Value {
    let mut pdu: Map<String, Value> = serde_json::from_str(&row.json).unwrap_or_default();
    // The content as this viewer may see it (redacted or erased): the client rendering's.
    pdu.insert("content".into(), client["content"].clone());
    pdu.insert("event_id".into(), Value::from(row.event_id.as_str()));
    pdu.insert("unsigned".into(), client["unsigned"].clone());
    Value::Object(pdu)
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

/// Renders events for one viewer (user and device): redactions applied, the transaction ID
/// for the sending device, and the bundled aggregations of relations (`m.replace`: the latest
/// edit; `m.thread`: latest reply, count and participation; `m.reference`: the references).
pub async fn render_events(
    state: &Base,
    rows: &[EventRow],
    room_version: &str,
    viewer: &UserId,
    device_id: &str,
) -> EventResult<Vec<Value>> {
    let (storage, caches) = (&state.storage, &state.caches);
    // The viewer's membership over time, for `unsigned.membership` (their membership at each
    // event), and the relations to the events, per room (relations never cross rooms). A
    // relation comes after the event it relates to, so a room whose last relation is older
    // than all these events has none to look up.
    let mut memberships: HashMap<&str, Arc<Vec<MembershipEvent>>> = HashMap::new();
    let mut relations = Vec::new();
    for row in rows {
        if !memberships.contains_key(row.room_id.as_str()) {
            let in_room = || rows.iter().filter(|r| r.room_id == row.room_id);
            let oldest = in_room().map(|r| r.stream_ordering).min().unwrap_or(0);
            if caches.last_relation(storage, &row.room_id).await? > oldest {
                let ids: Vec<String> = in_room().map(|r| r.event_id.clone()).collect();
                relations.extend(storage.relations_to(&row.room_id, &ids).await?);
            }
            let history = caches
                .membership_history(storage, &row.room_id, viewer.as_str())
                .await?;
            memberships.insert(row.room_id.as_str(), history);
        }
    }
    // Edits and latest thread replies are bundled whole: load them in one go.
    let mut bundled_ids = Vec::new();
    let mut aggregations: HashMap<&str, Aggregation> = HashMap::new();
    for relation in &relations {
        let Some(target) = rows.iter().find(|row| row.event_id == relation.relates_to_id) else {
            continue;
        };
        let entry = aggregations.entry(target.event_id.as_str()).or_default();
        match relation.rel_type.as_str() {
            // Only the original sender may edit, and only with the same event type.
            "m.replace" if relation.sender == target.sender && relation.event_type == target.event_type => {
                entry.latest_edit = Some(relation.event_id.clone());
            }
            "m.thread" => {
                entry.thread_count += 1;
                entry.thread_latest = Some(relation.event_id.clone());
                entry.participated |= relation.sender == viewer.as_str();
            }
            "m.reference" => entry.references.push(relation.event_id.clone()),
            _ => {}
        }
    }
    for aggregation in aggregations.values() {
        bundled_ids.extend(aggregation.latest_edit.iter().cloned());
        bundled_ids.extend(aggregation.thread_latest.iter().cloned());
    }
    // State events carry the content they replaced (`prev_content`); redacted events the
    // redaction.
    bundled_ids.extend(rows.iter().filter_map(|row| row.replaces_state.clone()));
    bundled_ids.extend(rows.iter().filter_map(|row| row.redacted_by.clone()));
    // Only the viewer's own events can carry their transaction IDs.
    let own: Vec<String> = rows
        .iter()
        .filter(|row| row.sender == viewer.as_str())
        .map(|row| row.event_id.clone())
        .collect();
    let transaction_ids: HashMap<String, String> = storage
        .transaction_ids(viewer.as_str(), device_id, &own)
        .await?
        .into_iter()
        .collect();
    let bundled: HashMap<String, EventRow> = storage
        .events(&bundled_ids)
        .await?
        .into_iter()
        .map(|row| (row.event_id.clone(), row))
        .collect();
    let membership_at = |row: &EventRow| {
        memberships
            .get(row.room_id.as_str())
            .and_then(|history| {
                history
                    .iter()
                    .rev()
                    .find(|membership| membership.stream_ordering <= row.stream_ordering)
            })
            .map_or("leave", |membership| membership.membership.as_str())
    };
    // Erased users' messages reach only those who were in the room when they were sent: others
    // get them redacted (as Synapse). State stays whole: a room must not lose its encryption,
    // name or rules because their sender was erased. Looked up only when the viewer was away
    // for some event.
    let away =
        |row: &EventRow| row.state_key.is_none() && row.sender != viewer.as_str() && membership_at(row) != "join";
    let erased = if rows.iter().chain(bundled.values()).any(&away) {
        caches.erased_users(storage).await?
    } else {
        Default::default()
    };
    let hidden = |row: &EventRow| row.redacted_by.is_none() && away(row) && erased.contains(&row.sender);
    // An event as it stands, without what it relates to (bundled in another event's unsigned).
    let plain_row = |row: &EventRow| {
        if hidden(row) {
            let mut erased_row = row.clone();
            erased_row.redacted_by = Some(String::new());
            return client_event(&erased_row, room_version, Unsigned::default());
        }
        client_event(row, room_version, Unsigned::default())
    };
    let plain = |id: &Option<String>| id.as_ref().and_then(|id| bundled.get(id)).map(plain_row);

    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let membership = membership_at(row);
        if hidden(row) {
            let mut event = plain_row(row);
            event["unsigned"]["membership"] = Value::from(membership);
            events.push(event);
            continue;
        }
        let transaction_id = transaction_ids.get(&row.event_id).cloned();
        let redacted_because = plain(&row.redacted_by);
        let mut event = client_event(
            row,
            room_version,
            Unsigned {
                transaction_id,
                redacted_because,
            },
        );
        if let Some(previous) = row.replaces_state.as_ref().and_then(|id| bundled.get(id)) {
            let previous_event = plain_row(previous);
            event["unsigned"]["prev_content"] = previous_event["content"].clone();
            event["unsigned"]["replaces_state"] = Value::from(previous.event_id.as_str());
            event["unsigned"]["prev_sender"] = Value::from(previous.sender.as_str());
        }
        if let Some(aggregation) = aggregations.get(row.event_id.as_str())
            && row.redacted_by.is_none()
        {
            let mut relations = serde_json::Map::new();
            if let Some(edit) = plain(&aggregation.latest_edit) {
                relations.insert("m.replace".into(), edit);
            }
            if let Some(latest) = plain(&aggregation.thread_latest) {
                let participated = aggregation.participated || row.sender == viewer.as_str();
                relations.insert(
                    "m.thread".into(),
                    json!({ "latest_event": latest, "count": aggregation.thread_count, "current_user_participated": participated }),
                );
            }
            if !aggregation.references.is_empty() {
                let chunk: Vec<Value> = aggregation
                    .references
                    .iter()
                    .map(|id| json!({ "event_id": id }))
                    .collect();
                relations.insert("m.reference".into(), json!({ "chunk": chunk }));
            }
            if !relations.is_empty() {
                event["unsigned"]["m.relations"] = Value::Object(relations);
            }
        }
        event["unsigned"]["membership"] = Value::from(membership);
        events.push(event);
    }
    Ok(events)
}

#[derive(Default)]
struct Aggregation {
    latest_edit: Option<String>,
    thread_latest: Option<String>,
    thread_count: u64,
    participated: bool,
    references: Vec<String>,
}
