//! Simplified sliding sync (MSC4186), the sync Element X uses:
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//!
//! The server keeps, per user, device and `conn_id`, what it has sent on the connection (which
//! rooms, with which timeline limit and required state) under each `pos` it handed out. A
//! request names the `pos` it continues from; the answer holds only what changed since. The
//! last two positions are kept, so a retried request (lost response) is answered again; an
//! older or foreign `pos` gets `M_UNKNOWN_POS` and the client starts over.

mod connections;
mod extensions;
mod filters;
mod request;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::atomic::Ordering,
    time::Duration,
};

use ruma::RoomId;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

pub use self::{connections::Connections, request::SlidingRequest};
use self::{
    connections::{ConnState, POS_SEQUENCE, SentRoom},
    extensions::extensions,
    filters::RoomFacts,
    request::{Combined, RequiredState},
};
use super::{
    v3::{Delivered, delivered_messages, record_delivery, stripped_state},
    window::{scan_timeline, state_before},
};
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
    rooms::{access::membership_access, client_event::render_events},
    services::Services,
    storage::{EventRow, RoomActivity, StateMap},
};

/// The most lists and room subscriptions one request may hold (MSC4186).
const MAX_LISTS: usize = 100;
const MAX_SUBSCRIPTIONS: usize = 100;

/// Event types that move a room's `bump_stamp`.
const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// Longest `conn_id` accepted.
const MAX_CONN_ID_BYTES: usize = 255;

/// Serves one request: computes the answer, and when it continues a connection and has
/// nothing new, waits up to `timeout` for a change.
pub async fn sliding_sync(
    state: &Services,
    connections: &Connections,
    sender: &Sender,
    request: SlidingRequest,
) -> ApiResult<Value> {
    if request.lists.len() > MAX_LISTS || request.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(ApiError::invalid_param(format!(
            "At most {MAX_LISTS} lists and {MAX_SUBSCRIPTIONS} room subscriptions"
        )));
    }
    // The server keeps state per conn_id: a name, not a payload.
    if request.conn_id.as_ref().is_some_and(|id| id.len() > MAX_CONN_ID_BYTES) {
        return Err(ApiError::invalid_param(format!(
            "conn_id is at most {MAX_CONN_ID_BYTES} bytes"
        )));
    }
    let key = (
        sender.user_id.to_string(),
        sender.device_id.to_string(),
        request.conn_id.clone().unwrap_or_default(),
    );
    let previous = connections.load(&key, request.pos.as_deref())?;
    let timeout = Duration::from_millis(request.timeout.unwrap_or(0).min(state.config.sync.max_timeout_ms));
    let deadline = Instant::now() + timeout;
    let mut keys = state.listen_keys(&sender.user_id).await?;
    loop {
        let listener = state.notifier.listen(keys);
        // Boxed: a parked long-poll then holds a pointer, not the whole computation's state.
        let (body, next_state, empty, next_keys) =
            Box::pin(compute(state, sender, &request, previous.as_ref())).await?;
        let waiting = previous.is_some() && empty && Instant::now() < deadline && !state.notifier.is_closing();
        if !waiting {
            let pos = format!("{}.{}", next_state.token, POS_SEQUENCE.fetch_add(1, Ordering::Relaxed));
            let mut body = body;
            body["pos"] = Value::from(pos.as_str());
            connections.store(key, request.pos.as_deref(), pos, next_state);
            return Ok(body);
        }
        keys = next_keys;
        tokio::select! {
            () = listener.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

type Computed = (Value, ConnState, bool, Vec<String>);

async fn compute(
    state: &Services,
    sender: &Sender,
    request: &SlidingRequest,
    previous: Option<&ConnState>,
) -> ApiResult<Computed> {
    let now = state.notifier.current();
    let since = previous.map(|p| p.token.clamp_to(&now));
    let user_id = sender.user_id.as_str();
    let storage = &state.storage;

    // The user's room list, most recent activity first. Rooms left by choice stay only if
    // this connection already knows them; kicks and bans always show.
    let mut activity = storage.room_activity(user_id, now.events()).await?;
    activity.retain(|room| match room.membership.as_str() {
        "join" | "invite" | "knock" => true,
        "leave" | "ban" => {
            room.membership_sender != user_id || previous.is_some_and(|p| p.rooms.contains_key(&room.room_id))
        }
        _ => false,
    });
    // Members see activity; others only their own membership change.
    let sort_key = |room: &RoomActivity| match room.membership.as_str() {
        "join" => room.last_ordering.unwrap_or(room.membership_ordering),
        _ => room.membership_ordering,
    };
    activity.sort_by(|a, b| sort_key(b).cmp(&sort_key(a)).then_with(|| a.room_id.cmp(&b.room_id)));
    let by_id: HashMap<&str, &RoomActivity> = activity.iter().map(|r| (r.room_id.as_str(), r)).collect();
    let keys: Vec<String> = activity
        .iter()
        .filter(|r| matches!(r.membership.as_str(), "join" | "invite" | "knock"))
        .map(|r| r.room_id.clone())
        .chain(std::iter::once(user_id.to_owned()))
        .collect();

    // Which rooms match which rules.
    let facts = RoomFacts::load(state, user_id, &activity).await?;
    let mut matched: BTreeMap<String, Combined> = BTreeMap::new();
    let mut lists = Map::new();
    for (name, list) in &request.lists {
        let required = RequiredState::parse(list.required_state.as_ref(), user_id)?;
        let filtered: Vec<&RoomActivity> = activity
            .iter()
            .filter(|room| facts.passes(room, &list.filters))
            .collect();
        lists.insert(name.clone(), json!({ "count": filtered.len() }));
        let range = list
            .range
            .or_else(|| list.ranges.as_ref().and_then(|r| r.first().copied()));
        let (first, last) = match range {
            Some((first, last)) if first > last => {
                return Err(ApiError::invalid_param(format!("List {name} has an empty range")));
            }
            Some((first, last)) => (first, last),
            None => (0, u64::MAX),
        };
        for (index, room) in filtered.iter().enumerate() {
            let index = index as u64;
            if index < first || index > last {
                continue;
            }
            let combined = matched.entry(room.room_id.clone()).or_default();
            combined.add(list.timeline_limit, required.clone());
            combined.lists.push(name.clone());
        }
    }
    for (room_id, subscription) in &request.room_subscriptions {
        // Rooms the user cannot see, or that do not exist, are ignored.
        if !by_id.contains_key(room_id.as_str()) {
            continue;
        }
        let required = RequiredState::parse(subscription.required_state.as_ref(), user_id)?;
        matched
            .entry(room_id.clone())
            .or_default()
            .add(subscription.timeline_limit, required);
    }

    let mut next = ConnState {
        token: now,
        rooms: previous.map(|p| p.rooms.clone()).unwrap_or_default(),
    };
    let changed_rooms: HashSet<String> = match since {
        Some(since) => storage
            .member_rooms_with_events(user_id, since.events(), now.events())
            .await?
            .into_iter()
            .collect(),
        None => HashSet::new(),
    };
    // A room the client knows that changed while outside every list must be sent whole when
    // it is next matched: the client never saw what happened in between.
    next.rooms.retain(|room_id, _| {
        matched.contains_key(room_id)
            || !(changed_rooms.contains(room_id)
                || by_id
                    .get(room_id.as_str())
                    .is_none_or(|r| since.is_some_and(|s| r.membership_ordering > s.events())))
    });
    let mut rooms = Map::new();
    let mut delivered = Vec::new();
    for (room_id, combined) in &matched {
        let Some(room) = by_id.get(room_id.as_str()) else {
            continue;
        };
        let sent = next.rooms.get(room_id);
        let initial = sent.is_none_or(|s| s.membership != room.membership);
        let expanded = sent.is_some_and(|s| combined.timeline_limit > s.timeline_limit);
        let state_expanded = sent.is_some_and(|s| s.required != combined.required);
        let previously_required = sent.filter(|_| !initial).map(|s| s.required.clone());
        let membership_changed = since.is_some_and(|s| room.membership_ordering > s.events());
        let has_news = changed_rooms.contains(room_id) || membership_changed;
        if !(initial || expanded || state_expanded || has_news) {
            continue;
        }
        let result = room_result(
            state,
            sender,
            room,
            combined,
            RoomWindow {
                since: if initial || expanded {
                    None
                } else {
                    since.map(|s| s.events())
                },
                live_since: since.map(|s| s.events()),
                until: now.events(),
                initial,
                expanded,
                previously_required,
            },
            &facts,
            &mut delivered,
        )
        .await?;
        next.rooms.insert(
            room_id.clone(),
            SentRoom {
                timeline_limit: combined.timeline_limit,
                required: combined.required.clone(),
                membership: room.membership.clone(),
            },
        );
        if let Some(result) = result {
            rooms.insert(room_id.clone(), result);
        }
    }

    // A room whose counts the user's own read receipts changed is sent again, with its
    // counts, even with nothing else new (the client's badge must clear).
    if let Some(since) = since {
        let (after, until) = (
            since.get(crate::streams::Stream::Receipts),
            now.get(crate::streams::Stream::Receipts),
        );
        if until > after {
            for room_id in storage.rooms_read_since(user_id, after, until).await? {
                if matched.contains_key(&room_id) && next.rooms.contains_key(&room_id) && !rooms.contains_key(&room_id)
                {
                    rooms.insert(room_id, json!({}));
                }
            }
        }
    }
    // Unread counts of the joined rooms sent, once evaluation has caught up with them.
    let joined: Vec<&str> = rooms
        .keys()
        .map(String::as_str)
        .filter(|room_id| by_id.get(room_id).is_some_and(|room| room.membership == "join"))
        .collect();
    if !joined.is_empty() {
        let counts = state
            .push
            .unread_counts(&sender.user_id, &joined, now.events(), false)
            .await?;
        let joined: Vec<String> = joined.into_iter().map(str::to_owned).collect();
        for room_id in joined {
            if let Some(Value::Object(result)) = rooms.get_mut(&room_id) {
                let room_counts = counts.room(&room_id);
                result.insert("notification_count".into(), Value::from(room_counts.notifications));
                result.insert("highlight_count".into(), Value::from(room_counts.highlights));
            }
        }
    }
    if state.config.sync.delivery_receipts && !delivered.is_empty() {
        record_delivery(state, &sender.user_id, delivered);
    }
    let extensions = extensions(state, sender, request, since, &now, &matched, &activity).await?;
    let empty = rooms.is_empty()
        && extensions.iter().all(|(name, value)| match name.as_str() {
            // Key counts and fallback key types are state, not news: only device list
            // changes wake a waiting request.
            "e2ee" => value.get("device_lists").is_none_or(is_empty_extension),
            _ => is_empty_extension(value),
        });
    let body = json!({ "lists": lists, "rooms": rooms, "extensions": extensions });
    Ok((body, next, empty, keys))
}

fn is_empty_extension(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().all(is_empty_extension),
        Value::Array(list) => list.is_empty(),
        // Counts and tokens are not news by themselves.
        _ => true,
    }
}

/// What the list filters look at, loaded once per request.
struct RoomWindow {
    /// Events after this position only (None: the latest events, whatever was sent before).
    since: Option<i64>,
    /// The connection's previous position, to count live events.
    live_since: Option<i64>,
    until: i64,
    initial: bool,
    expanded: bool,
    /// The required state the room was last sent with (None when sent afresh).
    previously_required: Option<Vec<RequiredState>>,
}

async fn room_result(
    state: &Services,
    sender: &Sender,
    room: &RoomActivity,
    combined: &Combined,
    window: RoomWindow,
    facts: &RoomFacts,
    delivered: &mut Vec<(String, Delivered)>,
) -> ApiResult<Option<Value>> {
    let storage = &state.storage;
    let room_id = room.room_id.as_str();
    let mut result = Map::new();
    result.insert("membership".into(), Value::from(room.membership.as_str()));
    if !combined.lists.is_empty() {
        result.insert("lists".into(), json!(combined.lists));
    }
    if window.initial {
        result.insert("initial".into(), Value::Bool(true));
    }
    if matches!(room.membership.as_str(), "invite" | "knock") {
        let Some(event) = storage.event(&room.membership_event_id).await? else {
            return Ok(None);
        };
        if room.membership == "invite" && facts.ignored.contains(&event.sender) {
            return Ok(None);
        }
        // MSC4186 calls it `stripped_state`; Synapse, and the clients written against it
        // (matrix-rust-sdk, so Element X), read `invite_state`, for knocks as well: without it
        // they take the room for a joined one. Both go out.
        let stripped = json!(stripped_state(state, room_id, &event).await?);
        result.insert("invite_state".into(), stripped.clone());
        result.insert("stripped_state".into(), stripped);
        result.insert("bump_stamp".into(), Value::from(room.membership_ordering));
        return Ok(Some(Value::Object(result)));
    }

    // Joined, or formerly joined (state and timeline as of the departure).
    let until = if room.membership == "join" {
        window.until
    } else {
        room.membership_ordering.min(window.until)
    };
    let parsed_room_id = RoomId::parse(room_id).map_err(|_| ApiError::internal())?;
    let access = membership_access(state, &parsed_room_id, &sender.user_id).await?;
    let version = state
        .caches
        .room_version(storage, room_id)
        .await?
        .ok_or_else(ApiError::internal)?;
    let device = sender.device_id.as_str();
    if !access.ever_joined() {
        // An invite rejected or withdrawn, or a ban, before ever joining: the user's own
        // membership event and nothing more of the room. Clients read the membership from it
        // (matrix-rust-sdk would otherwise file the former invite as a joined room).
        result.insert("bump_stamp".into(), Value::from(room.membership_ordering));
        let own = storage.events(std::slice::from_ref(&room.membership_event_id)).await?;
        let mut own = render_events(state, &own, &version, &sender.user_id, device).await?;
        // Bundled relations would be events of a room the user never saw (say, a thread
        // replying to their ban): the event alone.
        for event in &mut own {
            if let Some(unsigned) = event.get_mut("unsigned").and_then(Value::as_object_mut) {
                unsigned.remove("m.relations");
            }
        }
        result.insert("required_state".into(), Value::Array(own));
        return Ok(Some(Value::Object(result)));
    }
    let timeline = if combined.timeline_limit > 0 {
        Some(
            scan_timeline(
                state,
                &access,
                room_id,
                window.since.unwrap_or(0),
                until,
                combined.timeline_limit,
                |row| row.state_key.is_some() || !facts.ignored.contains(&row.sender),
            )
            .await?,
        )
    } else {
        None
    };
    let rows: &[EventRow] = timeline.as_ref().map_or(&[], |t| t.rows.as_slice());
    if room.membership == "join" {
        for message in delivered_messages(rows, sender.user_id.as_str()) {
            delivered.push((room_id.to_owned(), message));
        }
    }

    // Required state: all of it (as of `until`) for a fresh view, else what changed.
    let state_now = state_before(state, room_id, until + 1).await?;
    let previous = match (window.initial, window.live_since) {
        (false, Some(since)) => Some(state_before(state, room_id, since + 1).await?),
        _ => None,
    };
    let mut wanted: StateMap = StateMap::new();
    // (Unlike /v3/sync, the user's own member event comes only if asked for, e.g. by `$ME`.)
    let senders: HashSet<&str> = rows.iter().map(|r| r.sender.as_str()).collect();
    for (key, id) in &state_now {
        let (kind, state_key) = key;
        // Lazy members go with every timeline that needs them: the connection does not track
        // which member events a client already holds.
        let lazy = combined.lazy_members() && kind == "m.room.member" && senders.contains(state_key.as_str());
        let unchanged = previous.as_ref().is_some_and(|p| p.get(key) == Some(id));
        // State a changed config asks for that the old one did not goes out whether or not
        // it changed: the client never had it.
        let newly_wanted = window
            .previously_required
            .as_ref()
            .is_some_and(|old| !old.iter().any(|r| r.matches(kind, state_key)));
        if lazy || (combined.wants(kind, state_key) && (!unchanged || newly_wanted)) {
            wanted.insert(key.clone(), id.clone());
        }
    }
    let state_rows = storage.events(&wanted.values().cloned().collect::<Vec<_>>()).await?;
    let required_state = render_events(state, &state_rows, &version, &sender.user_id, device).await?;

    let changed = |kind: &str| window.initial || state_rows.iter().any(|row| row.event_type == kind);
    let content_of = |kind: &str| -> ApiResult<Option<Value>> {
        let key = (kind.to_owned(), String::new());
        Ok(state_now.get(&key).and_then(|id| {
            state_rows
                .iter()
                .find(|row| &row.event_id == id)
                .and_then(|row| serde_json::from_str::<Value>(&row.json).ok())
                .map(|pdu| pdu["content"].clone())
        }))
    };
    // Name and avatar come from state whether or not the config asked for those events.
    let name_avatar = [("m.room.name", "name", "name"), ("m.room.avatar", "url", "avatar")];
    for (kind, field, out) in name_avatar {
        if !(window.initial
            || changed(kind)
            || previous.as_ref().is_some_and(|p| {
                p.get(&(kind.to_owned(), String::new())) != state_now.get(&(kind.to_owned(), String::new()))
            }))
        {
            continue;
        }
        let value = match content_of(kind)? {
            Some(content) => content[field].clone(),
            None => match state_now.get(&(kind.to_owned(), String::new())) {
                Some(id) => storage
                    .event(id)
                    .await?
                    .and_then(|row| serde_json::from_str::<Value>(&row.json).ok())
                    .map_or(Value::Null, |pdu| pdu["content"][field].clone()),
                None => Value::Null,
            },
        };
        if !value.is_null() || !window.initial {
            result.insert(out.into(), value);
        }
    }
    // Counts and heroes describe the room now: only members get them.
    let members_changed = window.initial || rows.iter().any(|r| r.event_type == "m.room.member");
    if members_changed && room.membership == "join" {
        let summary = storage.room_summary(room_id, sender.user_id.as_str()).await?;
        result.insert("joined_count".into(), Value::from(summary.joined));
        result.insert("invited_count".into(), Value::from(summary.invited));
        if !state_now.contains_key(&("m.room.name".to_owned(), String::new())) {
            result.insert("heroes".into(), heroes(state, room_id, &summary.heroes).await?);
        }
    }
    if window.initial && facts.direct.contains(room_id) {
        result.insert("is_dm".into(), Value::Bool(true));
    }
    if let Some(timeline) = &timeline {
        let events = render_events(state, &timeline.rows, &version, &sender.user_id, device).await?;
        let live = window.live_since.map_or(0, |since| {
            timeline.rows.iter().filter(|r| r.stream_ordering > since).count()
        });
        result.insert("timeline".into(), Value::Array(events));
        result.insert("limited".into(), Value::Bool(timeline.limited));
        result.insert("prev_batch".into(), Value::from(format!("s{}", timeline.start)));
        result.insert("num_live".into(), Value::from(live));
        if window.expanded {
            // MSC4186's name, and the unstable one Synapse sends.
            result.insert("expanded_timeline".into(), Value::Bool(true));
            result.insert("unstable_expanded_timeline".into(), Value::Bool(true));
        }
        if let Some(bump) = timeline
            .rows
            .iter()
            .rev()
            .find(|r| BUMP_TYPES.contains(&r.event_type.as_str()))
            .map(|r| r.stream_ordering)
            .or(room.bump_ordering)
            .filter(|_| window.initial || !timeline.rows.is_empty())
        {
            result.insert("bump_stamp".into(), Value::from(bump));
        }
    }
    if !required_state.is_empty() || window.initial {
        result.insert("required_state".into(), Value::Array(required_state));
    }
    Ok(Some(Value::Object(result)))
}

/// Heroes with the display name and avatar of their member events.
async fn heroes(state: &Services, room_id: &str, users: &[String]) -> ApiResult<Value> {
    let keys: Vec<(String, String)> = users.iter().map(|u| ("m.room.member".to_owned(), u.clone())).collect();
    let ids: Vec<String> = state
        .storage
        .current_state_entries(room_id, &keys)
        .await?
        .into_values()
        .collect();
    let rows = state.storage.events(&ids).await?;
    Ok(Value::Array(
        users
            .iter()
            .map(|user| {
                let mut hero = json!({ "user_id": user });
                let content = rows
                    .iter()
                    .find(|r| r.state_key.as_deref() == Some(user.as_str()))
                    .and_then(|r| serde_json::from_str::<Value>(&r.json).ok())
                    .map(|pdu| pdu["content"].clone())
                    .unwrap_or_default();
                if let Some(name) = content["displayname"].as_str() {
                    hero["displayname"] = Value::from(name);
                }
                if let Some(url) = content["avatar_url"].as_str() {
                    hero["avatar_url"] = Value::from(url);
                }
                hero
            })
            .collect(),
    ))
}
