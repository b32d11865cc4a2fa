//! The extensions: to-device, e2ee, account data, receipts, typing.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::request::{Combined, ExtensionConfig, SlidingRequest};
use crate::{
    accounts::sessions::Sender,
    e2ee::{TO_DEVICE_PER_SYNC, device_list_changes, key_counts, to_device_batch},
    error::{ApiError, ApiResult},
    services::Services,
    storage::RoomActivity,
    streams::{Stream, StreamToken},
    sync::v3::receipt_event,
};

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

pub(super) async fn extensions(
    state: &Services,
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
    let to_device = ext.to_device.as_ref().filter(|c| ExtensionConfig::on(Some(c)));
    let until = now.get(Stream::ToDevice);
    // The to-device extension keeps its own position: messages up to `since` are acknowledged.
    let to_device_since = match to_device.and_then(|config| config.since.as_deref()) {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|since| *since >= 0)
            .ok_or_else(|| ApiError::invalid_param("Invalid to_device since"))?
            .min(until),
    };
    let e2ee_on = ExtensionConfig::on(ext.e2ee.as_ref());
    // One read serves both extensions: key counts, and whether acknowledged messages wait.
    let keys = if to_device.is_some() || e2ee_on {
        Some(key_counts(state, sender, to_device_since).await?)
    } else {
        None
    };
    if let (Some(config), Some((_, _, waiting_deletion))) = (to_device, &keys) {
        let limit = config
            .limit
            .and_then(|limit| i64::try_from(limit).ok())
            .unwrap_or(TO_DEVICE_PER_SYNC)
            .clamp(1, 1000);
        let delete_upto = if *waiting_deletion { to_device_since } else { 0 };
        let (events, next) = to_device_batch(state, sender, delete_upto, to_device_since, until, limit).await?;
        out.insert(
            "to_device".into(),
            json!({ "next_batch": next.to_string(), "events": events }),
        );
    }
    if let (true, Some((counts, fallback, _))) = (e2ee_on, keys) {
        let (changed, left) = match since {
            Some(since) => device_list_changes(state, user_id, &since, now).await?,
            None => Default::default(),
        };
        out.insert(
            "e2ee".into(),
            json!({
                "device_lists": { "changed": changed, "left": left },
                "device_one_time_keys_count": counts,
                "device_unused_fallback_key_types": fallback,
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
        if since.is_none() {
            crate::push::add_initial_rules(state, &sender.user_id, &mut global).await?;
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
