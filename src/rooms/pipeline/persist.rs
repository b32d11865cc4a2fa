//! Persist: the event, with what its kind lets it change, goes to the writer (see
//! [`crate::rooms::persister`]), which commits it with others waiting and then runs the
//! published step. Refuses kinds storage cannot keep from clients yet.

use hearth_federation::pdu::PduEvent;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId};
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use super::{
    build::{EventDraft, Transaction, relation_of},
    context::EventContext,
    published::{Published, after_commit},
};
use crate::{base::Base, json::content_field, rooms::error::EventResult, storage::NewEvent};

/// Persists a built and authorised event; returns its stream position once it is committed
/// and published.
#[allow(clippy::too_many_arguments)]
pub async fn persist(
    state: &Base,
    context: EventContext,
    room_id: &RoomId,
    pdu: &PduEvent,
    object: CanonicalJsonObject,
    draft: &EventDraft,
    transaction: Option<&Transaction<'_>>,
    room_lock: OwnedMutexGuard<()>,
) -> EventResult<i64> {
    let membership = (draft.event_type == "m.room.member")
        .then(|| draft.content.get("membership").and_then(Value::as_str))
        .flatten();
    let relation = relation_of(&draft.content);
    // Who may read this event is fixed by the visibility in force as it is sent.
    let history_visibility = context
        .state_id("m.room.history_visibility", "")
        .and_then(|id| context.loaded.get(id))
        .and_then(|row| content_field(&row.json, "history_visibility"))
        .unwrap_or_else(|| "shared".to_owned());
    let published = Published {
        room_id: room_id.to_string(),
        event_type: draft.event_type.clone(),
        state_key: draft.state_key.clone(),
        is_relation: relation.is_some(),
        subject: membership.and(draft.state_key.clone()),
        // Soft-failed events are kept from clients and subscribers like rejected ones.
        visible: context.rejection.is_none() && context.kind != super::EventKind::SoftFailed,
        state_replaced: context.resolved_state.is_some(),
    };
    let event = NewEvent {
        event_id: pdu.event_id.to_string(),
        room_id: published.room_id.clone(),
        depth: context.depth,
        event_type: draft.event_type.clone(),
        state_key: draft.state_key.clone(),
        sender: pdu.sender.to_string(),
        origin_server_ts: pdu.origin_server_ts.0.into(),
        json: CanonicalJsonValue::Object(object).to_string(),
        prev_events: context.prev_events,
        state_before: context.state_before,
        membership: membership.map(str::to_owned),
        transaction: transaction.map(|t| (t.device_id.to_owned(), t.endpoint, t.txn_id.to_owned())),
        relation,
        history_visibility,
        redacts: draft.redacts.as_ref().map(ToString::to_string),
        writes: context.kind.writes(),
        rejected_reason: context.rejection,
        resolved_state: context.resolved_state,
    };
    state
        .persister
        .persist(event, after_commit(state, published, room_lock))
        .await
}
