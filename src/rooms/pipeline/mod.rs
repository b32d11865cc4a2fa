//! The event pipeline: every room event goes through the same steps, each in its own file.
//!
//! - [`context`]: the event's kind, its place in the DAG and the state before it (for a local
//!   event, the room's head; for a remote one, resolved from its `prev_events`);
//! - [`build`]: a local draft becomes a hashed and signed PDU (remote events arrive built);
//! - [`check`]: what the auth rules do not cover (sizes, redaction targets; for remote PDUs,
//!   hashes and signatures);
//! - [`authorise`]: the room version's auth rules against the state before it;
//! - [`persist`]: written with what its kind allows, in a group commit;
//! - [`published`]: after the commit, caches, waiting clients and subscribers hear of it.
//!
//! A local event is checked first (sizes; a redaction's target), then, under the room's lock,
//! gets its context, is built, authorised, persisted and published. Errors are [`EventError`]s: the API turns them into
//! Matrix errors, federation will turn them into per-PDU results.

pub mod authorise;
pub mod build;
pub mod check;
pub mod context;
pub mod persist;
pub mod published;
pub mod remote;
pub mod resolve;
#[cfg(test)]
mod tests;

use ruma::{OwnedEventId, RoomId, UserId};

pub use self::{
    build::{EventDraft, Transaction, build_object, finalize, parse_object, to_pdu},
    check::check_identifier_sizes,
    context::{EventContext, EventKind},
};
use super::error::{EventError, EventResult};
pub use super::version::room_version_rules;
use crate::base::Base;

/// The server of the invitee, when a draft invites a user of another server.
fn remote_invitee<'a>(draft: &'a EventDraft, server_name: &ruma::ServerName) -> Option<&'a str> {
    if draft.event_type != "m.room.member" || draft.content.get("membership").and_then(|m| m.as_str()) != Some("invite")
    {
        return None;
    }
    let invitee = draft.state_key.as_deref()?;
    let (_, server) = invitee.split_once(':')?;
    (server != server_name.as_str()).then_some(server)
}

/// An event that made it into the room.
#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: OwnedEventId,
    pub stream_ordering: i64,
}

/// Appends a local user's event to a room. Unknown room, refusal by the auth rules (with the
/// reason), an oversized PDU: each is its own [`EventError`].
pub async fn append_event(
    state: &Base,
    room_id: &RoomId,
    sender: &UserId,
    draft: EventDraft,
    transaction: Option<Transaction<'_>>,
) -> EventResult<Appended> {
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
        let event_id = OwnedEventId::try_from(event_id).map_err(|_| EventError::Internal("a stored event ID"))?;
        return Ok(Appended {
            event_id,
            stream_ordering,
        });
    }
    let mut draft = draft;
    if draft.event_type == "m.room.redaction" {
        check::check_redaction(state, room_id, sender, &mut draft).await?;
    }
    let version = state
        .caches
        .room_version(storage, room_id.as_str())
        .await?
        .ok_or(EventError::UnknownRoom)?;
    let (_, rules) = room_version_rules(&version)?;

    let auth_types = context::auth_types(&draft, sender, &rules)?;
    let mut room_lock = room_lock;
    let mut tries = 0;
    let (context, pdu, event_id, object) = loop {
        let context = context::local_context(state, room_id, &auth_types).await?;
        let references = |ids: &[String]| -> EventResult<Vec<(String, ruma::CanonicalJsonObject)>> {
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
        let prev_refs = references(&context.prev_events)?;
        let auth_refs = references(&context.auth_ids(&auth_types))?;
        let mut object = build_object(
            &draft,
            Some(room_id),
            sender,
            context.depth,
            &prev_refs,
            &auth_refs,
            &rules,
        )?;
        let event_id = finalize(&mut object, &rules, &state.config.server_name, &state.signing_key)?;
        let pdu = to_pdu(&event_id, &object)?;
        authorise::authorise(&rules, &pdu, &context)?;
        if remote_invitee(&draft, &state.config.server_name).is_none() {
            break (context, pdu, event_id, object);
        }
        // The invitee's server signs an invite first. The room is not held meanwhile (that
        // server may be slow); if the room moved on, the invite is built again on its head.
        let countersigner = state
            .countersigner()
            .ok_or_else(|| EventError::forbidden("Inviting users of other servers needs federation, which is off"))?;
        let head = (context.state_before, context.prev_events.clone());
        drop(room_lock);
        let signed = countersigner
            .countersign_invite(room_id, &event_id, &version, object)
            .await
            .map_err(EventError::Forbidden)?;
        room_lock = state.room_locks.lock(room_id).await;
        let now = context::local_context(state, room_id, &auth_types).await?;
        if (now.state_before, now.prev_events.clone()) == head {
            break (context, pdu, event_id, signed);
        }
        tries += 1;
        if tries >= 3 {
            return Err(EventError::forbidden(
                "The room changed while the invitee's server signed the invite; try again",
            ));
        }
    };
    let stream_ordering = persist::persist(
        state,
        context,
        room_id,
        &pdu,
        object,
        &draft,
        transaction.as_ref(),
        room_lock,
    )
    .await?;
    tracing::debug!(%room_id, %event_id, stream_ordering, "persisted event");
    Ok(Appended {
        event_id,
        stream_ordering,
    })
}
