//! One room's slice of a sync: the timeline events a window holds (scanned newest first, up
//! to a limit, through visibility and the filter) and the state that goes with them, computed
//! from the window's own events when every one was read, else from state maps. Shared by
//! `/sync` (v3) and sliding sync.

use std::collections::{HashMap, HashSet};

use crate::{
    error::ApiResult,
    rooms::access::ReadAccess,
    services::Services,
    storage::{EventRow, StateMap},
};

/// The slice of a room's timeline one sync covers.
pub(super) struct RoomWindow<'a> {
    pub room_id: &'a str,
    /// Events after this position (None: from the room's latest events, whatever the token).
    pub after: Option<i64>,
    /// Events up to this position.
    pub until: i64,
    /// The client's token, for the state delta of a limited timeline.
    pub since_events: Option<i64>,
    /// Send the whole state at the timeline's start, not a delta.
    pub full_state: bool,
}

/// The state section of a room window: per state key, the value at the window's end, unless
/// the timeline itself carries that last change (then the value at the timeline's start, which
/// the timeline brings up to date). State changed by events the timeline does not show (the
/// filter dropped them, or the user could not see them: say, members who joined while the user
/// was away) therefore still reaches the client. Incrementally, what the client had at its token
/// is left out; so are the timeline's own events.
pub(super) async fn state_delta(
    state: &Services,
    window: &RoomWindow<'_>,
    start: i64,
    timeline: &[EventRow],
    window_state: &[EventRow],
    fresh: bool,
) -> ApiResult<StateMap> {
    let room_id = window.room_id;
    let at_end = state_before(state, room_id, window.until + 1).await?;
    let in_timeline: HashSet<&str> = timeline.iter().map(|row| row.event_id.as_str()).collect();
    // The value at the timeline's start of a key the timeline changes is what the window's
    // first change of it at or after the start replaced (the scan read every event from the
    // window's end down past the start, so that change is among `window_state`): no second
    // state map to load.
    let mut at_start: HashMap<(&str, &str), Option<&str>> = HashMap::new();
    for row in window_state.iter().filter(|row| row.stream_ordering >= start) {
        let Some(state_key) = row.state_key.as_deref() else {
            continue;
        };
        at_start
            .entry((row.event_type.as_str(), state_key))
            .or_insert(row.replaces_state.as_deref());
    }
    let at_since = match (fresh, window.since_events) {
        (false, Some(since)) => Some(state_before(state, room_id, since + 1).await?),
        _ => None,
    };
    let mut delta = StateMap::new();
    for (key, id) in at_end {
        let id = if in_timeline.contains(id.as_str()) {
            match at_start.get(&(key.0.as_str(), key.1.as_str())).copied().flatten() {
                Some(before) => before.to_owned(),
                None => continue,
            }
        } else {
            id
        };
        let known = at_since
            .as_ref()
            .is_some_and(|at_since| at_since.get(&key) == Some(&id));
        if !known && !in_timeline.contains(id.as_str()) {
            delta.insert(key, id);
        }
    }
    Ok(delta)
}

/// The state section of an incremental window whose every event was looked at: per state key
/// the window changed, its last value, unless the timeline carries that change (then the last
/// value before the timeline, if the window holds one the timeline does not show).
pub(super) fn window_delta(window_state: &[EventRow], start: i64, timeline: &[EventRow]) -> StateMap {
    let in_timeline: HashSet<&str> = timeline.iter().map(|row| row.event_id.as_str()).collect();
    let mut last: HashMap<(&str, &str), &EventRow> = HashMap::new();
    let mut before_timeline: HashMap<(&str, &str), &EventRow> = HashMap::new();
    for row in window_state {
        let Some(state_key) = row.state_key.as_deref() else {
            continue;
        };
        let key = (row.event_type.as_str(), state_key);
        last.insert(key, row);
        if row.stream_ordering < start && !in_timeline.contains(row.event_id.as_str()) {
            before_timeline.insert(key, row);
        }
    }
    let mut delta = StateMap::new();
    for (key, row) in last {
        let chosen = if in_timeline.contains(row.event_id.as_str()) {
            before_timeline.get(&key).copied()
        } else {
            Some(row)
        };
        if let Some(row) = chosen {
            delta.insert((key.0.to_owned(), key.1.to_owned()), row.event_id.clone());
        }
    }
    delta
}

/// The newest events of a room in (`after`, `until`] that the user may see and `wanted`
/// keeps, up to `limit`, oldest first.
pub struct Timeline {
    pub rows: Vec<EventRow>,
    /// Events the user may see and the filter wants were left out (as Synapse: events the
    /// filter drops do not make a timeline limited).
    pub limited: bool,
    /// Where `/messages` continues backwards: the oldest returned event, or past the window's
    /// end when none was returned.
    pub start: i64,
    /// Whether the scan looked at every event of the window (else it stopped early).
    pub complete: bool,
    /// Some event the scan looked at, returned or not, was a state event.
    pub saw_state: bool,
    /// The state events the scan looked at, returned or not, oldest first (all of the window's
    /// when `complete`).
    pub window_state: Vec<EventRow>,
}

/// Reads newest first, page by page until `limit` events pass, and one more to learn whether
/// the timeline is limited: a filter that drops most events must not leave the timeline short,
/// nor make one sync scan a whole room.
pub async fn scan_timeline(
    state: &Services,
    access: &ReadAccess,
    room_id: &str,
    after: i64,
    until: i64,
    limit: usize,
    wanted: impl Fn(&EventRow) -> bool,
) -> ApiResult<Timeline> {
    // One more than the limit (to learn whether the timeline is limited), and not tiny: a
    // `limit: 0` must not read the room one row per query.
    let page_size = if limit == 0 {
        10
    } else {
        i64::try_from(limit).unwrap_or(100) + 1
    };
    let scan_limit = limit * 20 + 100;
    let (mut kept, mut scanned, mut cursor) = (Vec::new(), 0, until);
    let (mut limited, mut complete, mut saw_state) = (false, true, false);
    let mut window_state = Vec::new();
    'scan: loop {
        let page = state
            .storage
            .latest_room_events(room_id, after, cursor, page_size)
            .await?;
        let exhausted = page.len() < usize::try_from(page_size).unwrap_or(usize::MAX);
        for row in page {
            if scanned == scan_limit {
                // Too many events to look at: assume some wanted ones are among the rest.
                (limited, complete) = (true, false);
                break 'scan;
            }
            scanned += 1;
            cursor = row.stream_ordering - 1;
            if row.state_key.is_some() {
                saw_state = true;
                window_state.push(row.clone());
            }
            if visible(access, &row) && wanted(&row) {
                if kept.len() == limit {
                    (limited, complete) = (true, false);
                    break 'scan;
                }
                kept.push(row);
            }
        }
        if exhausted {
            break;
        }
    }
    kept.reverse();
    window_state.reverse();
    Ok(Timeline {
        start: kept.first().map_or(until + 1, |row| row.stream_ordering),
        rows: kept,
        limited,
        complete,
        saw_state,
        window_state,
    })
}

fn visible(access: &ReadAccess, row: &EventRow) -> bool {
    access.allows(row.stream_ordering, &row.history_visibility)
}

/// The room's state just before stream position `position` (empty before the room began).
pub(super) async fn state_before(state: &Services, room_id: &str, position: i64) -> ApiResult<StateMap> {
    let Some(event_id) = state.storage.event_at_or_before(room_id, position - 1).await? else {
        return Ok(StateMap::new());
    };
    let Some(group) = state.storage.state_group_after(&event_id).await? else {
        return Ok(StateMap::new());
    };
    Ok(state.storage.state_group(group).await?)
}
