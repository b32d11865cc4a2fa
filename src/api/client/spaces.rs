//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: a space and its children, breadth
//! first, as the user may see them; rooms this server is not in are asked of the servers
//! the space names (`/hierarchy` over federation).

use std::collections::{HashMap, HashSet, VecDeque};

use axum::Json;
use ruma::{OwnedRoomId, OwnedServerName, api::client::space::get_hierarchy};
use serde_json::{Map, Value, json};

use crate::{
    api::{ruma::Ruma, state::AppState},
    error::{ApiError, ApiResult},
    rooms::summary::{Asker, can_peek, room_summary, space_children},
};

/// Deepest a walk goes, and most rooms one walk visits (pages included).
const MAX_DEPTH: u64 = 10;
const MAX_ROOMS: usize = 500;

/// A room the walk reached: its summary (with `children_state`), or nothing to show.
type Visit = Option<Map<String, Value>>;

pub async fn hierarchy(state: AppState, request: Ruma<get_hierarchy::v1::Request>) -> ApiResult<Json<Value>> {
    let sender = request.sender()?;
    let body = &request.body;
    let offset = match body.from.as_deref() {
        None => 0,
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < MAX_ROOMS)
            .ok_or_else(|| ApiError::invalid_param("Unknown `from` token"))?,
    };
    let limit = body.limit.map_or(50, |l| u64::from(l).clamp(1, 100)) as usize;
    let max_depth = body.max_depth.map_or(MAX_DEPTH, |d| u64::from(d).min(MAX_DEPTH));
    let want = (offset + limit + 1).min(MAX_ROOMS);
    let ours = state.config.server_name.as_str();

    let root = body.room_id.clone();
    let mut queue: VecDeque<(OwnedRoomId, u64, Vec<OwnedServerName>)> = VecDeque::from([(
        root.clone(),
        0,
        root.server_name().map(ToOwned::to_owned).into_iter().collect(),
    )]);
    let mut seen = HashSet::new();
    // Summaries of children another server gave with their parent, and rooms nobody may see.
    let mut told: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut hidden: HashSet<String> = HashSet::new();
    let mut found: Vec<Value> = Vec::new();
    while let Some((room_id, depth, via)) = queue.pop_front() {
        if found.len() >= want {
            break;
        }
        if !seen.insert(room_id.clone()) || hidden.contains(room_id.as_str()) {
            continue;
        }
        let is_root = room_id == root;
        let here = state
            .storage
            .servers_in_room(room_id.as_str())
            .await?
            .iter()
            .any(|s| s == ours);
        let visit: Visit = if here {
            if !can_peek(&state, room_id.as_str(), Asker::User(&sender.user_id)).await? {
                if is_root {
                    return Err(ApiError::forbidden("You may not see this room"));
                }
                continue;
            }
            match room_summary(&state, room_id.as_str()).await? {
                Some(mut summary) => {
                    let children = space_children(&state, room_id.as_str()).await?;
                    summary.insert("children_state".to_owned(), Value::Array(children));
                    Some(summary)
                }
                None => None,
            }
        } else if let Some(summary) = told
            .get(room_id.as_str())
            .filter(|summary| summary.get("room_type").and_then(Value::as_str) != Some("m.space"))
        {
            let mut summary = summary.clone();
            summary.insert("children_state".to_owned(), json!([]));
            Some(summary)
        } else if let Some(federation) = &state.federation {
            match federation.remote_hierarchy(&room_id, &via, body.suggested_only).await {
                Some(space) => {
                    hidden.extend(space.inaccessible);
                    for child in space.children {
                        if let Some(id) = child.get("room_id").and_then(Value::as_str) {
                            told.insert(id.to_owned(), child);
                        }
                    }
                    let mut room = space.room;
                    room.entry("children_state").or_insert_with(|| json!([]));
                    Some(room)
                }
                None => None,
            }
        } else {
            None
        };
        let Some(summary) = visit else {
            if is_root {
                return Err(ApiError::not_found(
                    "This room is not known here or on the servers asked",
                ));
            }
            continue;
        };
        // Another server told what its servers' users may see: this one filters for its user.
        if !here && !may_see(&state, &sender.user_id, room_id.as_str(), &summary).await? {
            if is_root {
                return Err(ApiError::forbidden("You may not see this room"));
            }
            continue;
        }
        if depth < max_depth {
            for child in summary
                .get("children_state")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if body.suggested_only && child["content"]["suggested"] != true {
                    continue;
                }
                let Some(child_id) = child["state_key"]
                    .as_str()
                    .and_then(|id| OwnedRoomId::try_from(id).ok())
                else {
                    continue;
                };
                let via: Vec<OwnedServerName> = child["content"]["via"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|server| server.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
                    .collect();
                queue.push_back((child_id, depth + 1, via));
            }
        }
        found.push(Value::Object(summary));
    }
    let next_batch = (found.len() > offset + limit).then(|| format!("o{}", offset + limit));
    let rooms: Vec<Value> = found.into_iter().skip(offset).take(limit).collect();
    let mut answer = json!({ "rooms": rooms });
    if let Some(next) = next_batch {
        answer["next_batch"] = Value::String(next);
    }
    Ok(Json(answer))
}

/// Whether a user may see a room this server is not in, by the summary another server gave:
/// it is public, knockable or world-readable, the user is invited to it (or in it), or it is
/// restricted to rooms the user is in.
async fn may_see(
    state: &AppState,
    user: &ruma::UserId,
    room_id: &str,
    summary: &Map<String, Value>,
) -> ApiResult<bool> {
    // The spec: a summary without `join_rule` is of a public room.
    let join_rule = summary.get("join_rule").and_then(Value::as_str).unwrap_or("public");
    if matches!(join_rule, "public" | "knock" | "knock_restricted")
        || summary.get("world_readable").and_then(Value::as_bool) == Some(true)
    {
        return Ok(true);
    }
    let storage = &state.storage;
    if matches!(
        storage.membership(room_id, user.as_str()).await?.as_deref(),
        Some("join" | "invite")
    ) {
        return Ok(true);
    }
    if join_rule == "restricted" {
        for allowed in summary
            .get("allowed_room_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if storage.membership(allowed, user.as_str()).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
