//! What other servers may read of a room: single events, the state at an event, auth chains,
//! missing events and backfill. A server gets only what one of its users could see: it must be
//! in the room (or the room world-readable), and an event whose history visibility was
//! `joined` or `invited` is served whole only if one of its users was joined (or invited) at
//! that event; otherwise it is served redacted, as Synapse does.

use std::collections::{BTreeSet, HashSet, VecDeque};

use hearth_federation::pdu::PduEvent;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName,
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use super::Federation;
use crate::{
    rooms::error::{EventError, EventResult},
    storage::EventRow,
};

/// Most events one backfill or get_missing_events answer carries.
pub const MAX_EVENTS: usize = 100;

impl Federation {
    /// Refuses a server the room's server ACL (`m.room.server_acl`) denies.
    pub async fn check_acl(&self, origin: &ServerName, room_id: &RoomId) -> EventResult<()> {
        let Some(row) = self
            .base
            .storage
            .current_state_event(room_id.as_str(), "m.room.server_acl", "")
            .await?
        else {
            return Ok(());
        };
        let content = serde_json::from_str::<serde_json::Value>(&row.json)
            .ok()
            .and_then(|pdu| {
                serde_json::from_value::<ruma::events::room::server_acl::RoomServerAclEventContent>(
                    pdu["content"].clone(),
                )
                .ok()
            });
        match content {
            Some(acl) if !acl.is_allowed(origin) => Err(EventError::forbidden(
                "The room's server ACL does not allow your server",
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a server with no member in the room (unless the room is world-readable), or
    /// one the room's server ACL denies.
    pub async fn require_server_in_room(&self, origin: &ServerName, room_id: &RoomId) -> EventResult<()> {
        self.check_acl(origin, room_id).await?;
        let servers = self.base.storage.servers_in_room(room_id.as_str()).await?;
        if servers.iter().any(|server| server == origin.as_str()) {
            return Ok(());
        }
        let world_readable = self
            .base
            .storage
            .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .is_some_and(|row| {
                crate::json::content_field(&row.json, "history_visibility").as_deref() == Some("world_readable")
            });
        if world_readable {
            Ok(())
        } else {
            Err(EventError::forbidden("Your server is not in this room"))
        }
    }

    /// An event as `origin` may see it (whole or redacted); `NotFound` if we do not have it
    /// or its server may not see the room.
    pub async fn event_for_server(&self, origin: &ServerName, event_id: &EventId) -> EventResult<Box<RawValue>> {
        let row = self
            .base
            .storage
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| EventError::not_found("Unknown event"))?;
        let room_id = RoomId::parse(&row.room_id).map_err(|_| EventError::internal())?;
        self.require_server_in_room(origin, &room_id).await?;
        let (_, rules) = self.room_rules(&room_id).await?;
        self.visible_pdu(origin, &row, &rules).await
    }

    /// The PDU of `row` for `origin`: redacted when it was redacted, or when none of the
    /// server's users could see it.
    async fn visible_pdu(
        &self,
        origin: &ServerName,
        row: &EventRow,
        rules: &RoomVersionRules,
    ) -> EventResult<Box<RawValue>> {
        let visible = match row.history_visibility.as_str() {
            "joined" | "invited" => self.member_at(origin, row, row.history_visibility == "invited").await?,
            _ => true,
        };
        let object: CanonicalJsonObject = serde_json::from_str(&row.json).map_err(|_| EventError::internal())?;
        let object = if visible && row.redacted_by.is_none() {
            object
        } else {
            ruma::canonical_json::redact(object, &rules.redaction, None).map_err(|_| EventError::internal())?
        };
        RawValue::from_string(CanonicalJsonValue::Object(object).to_string()).map_err(|_| EventError::internal())
    }

    /// Whether a user of `server` was joined (or, with `invited`, invited) at the event.
    async fn member_at(&self, server: &ServerName, row: &EventRow, invited: bool) -> EventResult<bool> {
        let Some(group) = self.base.storage.state_group_after(&row.event_id).await? else {
            return Ok(false);
        };
        let suffix = format!(":{server}");
        let state = self.base.storage.state_group(group).await?;
        let member_ids: Vec<String> = state
            .iter()
            .filter(|((kind, key), _)| kind == "m.room.member" && key.ends_with(&suffix))
            .map(|(_, id)| id.clone())
            .collect();
        for member in self.base.storage.events(&member_ids).await? {
            match crate::json::content_field(&member.json, "membership").as_deref() {
                Some("join") => return Ok(true),
                Some("invite") if invited => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }

    /// The state before `event_id` (as the spec's `/state_ids` means it): IDs of the state
    /// events, and of their auth chain.
    pub async fn state_ids_at(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> EventResult<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let (state, chain) = self.state_at(origin, room_id, event_id).await?;
        let ids = |rows: &[EventRow]| {
            rows.iter()
                .filter_map(|row| OwnedEventId::try_from(row.event_id.as_str()).ok())
                .collect()
        };
        Ok((ids(&state), ids(&chain)))
    }

    /// The state before `event_id` and its auth chain, as PDUs `origin` may see.
    pub async fn state_pdus_at(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> EventResult<(Vec<Box<RawValue>>, Vec<Box<RawValue>>)> {
        let (_, rules) = self.room_rules(room_id).await?;
        let (state, chain) = self.state_at(origin, room_id, event_id).await?;
        let mut pdus = Vec::with_capacity(state.len());
        for row in &state {
            pdus.push(self.visible_pdu(origin, row, &rules).await?);
        }
        let mut auth = Vec::with_capacity(chain.len());
        for row in &chain {
            auth.push(self.visible_pdu(origin, row, &rules).await?);
        }
        Ok((pdus, auth))
    }

    async fn state_at(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> EventResult<(Vec<EventRow>, Vec<EventRow>)> {
        self.require_server_in_room(origin, room_id).await?;
        let storage = &self.base.storage;
        let row = storage
            .event(event_id.as_str())
            .await?
            .filter(|row| row.room_id == room_id.as_str())
            .ok_or_else(|| EventError::not_found("Unknown event"))?;
        let group = storage
            .state_group_after(&row.event_id)
            .await?
            .ok_or_else(|| EventError::not_found("No state is known at that event"))?;
        let mut state = storage.state_group(group).await?;
        // The state after a state event, less the event: the state before it.
        if let Some(key) = &row.state_key {
            let slot = (row.event_type.clone(), key.clone());
            match &row.replaces_state {
                Some(previous) => {
                    state.insert(slot, previous.clone());
                }
                None => {
                    state.remove(&slot);
                }
            }
        }
        let state_rows = storage.events(&state.into_values().collect::<Vec<_>>()).await?;
        let mut roots = Vec::new();
        for row in &state_rows {
            roots.extend(auth_event_ids(row));
        }
        let chain_rows = self.auth_chain(roots).await?;
        Ok((state_rows, chain_rows))
    }

    /// The auth chain of an event, as PDUs.
    pub async fn event_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> EventResult<Vec<Box<RawValue>>> {
        self.require_server_in_room(origin, room_id).await?;
        let row = self
            .base
            .storage
            .event(event_id.as_str())
            .await?
            .filter(|row| row.room_id == room_id.as_str())
            .ok_or_else(|| EventError::not_found("Unknown event"))?;
        self.auth_chain(auth_event_ids(&row))
            .await?
            .into_iter()
            .map(|row| RawValue::from_string(row.json).map_err(|_| EventError::internal()))
            .collect()
    }

    /// Events before `latest` back to (not including) `earliest`, newest first walked,
    /// returned oldest first, at most `limit` and not below `min_depth`.
    pub async fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: i64,
    ) -> EventResult<Vec<Box<RawValue>>> {
        self.require_server_in_room(origin, room_id).await?;
        let stop: HashSet<String> = earliest.iter().map(ToString::to_string).collect();
        let starts: Vec<String> = latest.iter().map(ToString::to_string).collect();
        // Start from the prev events of `latest` (the latest events themselves are known).
        let mut roots = Vec::new();
        for row in self.base.storage.events(&starts).await? {
            if row.room_id == room_id.as_str() {
                roots.extend(prev_event_ids(&row));
            }
        }
        let rows = self
            .walk_back(room_id, roots, &stop, limit.min(MAX_EVENTS), min_depth)
            .await?;
        self.visible_pdus(origin, room_id, rows).await
    }

    /// Events before `from` (included), for a server paging back through history.
    pub async fn backfill(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> EventResult<Vec<Box<RawValue>>> {
        self.require_server_in_room(origin, room_id).await?;
        let roots = from.iter().map(ToString::to_string).collect();
        let rows = self
            .walk_back(room_id, roots, &HashSet::new(), limit.min(MAX_EVENTS), i64::MIN)
            .await?;
        self.visible_pdus(origin, room_id, rows).await
    }

    async fn visible_pdus(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        mut rows: Vec<EventRow>,
    ) -> EventResult<Vec<Box<RawValue>>> {
        let (_, rules) = self.room_rules(room_id).await?;
        rows.sort_by_key(|row| (row.depth, row.stream_ordering));
        let mut pdus = Vec::with_capacity(rows.len());
        for row in &rows {
            pdus.push(self.visible_pdu(origin, row, &rules).await?);
        }
        Ok(pdus)
    }

    /// Walks the DAG back from `roots` through prev events, breadth first (newest depth
    /// first), stopping at `stop` and `min_depth`, collecting at most `limit` events.
    async fn walk_back(
        &self,
        room_id: &RoomId,
        roots: Vec<String>,
        stop: &HashSet<String>,
        limit: usize,
        min_depth: i64,
    ) -> EventResult<Vec<EventRow>> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<String> = roots.into_iter().collect();
        let mut found = Vec::new();
        while !queue.is_empty() && found.len() < limit {
            let batch: Vec<String> = queue
                .drain(..)
                .filter(|id| !stop.contains(id) && seen.insert(id.clone()))
                .collect();
            let mut rows = self.base.storage.events(&batch).await?;
            rows.sort_by_key(|row| std::cmp::Reverse(row.depth));
            for row in rows {
                if found.len() >= limit {
                    break;
                }
                if row.room_id != room_id.as_str() || row.depth < min_depth {
                    continue;
                }
                queue.extend(prev_event_ids(&row));
                found.push(row);
            }
        }
        Ok(found)
    }
}

fn pdu_of(row: &EventRow) -> Option<PduEvent> {
    PduEvent::from_json(OwnedEventId::try_from(row.event_id.as_str()).ok()?, &row.json, false).ok()
}

fn auth_event_ids(row: &EventRow) -> Vec<String> {
    pdu_of(row).map_or_else(Vec::new, |pdu| {
        pdu.auth_events.iter().map(ToString::to_string).collect()
    })
}

fn prev_event_ids(row: &EventRow) -> Vec<String> {
    pdu_of(row).map_or_else(Vec::new, |pdu| {
        pdu.prev_events.iter().map(ToString::to_string).collect()
    })
}
