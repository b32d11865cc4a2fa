//! `/sync` (v3): everything that changed for one user since a token, as one JSON document, and
//! the long-poll that waits for the first change.
//!
//! The same computation feeds the WebSocket transport, which pushes what this returns.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::filter::{EventFormat, FilterDefinition, LazyLoadOptions, RoomEventFilter},
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    filter::{event_allowed, room_allowed, room_event_allowed, timeline_limit},
    window::{RoomWindow, Timeline, scan_timeline, state_delta, window_delta},
};
use crate::{
    accounts::sessions::Sender,
    e2ee::{TO_DEVICE_PER_SYNC, sync_e2ee},
    ephemeral::presence::presence_content,
    error::{ApiError, ApiResult},
    rooms::{
        access::{content_field, membership_access},
        client_event::{federation_event, render_events},
    },
    services::Services,
    storage::{EventRow, MembershipRow, ReceiptRow, StateMap},
    streams::{Stream, StreamToken},
};

/// State sent in an invite or knock, so the client can show the room before joining.
/// What a client asked of one sync.
pub struct SyncRequest {
    pub since: Option<StreamToken>,
    pub filter: FilterDefinition,
    pub full_state: bool,
    /// To-device messages up to this position are acknowledged (deleted). None: those the
    /// `since` token covers, as for `/sync`, where presenting a token proves receipt.
    pub to_device_acknowledged: Option<i64>,
}

/// One computed sync response and what it covered.
pub struct SyncResult {
    pub body: Value,
    pub next: StreamToken,
    /// Nothing to report: a long-poll keeps waiting.
    pub empty: bool,
    /// The keys to wait on next time: the user and their joined or invited rooms.
    pub keys: Vec<String>,
    /// More to-device messages wait than one response carries: compute again at once.
    pub more_to_device: bool,
}

/// Serves `/sync`: computes the response, and if an incremental sync has nothing to say,
/// waits (up to `timeout`) for the notifier to report a change that concerns the user.
pub async fn sync(
    state: &Services,
    sender: &Sender,
    request: &SyncRequest,
    timeout: Duration,
) -> ApiResult<SyncResult> {
    let deadline = Instant::now() + timeout;
    let mut keys = state.listen_keys(&sender.user_id).await?;
    loop {
        // Listen before reading positions: a change committed after this point wakes us even
        // if it lands while the response is being computed.
        let listener = state.notifier.listen(keys.clone());
        let may_wait = !request.full_state && !state.notifier.is_closing() && Instant::now() < deadline;
        if may_wait && request.since == Some(state.notifier.current()) {
            // The client is caught up on every stream: nothing to compute until one moves.
            tokio::select! {
                () = listener.changed() => continue,
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        // Boxed: a parked long-poll then holds a pointer, not the whole computation's state.
        let result = Box::pin(compute(state, sender, request)).await?;
        let done = !result.empty || request.since.is_none() || request.full_state || Instant::now() >= deadline;
        if done || state.notifier.is_closing() {
            return Ok(result);
        }
        keys = result.keys.clone();
        tokio::select! {
            () = listener.changed() => {}
            () = tokio::time::sleep_until(deadline) => {
                return Ok(result);
            }
        }
    }
}

/// Computes one response, without waiting.
pub async fn compute(state: &Services, sender: &Sender, request: &SyncRequest) -> ApiResult<SyncResult> {
    let now = state.notifier.current();
    let since = request.since.map(|since| since.clamp_to(&now));
    let user_id = sender.user_id.as_str();
    let filter = &request.filter;
    let storage = &state.storage;

    let memberships = memberships_at(state, user_id, now.events()).await?;
    let ignored = ignored_users(state, user_id).await?;
    let mut keys: Vec<String> = memberships
        .iter()
        .filter(|m| matches!(m.membership.as_str(), "join" | "invite" | "knock"))
        .map(|m| m.room_id.clone())
        .collect();
    keys.push(user_id.to_owned());

    // What moved since the token, per room.
    let after = |stream: Stream| since.map_or(0, |s| s.get(stream));
    let rooms_with_events: HashSet<String> = match since {
        Some(since) if !request.full_state => storage
            .member_rooms_with_events(user_id, since.events(), now.events())
            .await?
            .into_iter()
            .collect(),
        _ => HashSet::new(),
    };
    let mut receipts: HashMap<String, Vec<ReceiptRow>> = HashMap::new();
    if state.notifier.position(Stream::Receipts) > after(Stream::Receipts) {
        for receipt in storage
            .receipts_since(user_id, after(Stream::Receipts), now.get(Stream::Receipts))
            .await?
        {
            receipts.entry(receipt.room_id.clone()).or_default().push(receipt);
        }
    }
    let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
    let mut global_account_data = Vec::new();
    let account_data = if now.get(Stream::AccountData) > after(Stream::AccountData) {
        storage.account_data_since(user_id, after(Stream::AccountData)).await?
    } else {
        Vec::new()
    };
    for entry in account_data
        .into_iter()
        .filter(|entry| entry.stream_position <= now.get(Stream::AccountData))
    {
        let content: Value = serde_json::from_str(&entry.content).unwrap_or_else(|_| json!({}));
        let event = json!({ "type": entry.data_type, "content": content });
        if entry.room_id.is_empty() {
            if event_allowed(&filter.account_data, &entry.data_type, None) {
                global_account_data.push(event);
            }
        } else if room_event_allowed(&filter.room.account_data, &entry.data_type, user_id) {
            room_account_data.entry(entry.room_id).or_default().push(event);
        }
    }

    // A first sync always carries the push rules, stored or not (clients read them from here).
    if since.is_none() && event_allowed(&filter.account_data, crate::push::PUSH_RULES, None) {
        crate::push::add_initial_rules(state, &sender.user_id, &mut global_account_data).await?;
    }

    let mut join = Map::new();
    let mut invite = Map::new();
    let mut knock = Map::new();
    let mut leave = Map::new();
    let mut delivered = Vec::new();
    for membership in &memberships {
        let room_id = membership.room_id.as_str();
        let changed = since.is_none_or(|since| membership.stream_ordering > since.events());
        match membership.membership.as_str() {
            "join" => {
                if !room_allowed(&filter.room, &filter.room.timeline, room_id) {
                    continue;
                }
                // Who is typing, if that changed (an initial sync shows only a non-empty list).
                let typing = state
                    .typing
                    .changed_between(room_id, after(Stream::Typing), now.get(Stream::Typing))
                    .filter(|users| since.is_some() || !users.is_empty());
                // A room joined with partial state whose state became whole since the token.
                let state_reset = since.is_some()
                    && state.federation.as_ref().is_some_and(|federation| {
                        federation
                            .partial
                            .reset_between(room_id, after(Stream::Typing), now.get(Stream::Typing))
                    });
                let interesting = since.is_none()
                    || request.full_state
                    || state_reset
                    || changed
                    || rooms_with_events.contains(room_id)
                    || receipts.contains_key(room_id)
                    || room_account_data.contains_key(room_id)
                    || typing.is_some();
                if !interesting {
                    continue;
                }
                // A room joined since the token is new to the client: its latest events and
                // full state. A membership event that is only a profile change is not a join.
                let newly_joined = match since {
                    None => true,
                    Some(since) => {
                        state_reset || (changed && !joined_at(state, room_id, user_id, since.events()).await?)
                    }
                };
                let room = RoomWindow {
                    room_id,
                    after: if newly_joined { None } else { since.map(|s| s.events()) },
                    until: now.events(),
                    since_events: since.map(|s| s.events()),
                    full_state: request.full_state,
                };
                let mut body = room_body(state, sender, filter, &room, &ignored).await?;
                for newest in std::mem::take(&mut body.delivered) {
                    delivered.push((room_id.to_owned(), newest));
                }
                let mut ephemeral = Vec::new();
                if room_allowed(&filter.room, &filter.room.ephemeral, room_id) {
                    if let Some(users) = typing
                        && room_event_allowed(&filter.room.ephemeral, "m.typing", user_id)
                    {
                        ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
                    }
                    if let Some(rows) = receipts.get(room_id)
                        && room_event_allowed(&filter.room.ephemeral, "m.receipt", user_id)
                    {
                        ephemeral.push(receipt_event(rows));
                    }
                }
                let account_data = room_account_data.remove(room_id).unwrap_or_default();
                let mut entry = body.section;
                if !ephemeral.is_empty() {
                    entry.insert("ephemeral".into(), json!({ "events": ephemeral }));
                }
                if !account_data.is_empty() {
                    entry.insert("account_data".into(), json!({ "events": account_data }));
                }
                if entry.is_empty() {
                    continue;
                }
                if since.is_none() || changed || body.members_changed {
                    let summary = storage.room_summary(room_id, user_id).await?;
                    let mut fields = json!({
                        "m.joined_member_count": summary.joined,
                        "m.invited_member_count": summary.invited,
                    });
                    // Heroes name a room that has no name of its own (spec: only then).
                    let named = match body.named {
                        Some(named) => named,
                        None => has_name_or_alias(state, room_id).await?,
                    };
                    if !named {
                        fields["m.heroes"] = json!(summary.heroes);
                    }
                    entry.insert("summary".into(), fields);
                }
                entry
                    .entry("timeline")
                    .or_insert_with(|| json!({ "events": [], "limited": false }));
                entry.entry("state").or_insert_with(|| json!({ "events": [] }));
                entry.entry("ephemeral").or_insert_with(|| json!({ "events": [] }));
                entry.entry("account_data").or_insert_with(|| json!({ "events": [] }));
                join.insert(room_id.to_owned(), Value::Object(entry));
            }
            kind @ ("invite" | "knock") if changed || request.full_state => {
                if !room_allowed(&filter.room, &RoomEventFilter::default(), room_id) {
                    continue;
                }
                let Some(event) = storage.event(&membership.event_id).await? else {
                    continue;
                };
                if kind == "invite" && ignored.contains(&event.sender) {
                    continue;
                }
                let stripped = stripped_state(state, room_id, &event).await?;
                if kind == "invite" {
                    invite.insert(room_id.to_owned(), json!({ "invite_state": { "events": stripped } }));
                } else {
                    knock.insert(room_id.to_owned(), json!({ "knock_state": { "events": stripped } }));
                }
            }
            "leave" | "ban" => {
                let wanted = match since {
                    // Left since the token: the client must learn it.
                    Some(_) => changed,
                    None => filter.room.include_leave,
                };
                if !wanted || !room_allowed(&filter.room, &filter.room.timeline, room_id) {
                    continue;
                }
                // Joined and left since the token: the client never saw the room, so its
                // whole state (as of the leave) comes with it.
                let after = match since {
                    Some(since) if joined_at(state, room_id, user_id, since.events()).await? => Some(since.events()),
                    _ => None,
                };
                let room = RoomWindow {
                    room_id,
                    after,
                    until: membership.stream_ordering,
                    since_events: since.map(|s| s.events()),
                    full_state: request.full_state,
                };
                let body = room_body(state, sender, filter, &room, &ignored).await?;
                let mut entry = body.section;
                entry
                    .entry("timeline")
                    .or_insert_with(|| json!({ "events": [], "limited": false }));
                entry.entry("state").or_insert_with(|| json!({ "events": [] }));
                entry.insert(
                    "account_data".into(),
                    json!({ "events": room_account_data.remove(room_id).unwrap_or_default() }),
                );
                leave.insert(room_id.to_owned(), Value::Object(entry));
            }
            _ => {}
        }
    }

    // Unread counts of the joined rooms shown, once evaluation has caught up with them.
    if !join.is_empty() {
        let by_thread = filter.room.timeline.unread_thread_notifications;
        let rooms: Vec<&str> = join.keys().map(String::as_str).collect();
        let counts = state
            .push
            .unread_counts(&sender.user_id, &rooms, now.events(), by_thread)
            .await?;
        for (room_id, entry) in join.iter_mut() {
            let Value::Object(entry) = entry else { continue };
            entry.insert("unread_notifications".into(), counts.room(room_id).to_json());
            if by_thread {
                let threads = counts.threads_json(room_id).unwrap_or_else(|| json!({}));
                entry.insert("unread_thread_notifications".into(), threads);
            }
        }
    }

    let mut presence = Vec::new();
    if state.config.presence.enabled && now.get(Stream::Presence) > after(Stream::Presence) {
        for row in storage
            .presence_since(user_id, after(Stream::Presence), now.get(Stream::Presence))
            .await?
        {
            if ignored.contains(&row.user_id) || !event_allowed(&filter.presence, "m.presence", Some(&row.user_id)) {
                continue;
            }
            presence.push(json!({ "type": "m.presence", "sender": row.user_id, "content": presence_content(&row) }));
        }
    }
    // Users who newly share a room with the viewer (or no longer share one): their presence,
    // though it did not change, and their device lists.
    let sharing = match since {
        Some(since) => crate::e2ee::sharing_changes(state, user_id, since.events(), now.events()).await?,
        None => Default::default(),
    };
    if state.config.presence.enabled && !sharing.0.is_empty() {
        let already: HashSet<String> = presence
            .iter()
            .filter_map(|event| event["sender"].as_str().map(str::to_owned))
            .collect();
        let wanted: Vec<&str> = sharing
            .0
            .iter()
            .filter(|user| !already.contains(*user) && !ignored.contains(*user))
            .filter(|user| event_allowed(&filter.presence, "m.presence", Some(user)))
            .map(String::as_str)
            .collect();
        for row in storage.presence_of(&wanted).await? {
            presence.push(json!({ "type": "m.presence", "sender": row.user_id, "content": presence_content(&row) }));
        }
    }

    let e2ee = sync_e2ee(
        state,
        sender,
        since.as_ref(),
        (request.to_device_acknowledged, after(Stream::ToDevice)),
        &now,
        TO_DEVICE_PER_SYNC,
        sharing,
    )
    .await?;
    let device_lists = e2ee.device_lists();
    let mut next = now;
    next.set(Stream::ToDevice, e2ee.to_device_next);

    let empty = join.is_empty()
        && invite.is_empty()
        && knock.is_empty()
        && leave.is_empty()
        && presence.is_empty()
        && global_account_data.is_empty()
        && e2ee.is_empty();
    let body = json!({
        "next_batch": next.to_string(),
        "rooms": { "join": join, "invite": invite, "knock": knock, "leave": leave },
        "presence": { "events": presence },
        "account_data": { "events": global_account_data },
        "to_device": { "events": e2ee.to_device },
        "device_lists": device_lists,
        "device_one_time_keys_count": e2ee.one_time_key_counts,
        "device_unused_fallback_key_types": e2ee.unused_fallback_key_types,
    });
    if state.config.sync.delivery_receipts && !delivered.is_empty() {
        record_delivery(state, &sender.user_id, delivered);
    }
    Ok(SyncResult {
        body,
        more_to_device: next.get(Stream::ToDevice) < now.get(Stream::ToDevice),
        next,
        empty,
        keys,
    })
}

/// The user's membership in every room as of event position `until`: a membership event
/// committed after the token was read belongs to the next sync.
pub(super) async fn memberships_at(state: &Services, user_id: &str, until: i64) -> ApiResult<Vec<MembershipRow>> {
    let (storage, caches) = (&state.storage, &state.caches);
    let mut memberships = Vec::clone(&*caches.user_memberships(storage, user_id).await?);
    for membership in &mut memberships {
        if membership.stream_ordering <= until {
            continue;
        }
        let history = caches.membership_history(storage, &membership.room_id, user_id).await?;
        match history.iter().rev().find(|event| event.stream_ordering <= until) {
            // A leave the user forgot stays forgotten, though a newer membership (past this
            // response) brought the room back into the list.
            Some(event)
                if matches!(event.membership.as_str(), "leave" | "ban")
                    && storage.forgotten_at(&membership.room_id, user_id).await?.as_deref()
                        == Some(event.event_id.as_str()) =>
            {
                membership.membership.clear();
            }
            Some(event) => {
                membership.membership.clone_from(&event.membership);
                membership.stream_ordering = event.stream_ordering;
                membership.event_id.clone_from(&event.event_id);
            }
            None => membership.membership.clear(),
        }
    }
    memberships.retain(|m| !m.membership.is_empty());
    memberships.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    Ok(memberships)
}

/// Users whose events the user does not want to see (`m.ignored_user_list`).
pub async fn ignored_users(state: &Services, user_id: &str) -> ApiResult<Arc<HashSet<String>>> {
    Ok(state.caches.ignored_users(&state.storage, user_id).await?)
}

struct RoomBody {
    section: Map<String, Value>,
    /// For delivery receipts: each other sender's newest message (not state) in the timeline.
    delivered: Vec<Delivered>,
    /// Member events changed (the summary is resent).
    members_changed: bool,
    /// For a fresh view: whether the room has a name or canonical alias (None: not known).
    named: Option<bool>,
}

/// A room's `timeline` and `state` for one window.
async fn room_body(
    state: &Services,
    sender: &Sender,
    filter: &FilterDefinition,
    window: &RoomWindow<'_>,
    ignored: &HashSet<String>,
) -> ApiResult<RoomBody> {
    let storage = &state.storage;
    let room_filter = &filter.room;
    let room_id = RoomId::parse(window.room_id).map_err(|_| ApiError::internal())?;
    let access = membership_access(state, &room_id, &sender.user_id).await?;
    let limit = timeline_limit(&room_filter.timeline);
    let window_scan = scan_timeline(
        state,
        &access,
        window.room_id,
        window.after.unwrap_or(0),
        window.until,
        limit,
        |row| {
            room_event_allowed(&room_filter.timeline, &row.event_type, &row.sender)
                && (row.state_key.is_some() || !ignored.contains(&row.sender))
        },
    )
    .await?;
    let Timeline {
        rows: timeline_rows,
        limited,
        start,
        complete: window_scan_complete,
        saw_state,
        window_state,
    } = window_scan;

    // State: what the client needs, with the timeline, to hold the room's state at the window's
    // end (for a fresh view all of it, else what changed since the token). Someone who was
    // never in the room (banned or uninvited before joining) sees no state.
    let fresh = window.after.is_none() || window.full_state;
    let mut state_map = StateMap::new();
    if access.ever_joined() {
        if fresh || !window_scan_complete {
            state_map = state_delta(state, window, start, &timeline_rows, &window_state, fresh).await?;
        } else if saw_state {
            // Every event since the token was looked at: the delta is in them, no state
            // needs loading (a busy room's member events must not cost each sync its state).
            state_map = window_delta(&window_state, start, &timeline_rows);
        }
    }
    let lazy = !room_filter.state.lazy_load_options.is_disabled();
    if lazy {
        // Members for the timeline's senders (and the user), as of the timeline's start; a
        // fresh view holds no others, an incremental one also every member change in the gap
        // (leaves included: the client must drop those members).
        let mut senders: HashSet<&str> = timeline_rows.iter().map(|row| row.sender.as_str()).collect();
        senders.insert(sender.user_id.as_str());
        if fresh {
            state_map.retain(|(kind, key), _| kind != "m.room.member" || senders.contains(key.as_str()));
        } else {
            for member in senders {
                let key = ("m.room.member".to_owned(), member.to_owned());
                if !state_map.contains_key(&key)
                    && let Some(id) = state
                        .caches
                        .current_member_event(storage, window.room_id, member)
                        .await?
                {
                    state_map.insert(key, id);
                }
            }
        }
    }
    let (user_id, device_id) = (sender.user_id.as_str(), sender.device_id.as_str());
    let dedupe_members = matches!(
        room_filter.state.lazy_load_options,
        LazyLoadOptions::Enabled {
            include_redundant_members: false
        }
    );
    if dedupe_members
        && !fresh
        && let Some(since) = window.since_events
    {
        // Members the client already holds (from a response it acknowledged) are not resent.
        let mut unsent: Vec<String> = state_map
            .iter()
            .filter(|((kind, _), _)| kind == "m.room.member")
            .map(|(_, id)| id.clone())
            .collect();
        state.caches.unsent_members(user_id, device_id, since, &mut unsent);
        state_map.retain(|(kind, _), id| kind != "m.room.member" || unsent.contains(id));
    }
    let in_timeline: HashSet<&str> = timeline_rows.iter().map(|row| row.event_id.as_str()).collect();
    let state_ids: Vec<String> = state_map
        .into_values()
        .filter(|id| !in_timeline.contains(id.as_str()))
        .collect();
    let mut state_rows: Vec<EventRow> = storage.events(&state_ids).await?;
    state_rows.retain(|row| row.stream_ordering <= window.until);
    // A fresh view holds the whole state (before the filter): whether the room is named is in
    // it, with no query for the summary.
    let named = (fresh && access.ever_joined()).then(|| named_in(&state_rows, &timeline_rows));
    state_rows.retain(|row| room_event_allowed(&room_filter.state, &row.event_type, &row.sender));

    let version = state
        .caches
        .room_version(storage, window.room_id)
        .await?
        .ok_or_else(ApiError::internal)?;
    if dedupe_members {
        let members = timeline_rows
            .iter()
            .chain(&state_rows)
            .filter(|row| row.event_type == "m.room.member")
            .map(|row| row.event_id.clone());
        state.caches.members_sent(user_id, device_id, window.until, members);
    }
    let mut timeline = render_events(state, &timeline_rows, &version, &sender.user_id, device_id).await?;
    let mut state_events = render_events(state, &state_rows, &version, &sender.user_id, device_id).await?;
    if filter.event_format == EventFormat::Federation {
        for (rows, events) in [(&timeline_rows, &mut timeline), (&state_rows, &mut state_events)] {
            for (row, event) in rows.iter().zip(events.iter_mut()) {
                *event = federation_event(row, event);
            }
        }
    }
    let members_changed = timeline_rows
        .iter()
        .chain(&state_rows)
        .any(|row| row.event_type == "m.room.member");
    let delivered = delivered_messages(&timeline_rows, sender.user_id.as_str());

    let mut section = Map::new();
    if !timeline.is_empty() || limited || fresh {
        section.insert(
            "timeline".into(),
            json!({ "events": timeline, "limited": limited, "prev_batch": format!("s{start}") }),
        );
    }
    if !state_events.is_empty() {
        section.insert("state".into(), json!({ "events": state_events }));
    }
    Ok(RoomBody {
        section,
        delivered,
        members_changed,
        named,
    })
}

/// The stripped state of a room for an invite or knock: a few descriptive events and the
/// membership event itself.
pub(super) async fn stripped_state(
    state: &Services,
    room_id: &str,
    membership_event: &EventRow,
) -> ApiResult<Vec<Value>> {
    Ok(crate::rooms::membership::stripped_state(state, room_id, membership_event).await?)
}

/// An `m.receipt` event from receipt rows: event → type → user → {ts, thread_id}.
pub fn receipt_event(rows: &[ReceiptRow]) -> Value {
    let mut content: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, Value>>> = BTreeMap::new();
    for row in rows {
        let mut receipt = json!({ "ts": row.ts });
        if !row.thread_id.is_empty() {
            receipt["thread_id"] = Value::from(row.thread_id.as_str());
        }
        content
            .entry(row.event_id.as_str())
            .or_default()
            .entry(row.receipt_type.as_str())
            .or_default()
            .insert(row.user_id.as_str(), receipt);
    }
    json!({ "type": "m.receipt", "content": content })
}

/// An event handed to one of the user's devices.
pub(super) struct Delivered {
    event_id: String,
    stream_ordering: i64,
    sender: String,
}

/// Each other sender's newest message in a timeline: what delivery receipts record.
pub(super) fn delivered_messages(rows: &[EventRow], viewer: &str) -> Vec<Delivered> {
    let mut seen = HashSet::new();
    rows.iter()
        .rev()
        .filter(|row| row.sender != viewer && row.state_key.is_none())
        .filter(|row| seen.insert(row.sender.as_str()))
        .map(|row| Delivered {
            event_id: row.event_id.clone(),
            stream_ordering: row.stream_ordering,
            sender: row.sender.clone(),
        })
        .collect()
}

/// Whether the state rows, then the timeline applied over them, leave the room a non-empty
/// name or canonical alias.
fn named_in(state_rows: &[EventRow], timeline: &[EventRow]) -> bool {
    let (mut name, mut alias) = (false, false);
    for row in state_rows.iter().chain(timeline) {
        let field = match (row.event_type.as_str(), row.state_key.as_deref()) {
            ("m.room.name", Some("")) => "name",
            ("m.room.canonical_alias", Some("")) => "alias",
            _ => continue,
        };
        let set = row.redacted_by.is_none() && content_field(&row.json, field).is_some_and(|value| !value.is_empty());
        if field == "name" {
            name = set;
        } else {
            alias = set;
        }
    }
    name || alias
}

/// Whether the room has a non-empty `m.room.name` or `m.room.canonical_alias`.
async fn has_name_or_alias(state: &Services, room_id: &str) -> ApiResult<bool> {
    Ok(state
        .storage
        .name_and_alias_events(room_id)
        .await?
        .iter()
        .any(|(event_type, json)| {
            let field = if event_type == "m.room.name" { "name" } else { "alias" };
            content_field(json, field).is_some_and(|value| !value.is_empty())
        }))
}

/// Whether the user was joined to the room at event position `position`.
async fn joined_at(state: &Services, room_id: &str, user_id: &str, position: i64) -> ApiResult<bool> {
    let history = state
        .caches
        .membership_history(&state.storage, room_id, user_id)
        .await?;
    Ok(history
        .iter()
        .rev()
        .find(|event| event.stream_ordering <= position)
        .is_some_and(|event| event.membership == "join"))
}

/// Records, off the response path, that the user's device now holds these events (written in
/// batches by [`crate::ephemeral::delivery`], which tells their senders).
pub(super) fn record_delivery(state: &Services, user_id: &UserId, delivered: Vec<(String, Delivered)>) {
    for (room_id, event) in delivered {
        state.deliveries.record(
            user_id.as_str(),
            &room_id,
            &event.sender,
            &event.event_id,
            event.stream_ordering,
        );
    }
}

/// Parses a room ID from storage.
pub fn owned_room_id(room_id: &str) -> ApiResult<OwnedRoomId> {
    OwnedRoomId::try_from(room_id).map_err(|_| ApiError::internal())
}
