//! What a client sends into a room, however it arrives (REST or WebSocket): message events,
//! idempotent per device and transaction ID, and state events, with the checks the REST
//! endpoints promise.

use ruma::{OwnedEventId, RoomAliasId, RoomId};
use serde_json::{Map, Value};

use super::error::{EventError, EventResult};
use super::pipeline::{EventDraft, Transaction, append_event};
use crate::{accounts::sessions::Sender, base::Base};

/// Sends a message event (`PUT /rooms/{roomId}/send/{eventType}/{txnId}`). Transaction IDs
/// are scoped per device and `endpoint` (`send` for REST, `ws_send` for the WebSocket);
/// `origin_server_ts` is an appservice's massaged timestamp.
pub async fn send_message(
    state: &Base,
    sender: &Sender,
    room_id: &RoomId,
    event_type: &str,
    content: Map<String, Value>,
    transaction: Transaction<'_>,
    origin_server_ts: Option<i64>,
) -> EventResult<Sent> {
    if let Some(event_id) = limit_sends(state, sender, room_id, Some(&transaction)).await? {
        return Ok(Sent {
            event_id,
            appended: false,
        });
    }
    let draft = EventDraft {
        event_type: event_type.to_owned(),
        state_key: None,
        content: Value::Object(content),
        redacts: None,
        origin_server_ts,
    };
    let appended = append_event(state, room_id, &sender.user_id, draft, Some(transaction)).await?;
    Ok(Sent {
        event_id: appended.event_id,
        appended: true,
    })
}

/// A message sent (or found sent already).
pub struct Sent {
    pub event_id: OwnedEventId,
    /// Whether it went through the pipeline: false when a rate-limited retry of a
    /// transaction was answered with the event it had made before (the sender counts as
    /// active only when the request did something).
    pub appended: bool,
}

/// Takes a token from the sender's `rate_limits.message` bucket. Over the limit, the retry
/// of a transaction that already went through still gets its event (`Some`): only then is
/// the database asked.
pub async fn limit_sends(
    state: &Base,
    sender: &Sender,
    room_id: &RoomId,
    transaction: Option<&Transaction<'_>>,
) -> EventResult<Option<OwnedEventId>> {
    let limits = &state.rate_limits;
    let Err(limited) = limits.check_user(&limits.message, sender) else {
        return Ok(None);
    };
    let Some(txn) = transaction else {
        return Err(limited.into());
    };
    let earlier = state
        .storage
        .event_for_transaction(
            sender.user_id.as_str(),
            txn.device_id,
            room_id.as_str(),
            txn.endpoint,
            txn.txn_id,
        )
        .await?;
    match earlier {
        Some(event_id) => Ok(Some(
            OwnedEventId::try_from(event_id).map_err(|_| EventError::internal())?,
        )),
        None => Err(limited.into()),
    }
}

/// Sends a state event (`PUT /rooms/{roomId}/state/{eventType}/{stateKey}`). Membership
/// changes other than updating one's own join go through the membership endpoints.
pub async fn send_state(
    state: &Base,
    sender: &Sender,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
    content: Map<String, Value>,
    origin_server_ts: Option<i64>,
) -> EventResult<OwnedEventId> {
    if event_type == "m.room.member" {
        // Membership goes through /join, /invite, /leave…, which check what it means.
        let Some(membership) = content.get("membership").and_then(Value::as_str) else {
            return Err(EventError::bad_json("m.room.member content needs a membership"));
        };
        // Vouching for restricted joins is the server's job, never the client's.
        if content.contains_key("join_authorised_via_users_server") {
            return Err(EventError::forbidden(
                "join_authorised_via_users_server is set by the server",
            ));
        }
        // Joining goes through /join, which checks restricted rooms and invites; a member may
        // still update their own join event (a per-room display name, say).
        let current = state.storage.membership(room_id.as_str(), state_key).await?;
        if membership == "join" && current.as_deref() != Some("join") {
            return Err(EventError::forbidden("Use /join to join a room"));
        }
        if membership == "invite" && !state_key.ends_with(&format!(":{}", state.config.server_name)) {
            return Err(EventError::forbidden(
                "Inviting users of other servers needs federation, not supported yet",
            ));
        }
        // An invite sent as a state event is an invite: the same guest rule and limits as
        // /invite.
        if membership == "invite" && current.as_deref() != Some("invite") {
            if sender.is_guest {
                return Err(EventError::GuestForbidden("Guest accounts cannot invite".to_owned()));
            }
            state.rate_limits.check_invite(sender, state_key)?;
        }
    }
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(state, room_id, &content).await?;
    }
    // The same state again, by the same member, is no new event: the client gets the one in
    // place (as Synapse), and the room no extra event.
    if let Some(existing) = state
        .storage
        .current_state_entries(room_id.as_str(), &[(event_type.to_owned(), state_key.to_owned())])
        .await?
        .into_values()
        .next()
        && let Some(row) = state.storage.event(&existing).await?
        && row.sender == sender.user_id.as_str()
        && row.redacted_by.is_none()
        && serde_json::from_str::<Value>(&row.json).is_ok_and(|pdu| pdu["content"] == Value::Object(content.clone()))
        && state
            .storage
            .membership(room_id.as_str(), sender.user_id.as_str())
            .await?
            .as_deref()
            == Some("join")
    {
        return OwnedEventId::try_from(existing).map_err(|_| EventError::internal());
    }
    limit_sends(state, sender, room_id, None).await?;
    let draft = EventDraft {
        origin_server_ts,
        ..EventDraft::state(event_type, state_key, Value::Object(content))
    };
    let appended = append_event(state, room_id, &sender.user_id, draft, None).await?;
    if event_type == "m.room.guest_access" {
        super::membership::remove_guests_if_closed(state, room_id).await?;
    }
    Ok(appended.event_id)
}

/// `m.room.canonical_alias` names only valid aliases that point to this room (spec: 400
/// `M_BAD_ALIAS` otherwise); those the current event already names are not checked again.
/// New aliases of other servers cannot be checked without federation and are refused.
async fn check_canonical_alias(state: &Base, room_id: &RoomId, content: &Map<String, Value>) -> EventResult<()> {
    let bad = EventError::BadAlias;
    let mut aliases: Vec<&Value> = Vec::new();
    if let Some(alias) = content.get("alias") {
        aliases.push(alias);
    }
    match content.get("alt_aliases") {
        None => {}
        Some(Value::Array(alt)) => aliases.extend(alt),
        Some(_) => return Err(EventError::bad_json("alt_aliases must be a list of aliases")),
    }
    // Aliases the event already names stay as they are (as Synapse checks only new ones): a
    // stale or remote one must not block every later edit, its own removal included.
    let current: Vec<String> = match state
        .storage
        .current_state_event(room_id.as_str(), "m.room.canonical_alias", "")
        .await?
    {
        Some(row) => {
            let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
            let content = &pdu["content"];
            std::iter::once(&content["alias"])
                .chain(content["alt_aliases"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        }
        None => Vec::new(),
    };
    for alias in aliases {
        let Some(alias) = alias.as_str() else {
            return Err(EventError::bad_json("Aliases must be strings"));
        };
        if current.iter().any(|known| known == alias) {
            continue;
        }
        let parsed = RoomAliasId::parse(alias).map_err(|_| bad(format!("{alias} is not a valid room alias")))?;
        if parsed.server_name() != state.config.server_name {
            return Err(bad(format!("{alias} is on another server and cannot be checked")));
        }
        match state.storage.alias(alias).await? {
            Some((target, _)) if target == room_id.as_str() => {}
            _ => return Err(bad(format!("{alias} does not point to this room"))),
        }
    }
    Ok(())
}
