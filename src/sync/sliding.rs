//! Simplified sliding sync (MSC4186), the sync Element X uses:
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//!
//! The server keeps, per user, device and `conn_id`, what it has sent on the connection (which
//! rooms, with which timeline limit and required state) under each `pos` it handed out. A
//! request names the `pos` it continues from; the answer holds only what changed since. The
//! last two positions are kept, so a retried request (lost response) is answered again; an
//! older or foreign `pos` gets `M_UNKNOWN_POS` and the client starts over.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::StatusCode;
use ruma::{RoomId, api::error::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    token::{Stream, StreamToken},
    v3::{
        Delivered, delivered_messages, ignored_users, receipt_event, record_delivery, scan_timeline, state_before,
        stripped_state,
    },
};
use crate::{
    accounts::sessions::Sender,
    error::{ApiError, ApiResult},
    rooms::{access::read_access, client_event::render_events},
    state::AppState,
    storage::{EventRow, RoomActivity, StateMap},
};

/// The most lists and room subscriptions one request may hold (MSC4186).
const MAX_LISTS: usize = 100;
const MAX_SUBSCRIPTIONS: usize = 100;
/// Entries one `required_state` may hold.
const MAX_REQUIRED_STATE: usize = 256;
/// Connections (`conn_id`s) one device may hold; the least recently used goes first.
const MAX_CONNECTIONS_PER_DEVICE: usize = 10;
/// Timeline events per room at most, whatever the client asks.
const MAX_TIMELINE_LIMIT: usize = 100;
/// Connections unused for this long are forgotten (the client gets `M_UNKNOWN_POS`).
const CONNECTION_IDLE: Duration = Duration::from_secs(60 * 60);

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

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SlidingRequest {
    pub conn_id: Option<String>,
    pub pos: Option<String>,
    pub timeout: Option<u64>,
    pub set_presence: Option<String>,
    pub lists: BTreeMap<String, ListConfig>,
    pub room_subscriptions: BTreeMap<String, RoomConfig>,
    pub extensions: Extensions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    pub timeline_limit: Option<u64>,
    pub required_state: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListConfig {
    pub range: Option<(u64, u64)>,
    /// Older clients send several ranges; the first counts.
    pub ranges: Option<Vec<(u64, u64)>>,
    pub timeline_limit: Option<u64>,
    pub required_state: Option<Value>,
    pub filters: ListFilters,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    pub spaces: Option<Vec<String>>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    pub is_invited: Option<bool>,
    pub room_types: Option<Vec<Option<String>>>,
    pub not_room_types: Option<Vec<Option<String>>>,
    pub tags: Option<Vec<String>>,
    pub not_tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Extensions {
    pub to_device: Option<ExtensionConfig>,
    pub e2ee: Option<ExtensionConfig>,
    pub account_data: Option<ExtensionConfig>,
    pub receipts: Option<ExtensionConfig>,
    pub typing: Option<ExtensionConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionConfig {
    pub enabled: Option<bool>,
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

impl ExtensionConfig {
    fn on(config: Option<&Self>) -> bool {
        config.is_some_and(|c| c.enabled.unwrap_or(false))
    }
}

/// Which state a room config asks for: `include` entries (type, state key; `None` for any),
/// minus `exclude`, plus lazily loaded members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct RequiredState {
    include: Vec<(Option<String>, Option<String>)>,
    exclude: Vec<(Option<String>, Option<String>)>,
    lazy_members: bool,
}

impl RequiredState {
    /// Reads either form: the list of `[type, state_key]` pairs Element X sends (with `*`,
    /// `$LAZY` and `$ME`), or MSC4186's `{include, exclude, lazy_members}`.
    fn parse(value: Option<&Value>, me: &str) -> ApiResult<Self> {
        let invalid = || ApiError::invalid_param("Invalid required_state");
        let mut required = Self::default();
        let me_or = |key: &str| if key == "$ME" { me.to_owned() } else { key.to_owned() };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for pair in pairs {
                    let pair = pair.as_array().filter(|p| p.len() == 2).ok_or_else(invalid)?;
                    let kind = pair[0].as_str().ok_or_else(invalid)?;
                    let key = pair[1].as_str().ok_or_else(invalid)?;
                    if key == "$LAZY" {
                        required.lazy_members = kind == "m.room.member" || required.lazy_members;
                        continue;
                    }
                    let kind = (kind != "*").then(|| kind.to_owned());
                    let key = (key != "*").then(|| me_or(key));
                    required.include.push((kind, key));
                }
            }
            Some(Value::Object(object)) => {
                let elements = |name: &str| -> ApiResult<Vec<(Option<String>, Option<String>)>> {
                    let Some(list) = object.get(name) else {
                        return Ok(Vec::new());
                    };
                    list.as_array()
                        .ok_or_else(invalid)?
                        .iter()
                        .map(|element| {
                            let element = element.as_object().ok_or_else(invalid)?;
                            let field = |f: &str| -> ApiResult<Option<String>> {
                                match element.get(f) {
                                    None => Ok(None),
                                    Some(Value::String(s)) => Ok(Some(me_or(s))),
                                    Some(_) => Err(invalid()),
                                }
                            };
                            Ok((field("type")?, field("state_key")?))
                        })
                        .collect()
                };
                required.include = elements("include")?;
                required.exclude = elements("exclude")?;
                required.lazy_members = match object.get("lazy_members") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(invalid()),
                };
            }
            Some(_) => return Err(invalid()),
        }
        required.check_size()
    }

    /// Refuses configs too large to be honest (each entry is checked against every state
    /// event of every room).
    fn check_size(self) -> ApiResult<Self> {
        if self.include.len() + self.exclude.len() > MAX_REQUIRED_STATE {
            return Err(ApiError::invalid_param(format!(
                "required_state may hold at most {MAX_REQUIRED_STATE} entries"
            )));
        }
        Ok(self)
    }

    fn matches(&self, kind: &str, key: &str) -> bool {
        let hit = |(t, k): &(Option<String>, Option<String>)| {
            t.as_deref().is_none_or(|t| t == kind) && k.as_deref().is_none_or(|k| k == key)
        };
        self.include.iter().any(hit) && !self.exclude.iter().any(hit)
    }
}

/// The room config a room gets from every rule it matches: the largest timeline, the union of
/// the required state.
#[derive(Debug, Clone, Default)]
struct Combined {
    timeline_limit: usize,
    required: Vec<RequiredState>,
    lists: Vec<String>,
}

impl Combined {
    fn add(&mut self, timeline_limit: Option<u64>, required: RequiredState) {
        let limit = usize::try_from(timeline_limit.unwrap_or(0))
            .unwrap_or(MAX_TIMELINE_LIMIT)
            .min(MAX_TIMELINE_LIMIT);
        self.timeline_limit = self.timeline_limit.max(limit);
        if !self.required.contains(&required) {
            self.required.push(required);
        }
    }

    fn wants(&self, kind: &str, key: &str) -> bool {
        self.required.iter().any(|r| r.matches(kind, key))
    }

    fn lazy_members(&self) -> bool {
        self.required.iter().any(|r| r.lazy_members)
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

#[derive(Default)]
pub struct Connections {
    inner: Mutex<HashMap<(String, String, String), Connection>>,
}

struct Connection {
    /// (pos, what had been sent when it was handed out), oldest first.
    states: Vec<(String, ConnState)>,
    last_used: Instant,
}

#[derive(Debug, Clone, Default)]
struct ConnState {
    token: StreamToken,
    rooms: HashMap<String, SentRoom>,
}

#[derive(Debug, Clone)]
struct SentRoom {
    timeline_limit: usize,
    /// The required state configs the room was last sent with.
    required: Vec<RequiredState>,
    membership: String,
}

static POS_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn unknown_pos() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::UnknownPos,
        "Unknown or expired pos: start a new connection",
    )
}

impl Connections {
    fn load(&self, key: &(String, String, String), pos: Option<&str>) -> ApiResult<Option<ConnState>> {
        let Some(pos) = pos else {
            return Ok(None);
        };
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let connection = inner.get_mut(key).ok_or_else(unknown_pos)?;
        connection.last_used = Instant::now();
        connection
            .states
            .iter()
            .find(|(p, _)| p == pos)
            .map(|(_, state)| Some(state.clone()))
            .ok_or_else(unknown_pos)
    }

    /// Records the state under a new `pos`; states older than the one the client continued
    /// from are dropped (the client has processed it, so it will never go back further).
    fn store(&self, key: (String, String, String), used: Option<&str>, pos: String, state: ConnState) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.len() > 10_000 {
            inner.retain(|_, c| c.last_used.elapsed() < CONNECTION_IDLE);
        }
        if !inner.contains_key(&key) {
            let device: Vec<(&(String, String, String), Instant)> = inner
                .iter()
                .filter(|(k, _)| k.0 == key.0 && k.1 == key.1)
                .map(|(k, c)| (k, c.last_used))
                .collect();
            if device.len() >= MAX_CONNECTIONS_PER_DEVICE
                && let Some(oldest) = device.iter().min_by_key(|(_, used)| *used).map(|(k, _)| (*k).clone())
            {
                inner.remove(&oldest);
            }
        }
        let connection = inner.entry(key).or_insert_with(|| Connection {
            states: Vec::new(),
            last_used: Instant::now(),
        });
        connection.last_used = Instant::now();
        match used {
            Some(used) => {
                if let Some(index) = connection.states.iter().position(|(p, _)| p == used) {
                    connection.states.drain(..index);
                }
            }
            // A new connection with this conn_id replaces the old one.
            None => connection.states.clear(),
        }
        connection.states.push((pos, state));
        // A client that keeps retrying one pos must not grow the list without end.
        while connection.states.len() > 4 {
            connection.states.remove(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving

/// Serves one request: computes the answer, and when it continues a connection and has
/// nothing new, waits up to `timeout` for a change.
pub async fn sliding_sync(state: &AppState, sender: &Sender, request: SlidingRequest) -> ApiResult<Value> {
    if request.lists.len() > MAX_LISTS || request.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(ApiError::invalid_param(format!(
            "At most {MAX_LISTS} lists and {MAX_SUBSCRIPTIONS} room subscriptions"
        )));
    }
    let key = (
        sender.user_id.to_string(),
        sender.device_id.to_string(),
        request.conn_id.clone().unwrap_or_default(),
    );
    let previous = state.sliding.load(&key, request.pos.as_deref())?;
    let timeout = Duration::from_millis(request.timeout.unwrap_or(0).min(state.config.sync.max_timeout_ms));
    let deadline = Instant::now() + timeout;
    let mut keys = super::v3::initial_keys(state, &sender.user_id).await?;
    loop {
        let listener = state.notifier.listen(keys);
        let (body, next_state, empty, next_keys) = compute(state, sender, &request, previous.as_ref()).await?;
        let waiting = previous.is_some() && empty && Instant::now() < deadline && !state.notifier.is_closing();
        if !waiting {
            let pos = format!("{}.{}", next_state.token, POS_SEQUENCE.fetch_add(1, Ordering::Relaxed));
            let mut body = body;
            body["pos"] = Value::from(pos.as_str());
            state.sliding.store(key, request.pos.as_deref(), pos, next_state);
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
    state: &AppState,
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

    if state.config.sync.delivery_receipts && !delivered.is_empty() {
        record_delivery(state, &sender.user_id, delivered);
    }
    let extensions = extensions(state, sender, request, since, &now, &matched, &activity).await?;
    let empty = rooms.is_empty() && extensions.values().all(is_empty_extension);
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
struct RoomFacts {
    /// Users the user ignores (`m.ignored_user_list`).
    ignored: HashSet<String>,
    direct: HashSet<String>,
    tags: HashMap<String, HashSet<String>>,
    encrypted: HashSet<String>,
    room_types: HashMap<String, Option<String>>,
    space_children: HashMap<String, HashSet<String>>,
}

impl RoomFacts {
    async fn load(state: &AppState, user_id: &str, activity: &[RoomActivity]) -> ApiResult<Self> {
        let storage = &state.storage;
        let direct: HashSet<String> = storage
            .account_data(user_id, "", "m.direct")
            .await?
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .and_then(|content| {
                content.as_object().map(|users| {
                    users
                        .values()
                        .filter_map(Value::as_array)
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
            })
            .unwrap_or_default();
        let mut tags = HashMap::new();
        for entry in storage.account_data_since(user_id, 0).await? {
            if entry.data_type == "m.tag" && !entry.room_id.is_empty() {
                let content: Value = serde_json::from_str(&entry.content).unwrap_or_default();
                let names = content["tags"]
                    .as_object()
                    .map(|t| t.keys().cloned().collect())
                    .unwrap_or_default();
                tags.insert(entry.room_id, names);
            }
        }
        let mut encrypted = HashSet::new();
        let mut room_types = HashMap::new();
        let mut space_children: HashMap<String, HashSet<String>> = HashMap::new();
        let wanted = [
            ("m.room.encryption".to_owned(), String::new()),
            ("m.room.create".to_owned(), String::new()),
        ];
        for room in activity.iter().filter(|r| r.membership == "join") {
            let entries = storage.current_state_entries(&room.room_id, &wanted).await?;
            if entries.contains_key(&wanted[0]) {
                encrypted.insert(room.room_id.clone());
            }
            if let Some(create) = entries.get(&wanted[1])
                && let Some(row) = storage.event(create).await?
            {
                let kind = serde_json::from_str::<Value>(&row.json)
                    .ok()
                    .and_then(|pdu| pdu["content"]["type"].as_str().map(str::to_owned));
                if kind.as_deref() == Some("m.space") {
                    let children = space_children_of(state, &room.room_id).await?;
                    space_children.insert(room.room_id.clone(), children);
                }
                room_types.insert(room.room_id.clone(), kind);
            }
        }
        Ok(Self {
            ignored: ignored_users(state, user_id).await?,
            direct,
            tags,
            encrypted,
            room_types,
            space_children,
        })
    }

    fn passes(&self, room: &RoomActivity, filters: &ListFilters) -> bool {
        let id = room.room_id.as_str();
        let invited = room.membership == "invite";
        if let Some(wanted) = filters.is_invited.or(filters.is_invite)
            && wanted != invited
        {
            return false;
        }
        if let Some(wanted) = filters.is_dm
            && wanted != self.direct.contains(id)
        {
            return false;
        }
        if let Some(wanted) = filters.is_encrypted
            && wanted != self.encrypted.contains(id)
        {
            return false;
        }
        let kind = self.room_types.get(id).cloned().flatten();
        if let Some(types) = &filters.room_types
            && !types.contains(&kind)
        {
            return false;
        }
        if let Some(types) = &filters.not_room_types
            && types.contains(&kind)
        {
            return false;
        }
        let tags = self.tags.get(id);
        let has_tag = |names: &Vec<String>| tags.is_some_and(|t| names.iter().any(|n| t.contains(n)));
        if filters.not_tags.as_ref().is_some_and(has_tag) {
            return false;
        }
        if let Some(names) = &filters.tags
            && !has_tag(names)
        {
            return false;
        }
        if let Some(spaces) = &filters.spaces
            && !spaces
                .iter()
                .any(|space| self.space_children.get(space).is_some_and(|c| c.contains(id)))
        {
            return false;
        }
        true
    }
}

/// Rooms a space lists as children (`m.space.child` with a `via`).
async fn space_children_of(state: &AppState, space: &str) -> ApiResult<HashSet<String>> {
    let current = state.storage.current_state(space).await?;
    let ids: Vec<String> = current
        .iter()
        .filter(|((kind, _), _)| kind == "m.space.child")
        .map(|(_, id)| id.clone())
        .collect();
    Ok(state
        .storage
        .events(&ids)
        .await?
        .into_iter()
        .filter(|row| {
            serde_json::from_str::<Value>(&row.json)
                .is_ok_and(|pdu| pdu["content"]["via"].as_array().is_some_and(|via| !via.is_empty()))
        })
        .filter_map(|row| row.state_key)
        .collect())
}

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
    state: &AppState,
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
        result.insert(
            "stripped_state".into(),
            json!(stripped_state(state, room_id, &event).await?),
        );
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
    let access = read_access(state, &parsed_room_id, &sender.user_id).await?;
    if !access.ever_joined() {
        // Banned, or an invite withdrawn, before ever joining: the membership, nothing more.
        result.insert("bump_stamp".into(), Value::from(room.membership_ordering));
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
    let version = storage.room_version(room_id).await?.ok_or_else(ApiError::internal)?;
    let device = sender.device_id.as_str();
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
            result.insert("expanded_timeline".into(), Value::Bool(true));
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
async fn heroes(state: &AppState, room_id: &str, users: &[String]) -> ApiResult<Value> {
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

/// The rooms an extension covers: those it names, or those of the lists it names, or (by
/// default) every room the response could cover.
fn extension_rooms<'a>(
    config: &'a ExtensionConfig,
    matched: &'a BTreeMap<String, Combined>,
    joined: &'a [&'a str],
) -> Vec<&'a str> {
    match (&config.rooms, &config.lists) {
        (None, None) => joined.to_vec(),
        (rooms, lists) => joined
            .iter()
            .copied()
            .filter(|room| {
                rooms.as_ref().is_some_and(|r| r.iter().any(|x| x == "*" || x == room))
                    || lists.as_ref().is_some_and(|l| {
                        matched
                            .get(*room)
                            .is_some_and(|c| l.iter().any(|x| x == "*" || c.lists.contains(x)))
                    })
            })
            .collect(),
    }
}

async fn extensions(
    state: &AppState,
    sender: &Sender,
    request: &SlidingRequest,
    since: Option<StreamToken>,
    now: &StreamToken,
    matched: &BTreeMap<String, Combined>,
    activity: &[RoomActivity],
) -> ApiResult<Map<String, Value>> {
    let user_id = sender.user_id.as_str();
    let after = |stream: Stream| since.map_or(0, |s| s.get(stream));
    let joined: Vec<&str> = activity
        .iter()
        .filter(|r| r.membership == "join")
        .map(|r| r.room_id.as_str())
        .collect();
    let ext = &request.extensions;
    let mut out = Map::new();
    if ExtensionConfig::on(ext.to_device.as_ref()) {
        // To-device messages arrive with end-to-end encryption; the stream exists already.
        out.insert(
            "to_device".into(),
            json!({ "next_batch": now.get(Stream::ToDevice).to_string(), "events": [] }),
        );
    }
    if ExtensionConfig::on(ext.e2ee.as_ref()) {
        out.insert(
            "e2ee".into(),
            json!({
                "device_lists": { "changed": [], "left": [] },
                "device_one_time_keys_count": {},
                "device_unused_fallback_key_types": [],
            }),
        );
    }
    if let Some(config) = ext.account_data.as_ref().filter(|c| ExtensionConfig::on(Some(c))) {
        let rooms: HashSet<&str> = extension_rooms(config, matched, &joined).into_iter().collect();
        let mut global = Vec::new();
        let mut per_room: Map<String, Value> = Map::new();
        for entry in state
            .storage
            .account_data_since(user_id, after(Stream::AccountData))
            .await?
        {
            if entry.stream_position > now.get(Stream::AccountData) {
                continue;
            }
            let content: Value = serde_json::from_str(&entry.content).unwrap_or_default();
            let event = json!({ "type": entry.data_type, "content": content });
            if entry.room_id.is_empty() {
                global.push(event);
            } else if rooms.contains(entry.room_id.as_str()) {
                let list = per_room.entry(entry.room_id).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(event);
                }
            }
        }
        out.insert("account_data".into(), json!({ "global": global, "rooms": per_room }));
    }
    if let Some(config) = ext.receipts.as_ref().filter(|c| ExtensionConfig::on(Some(c))) {
        let rooms: HashSet<&str> = extension_rooms(config, matched, &joined).into_iter().collect();
        let mut by_room: HashMap<String, Vec<_>> = HashMap::new();
        for receipt in state
            .storage
            .receipts_since(user_id, after(Stream::Receipts), now.get(Stream::Receipts))
            .await?
        {
            if rooms.contains(receipt.room_id.as_str()) {
                by_room.entry(receipt.room_id.clone()).or_default().push(receipt);
            }
        }
        let receipts: Map<String, Value> = by_room
            .iter()
            .map(|(room, rows)| (room.clone(), receipt_event(rows)))
            .collect();
        out.insert("receipts".into(), json!({ "rooms": receipts }));
    }
    if let Some(config) = ext.typing.as_ref().filter(|c| ExtensionConfig::on(Some(c))) {
        let mut typing = Map::new();
        for room in extension_rooms(config, matched, &joined) {
            if let Some(users) = state
                .typing
                .changed_between(room, after(Stream::Typing), now.get(Stream::Typing))
                && (since.is_some() || !users.is_empty())
            {
                typing.insert(
                    room.to_owned(),
                    json!({ "type": "m.typing", "content": { "user_ids": users } }),
                );
            }
        }
        out.insert("typing".into(), json!({ "rooms": typing }));
    }
    Ok(out)
}
