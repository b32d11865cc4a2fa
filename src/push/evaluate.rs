//! The evaluator: one task that follows the events stream and, for every event, asks each
//! local member's push rules what it means to them. Notifying results are stored as
//! `event_push_actions` together with the evaluator's progress, so a restart picks up where
//! it stopped and evaluates nothing twice.
//!
//! Per room it keeps what evaluation needs (members and their display names, power levels,
//! the room version) and updates it from the member and power-level events it evaluates, so
//! an event in a 500-member room costs no database read per member: the members' rules come
//! from the push cache, loaded in one query for those not cached.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomVersionId, UInt, UserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
};
use serde_json::{Value, value::RawValue};

use super::Push;
use crate::{
    base::Base,
    storage::{EventRow, NewPushAction, StorageError},
    streams::Stream,
};

/// Events evaluated per batch (and per transaction) at most.
const BATCH: i64 = 200;
/// Rooms whose context is kept; beyond it the cache starts again.
const MAX_ROOMS: usize = 2_000;

/// What evaluation needs of a room, as of the last event evaluated in it.
struct RoomContext {
    /// Joined members (local and remote) and their display names.
    joined: HashMap<String, String>,
    power_levels: Option<PushConditionPowerLevelsCtx>,
    version: RoomVersionId,
    creators: Vec<OwnedUserId>,
}

/// What a batch of events gave: notifications, and the joins that start members' counts
/// (user, room, position).
#[derive(Default)]
struct Evaluated {
    actions: Vec<NewPushAction>,
    joins: Vec<(String, String, i64)>,
}

/// Runs forever: evaluates each event written after `evaluated`.
pub async fn run(push: Arc<Push>, mut evaluated: i64) {
    let state = push.base.clone();
    let mut rooms: HashMap<String, RoomContext> = HashMap::new();
    loop {
        let written = push.events_written.notified();
        let until = state.notifier.position(Stream::Events);
        if until <= evaluated {
            written.await;
            continue;
        }
        match evaluate_batch(&state, &push, &mut rooms, evaluated, until).await {
            Ok((done, users)) => {
                evaluated = done;
                push.evaluated.send_replace(done);
                push.gateways.wake(&users);
            }
            Err(_) => {
                // Already logged; the database may be back in a moment.
                rooms.clear();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Evaluates the events after `after` (up to `until`, at most a batch) and stores the
/// results. Returns the position evaluated up to and the users with new notifications.
async fn evaluate_batch(
    state: &Base,
    push: &Push,
    rooms: &mut HashMap<String, RoomContext>,
    after: i64,
    until: i64,
) -> Result<(i64, HashSet<String>), StorageError> {
    let events = state.storage.events_in_range(after, until, BATCH).await?;
    let done = match events.last() {
        Some(last) if events.len() as i64 == BATCH => last.stream_ordering,
        _ => until,
    };
    let mut batch = Evaluated::default();
    for event in &events {
        let started = Instant::now();
        let members = evaluate_event(state, push, rooms, event, &mut batch).await?;
        state
            .metrics
            .push_evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        state.metrics.push_rule_evaluations.inc_by(members as u64);
    }
    state
        .storage
        .store_push_actions(&batch.actions, &batch.joins, done)
        .await?;
    let users = batch.actions.into_iter().map(|action| action.user_id).collect();
    Ok((done, users))
}

/// Evaluates one event for every local member it may concern, adding the notifying ones.
/// Returns how many members' rules it ran.
async fn evaluate_event(
    state: &Base,
    push: &Push,
    rooms: &mut HashMap<String, RoomContext>,
    event: &EventRow,
    batch: &mut Evaluated,
) -> Result<usize, StorageError> {
    if !rooms.contains_key(&event.room_id) {
        if rooms.len() >= MAX_ROOMS {
            rooms.clear();
        }
        let Some(context) = load_room(state, event).await? else {
            return Ok(0);
        };
        rooms.insert(event.room_id.clone(), context);
    }
    let room = rooms.get_mut(&event.room_id).expect("inserted above");
    // ruma's FlattenedJson panics on JSON serde_json cannot hold (a number out of range):
    // an event that does not parse here is not evaluated (found by the push_condition fuzz
    // target; stored events are canonical JSON, so this is a guard, not a path).
    let Ok(pdu) = serde_json::from_str::<Value>(&event.json) else {
        tracing::warn!(event_id = %event.event_id, "an event that is not JSON was not evaluated for push");
        return Ok(0);
    };
    // Membership and power levels as of this event (the state after it).
    let mut invitee = None;
    match (event.event_type.as_str(), event.state_key.as_deref()) {
        ("m.room.member", Some(member)) => {
            let content = &pdu["content"];
            match content["membership"].as_str() {
                Some("join") => {
                    let name = content["displayname"].as_str().unwrap_or_default().to_owned();
                    room.joined.insert(member.to_owned(), name);
                    // A join that is not just a profile change starts the member's unread
                    // counts (until their first read receipt).
                    let rejoin = match &event.replaces_state {
                        None => true,
                        Some(previous) => state.storage.event(previous).await?.is_none_or(|previous| {
                            crate::rooms::access::content_field(&previous.json, "membership").as_deref() != Some("join")
                        }),
                    };
                    let local = member
                        .split_once(':')
                        .is_some_and(|(_, server)| server == state.config.server_name.as_str());
                    if rejoin && local {
                        batch
                            .joins
                            .push((member.to_owned(), event.room_id.clone(), event.stream_ordering));
                    }
                }
                membership => {
                    room.joined.remove(member);
                    if membership == Some("invite") {
                        invitee = Some(member.to_owned());
                    }
                }
            }
        }
        ("m.room.power_levels", Some("")) => {
            room.power_levels = power_levels_context(&room.version, &room.creators, Some(&pdu["content"]));
        }
        _ => {}
    }
    let server_name = state.config.server_name.as_str();
    // The server name follows the first colon (it may hold a port).
    let is_local = |user: &str| user.split_once(':').is_some_and(|(_, server)| server == server_name);
    let mut targets: Vec<&str> = room
        .joined
        .keys()
        .map(String::as_str)
        .filter(|user| *user != event.sender && is_local(user))
        .collect();
    if let Some(invitee) = invitee.as_deref()
        && is_local(invitee)
        && invitee != event.sender
    {
        targets.push(invitee);
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let users = push.users_data(&state.storage, &targets).await?;
    let Ok(raw) = RawValue::from_string(event.json.clone()) else {
        return Ok(0);
    };
    let flattened = FlattenedJson::from_raw(&Raw::<Value>::from_json(raw));
    let Ok(room_id) = OwnedRoomId::try_from(event.room_id.as_str()) else {
        return Ok(0);
    };
    let member_count = UInt::try_from(room.joined.len() as u64).unwrap_or(UInt::MAX);
    let thread_id = thread_of(&pdu);
    let evaluated = targets.len();
    // One context for the room, its user fields changed per member.
    let Ok(sender) = UserId::parse(event.sender.as_str()) else {
        return Ok(0);
    };
    let mut context = PushConditionRoomCtx::new(room_id, member_count, sender, String::new());
    if let Some(power_levels) = &room.power_levels {
        context = context.with_power_levels(power_levels.clone());
    }
    for target in targets {
        let Some(data) = users.get(target) else { continue };
        if data.ignored.contains(&event.sender) {
            continue;
        }
        let Ok(user_id) = UserId::parse(target) else { continue };
        context.user_id = user_id;
        context.user_display_name = room.joined.get(target).cloned().unwrap_or_default();
        let mut matched: &[Action] = &[];
        for rule in &data.rules {
            if rule.applies(&flattened, &context).await {
                matched = rule.actions();
                break;
            }
        }
        if !matched.iter().any(Action::should_notify) {
            continue;
        }
        batch.actions.push(NewPushAction {
            user_id: target.to_owned(),
            stream_ordering: event.stream_ordering,
            room_id: event.room_id.clone(),
            event_id: event.event_id.clone(),
            thread_id: thread_id.clone(),
            actions: serde_json::to_string(matched).unwrap_or_else(|_| "[]".to_owned()),
            highlight: matched.iter().any(Action::is_highlight),
            ts: event.origin_server_ts,
        });
    }
    Ok(evaluated)
}

/// The thread an event belongs to: its root for a reply in a thread, else `main`.
pub fn thread_of(pdu: &Value) -> String {
    let relation = &pdu["content"]["m.relates_to"];
    match (relation["rel_type"].as_str(), relation["event_id"].as_str()) {
        (Some("m.thread"), Some(root)) => root.to_owned(),
        _ => "main".to_owned(),
    }
}

/// Reads the room's members, power levels and version as of `event` (the state after it; the
/// evaluator may be behind the room, and someone who joined later must not be notified of
/// what came before).
async fn load_room(state: &Base, event: &EventRow) -> Result<Option<RoomContext>, StorageError> {
    let room_id = event.room_id.as_str();
    let Some(version) = state.caches.room_version(&state.storage, room_id).await? else {
        return Ok(None);
    };
    let Ok(version) = RoomVersionId::try_from(version.as_ref()) else {
        return Ok(None);
    };
    let state_map = match state.storage.state_group_after(&event.event_id).await? {
        Some(group) => state.storage.state_group(group).await?,
        None => state.storage.current_state(room_id).await?,
    };
    let wanted: Vec<String> = state_map
        .iter()
        .filter(|((kind, key), _)| {
            kind == "m.room.member" || (key.is_empty() && (kind == "m.room.create" || kind == "m.room.power_levels"))
        })
        .map(|(_, event_id)| event_id.clone())
        .collect();
    let mut joined = HashMap::new();
    let mut creators = Vec::new();
    let mut power_levels = None;
    for row in state.storage.events(&wanted).await? {
        let pdu: Value = serde_json::from_str(&row.json).unwrap_or_default();
        match row.event_type.as_str() {
            "m.room.member" => {
                if pdu["content"]["membership"] == "join"
                    && let Some(user) = row.state_key
                {
                    let name = pdu["content"]["displayname"].as_str().unwrap_or_default().to_owned();
                    joined.insert(user, name);
                }
            }
            "m.room.create" => {
                creators.extend(UserId::parse(row.sender.as_str()).ok());
                if let Some(more) = pdu["content"]["additional_creators"].as_array() {
                    creators.extend(
                        more.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|u| UserId::parse(u).ok()),
                    );
                }
            }
            _ => power_levels = Some(pdu),
        }
    }
    let power_levels = power_levels_context(&version, &creators, power_levels.as_ref().map(|pdu| &pdu["content"]));
    Ok(Some(RoomContext {
        joined,
        power_levels,
        version,
        creators,
    }))
}

/// The power levels as push conditions see them (`content`: the `m.room.power_levels`
/// content; None: the room has none yet, so the spec's defaults).
fn power_levels_context(
    version: &RoomVersionId,
    creators: &[OwnedUserId],
    content: Option<&Value>,
) -> Option<PushConditionPowerLevelsCtx> {
    let rules = version.rules()?;
    let source = match content {
        Some(content) => match serde_json::from_value::<RoomPowerLevelsEventContent>(content.clone()) {
            Ok(content) => RoomPowerLevelsSource::Original(content),
            Err(_) => RoomPowerLevelsSource::None,
        },
        None => RoomPowerLevelsSource::None,
    };
    let power_levels = RoomPowerLevels::new(source, &rules.authorization, creators.iter().cloned());
    Some(power_levels.into())
}
