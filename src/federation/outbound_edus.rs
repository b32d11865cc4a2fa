//! EDUs this server sends: typing notices, receipts and presence wait in memory per
//! destination (a newer one replaces an older one of the same kind), to go out with the
//! destination's next transaction; to-device messages and device list updates wait in the
//! destination's stored queue (see [`crate::storage::QueuedEdu`]) and survive a restart.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    base::Base,
    ephemeral::DELIVERED,
    storage::{QueuedEdu, StorageError},
};

/// Receipts in one transaction at most.
const RECEIPTS_PER_TRANSACTION: usize = 200;

/// A receipt's place: (room, receipt type, user, thread; for a delivery receipt, the sender
/// of the delivered message instead of a thread).
type ReceiptKey = (String, String, String, String);

/// Typing notices, receipts and presence owed to one destination.
#[derive(Default, Clone)]
pub struct Ephemeral {
    /// (room, user) → typing.
    typing: BTreeMap<(String, String), bool>,
    /// The newest receipt of each place: (event ID, ts).
    receipts: BTreeMap<ReceiptKey, (String, i64)>,
    /// user → the `m.presence` push entry.
    presence: BTreeMap<String, Value>,
}

impl Ephemeral {
    pub fn is_empty(&self) -> bool {
        self.typing.is_empty() && self.receipts.is_empty() && self.presence.is_empty()
    }

    /// Whether delivery receipts wait (only Hearth servers are sent them).
    pub fn has_deliveries(&self) -> bool {
        self.receipts
            .keys()
            .any(|(_, receipt_type, _, _)| receipt_type == DELIVERED)
    }

    pub fn typing(&mut self, room_id: &str, user_id: &str, typing: bool) {
        self.typing.insert((room_id.to_owned(), user_id.to_owned()), typing);
    }

    /// `place`: the thread, or for a delivery receipt the delivered message's sender.
    pub fn receipt(&mut self, room_id: &str, receipt_type: &str, user_id: &str, place: &str, event_id: &str, ts: i64) {
        let key = (
            room_id.to_owned(),
            receipt_type.to_owned(),
            user_id.to_owned(),
            place.to_owned(),
        );
        self.receipts.insert(key, (event_id.to_owned(), ts));
    }

    pub fn presence(&mut self, user_id: &str, entry: Value) {
        self.presence.insert(user_id.to_owned(), entry);
    }

    /// Puts back what a failed transaction carried, under anything newer that came since.
    pub fn restore(&mut self, older: Ephemeral) {
        for (key, value) in older.typing {
            self.typing.entry(key).or_insert(value);
        }
        for (key, value) in older.receipts {
            self.receipts.entry(key).or_insert(value);
        }
        for (key, value) in older.presence {
            self.presence.entry(key).or_insert(value);
        }
    }

    /// Takes up to `room` EDUs' worth, leaving the rest for the next transaction.
    pub fn take(&mut self, room: usize) -> Ephemeral {
        let mut taken = Ephemeral::default();
        let mut left = room;
        if left > 0 && !self.presence.is_empty() {
            // One EDU carries every user's presence.
            taken.presence = std::mem::take(&mut self.presence);
            left -= 1;
        }
        while left > 0 {
            let Some((key, value)) = self.typing.pop_first() else {
                break;
            };
            taken.typing.insert(key, value);
            left -= 1;
        }
        // Receipts share EDUs, each holding one receipt per room, kind and user: a second
        // thread of the same user waits for the next transaction, so they take two EDUs
        // at most (`m.receipt` and delivery receipts).
        if left >= 2 {
            let mut users = std::collections::HashSet::new();
            let mut chosen = Vec::new();
            for (room_id, receipt_type, user_id, place) in self.receipts.keys() {
                if chosen.len() >= RECEIPTS_PER_TRANSACTION {
                    break;
                }
                if users.insert((room_id, receipt_type, user_id)) {
                    chosen.push((room_id.clone(), receipt_type.clone(), user_id.clone(), place.clone()));
                }
            }
            for key in chosen {
                if let Some(value) = self.receipts.remove(&key) {
                    taken.receipts.insert(key, value);
                }
            }
        }
        taken
    }

    /// The EDUs, as JSON. Delivery receipts go only to Hearth servers (`hearth`); others
    /// would not understand them.
    pub fn into_edus(self, hearth: bool) -> Vec<Value> {
        let mut edus = Vec::new();
        if !self.presence.is_empty() {
            let push: Vec<Value> = self.presence.into_values().collect();
            edus.push(json!({ "edu_type": "m.presence", "content": { "push": push } }));
        }
        for ((room_id, user_id), typing) in self.typing {
            edus.push(json!({
                "edu_type": "m.typing",
                "content": { "room_id": room_id, "user_id": user_id, "typing": typing },
            }));
        }
        // Each EDU holds one receipt per room, kind and user: further threads of the same
        // user take further EDUs.
        let mut by_type: BTreeMap<&'static str, Vec<Map<String, Value>>> = BTreeMap::new();
        for ((room_id, receipt_type, user_id, place), (event_id, ts)) in &self.receipts {
            let (edu_type, data) = if receipt_type == DELIVERED {
                if !hearth {
                    continue;
                }
                (DELIVERED, json!({ "ts": ts, "sender": place }))
            } else if place.is_empty() {
                ("m.receipt", json!({ "ts": ts }))
            } else {
                ("m.receipt", json!({ "ts": ts, "thread_id": place }))
            };
            let entry = json!({ "event_ids": [event_id], "data": data });
            let contents = by_type.entry(edu_type).or_default();
            let slot = contents.iter().position(|content| {
                content
                    .get(room_id)
                    .and_then(|room| room.get(receipt_type))
                    .and_then(|users| users.get(user_id))
                    .is_none()
            });
            let content = match slot {
                Some(index) => &mut contents[index],
                None => {
                    contents.push(Map::new());
                    contents.last_mut().expect("just pushed")
                }
            };
            let room = content.entry(room_id.clone()).or_insert_with(|| json!({}));
            room[receipt_type.as_str()][user_id.as_str()] = entry;
        }
        for (edu_type, contents) in by_type {
            for content in contents {
                edus.push(json!({ "edu_type": edu_type, "content": content }));
            }
        }
        edus
    }
}

/// The `m.presence` push entry for a local user's stored presence.
pub async fn presence_entry(base: &Base, user_id: &str) -> Result<Option<Value>, StorageError> {
    let Some(row) = base.storage.presence(user_id).await? else {
        return Ok(None);
    };
    let mut entry = crate::ephemeral::presence::presence_content(&row);
    entry["user_id"] = Value::from(user_id);
    if entry.get("last_active_ago").is_none() {
        entry["last_active_ago"] = Value::from(0);
    }
    Ok(Some(entry))
}

/// The EDUs telling other servers of a local user's device list changes in (`since`,
/// `position`]: one `m.device_list_update` per change of one device, chained by `prev_id`
/// to the user's previous change; a change to cross-signing keys (or to several devices at
/// once) sends `m.signing_key_update` and an update with no `prev_id`, which makes the
/// receiver fetch the whole list again.
pub async fn device_list_edus(
    base: &Base,
    user_id: &str,
    since: i64,
    position: i64,
) -> Result<Vec<(String, Value)>, StorageError> {
    let storage = &base.storage;
    let changes = storage.device_list_changes_of(user_id, since, position).await?;
    let mut previous = storage.last_device_list_change(user_id, since).await?;
    let mut edus = Vec::new();
    for change in changes {
        let stream_id = change.stream_position;
        let prev_id: Vec<i64> = previous.into_iter().collect();
        previous = Some(stream_id);
        let Some(device_id) = change.device_id else {
            let cross_signing = storage.cross_signing_keys(user_id).await?;
            let mut content = json!({ "user_id": user_id });
            for key in &cross_signing {
                let field = match key.key_type.as_str() {
                    "master" => "master_key",
                    "self_signing" => "self_signing_key",
                    _ => continue,
                };
                if let Ok(json) = serde_json::from_str::<Value>(&key.key_json) {
                    content[field] = json;
                }
            }
            if content.get("master_key").is_some() {
                edus.push(("m.signing_key_update".to_owned(), content));
            }
            // No device named: the receiver resyncs the whole list (`prev_id` empty).
            let devices = storage.devices(user_id).await?;
            let device_id = devices.first().map_or_else(String::new, |d| d.device_id.clone());
            edus.push((
                "m.device_list_update".to_owned(),
                json!({
                    "user_id": user_id,
                    "device_id": device_id,
                    "stream_id": stream_id,
                    "prev_id": [],
                    "deleted": false,
                }),
            ));
            continue;
        };
        let mut content = json!({
            "user_id": user_id,
            "device_id": device_id,
            "stream_id": stream_id,
            "prev_id": prev_id,
        });
        match storage.device(user_id, &device_id).await? {
            None => content["deleted"] = Value::Bool(true),
            // The device's name stays here (as Synapse's default).
            Some(_) => {
                if let Some(keys) = storage.device_keys_of(user_id, &device_id).await?
                    && let Ok(keys) = serde_json::from_str::<Value>(&keys.key_json)
                {
                    content["keys"] = keys;
                }
            }
        }
        edus.push(("m.device_list_update".to_owned(), content));
    }
    Ok(edus)
}

/// The stored queue entries for `edus` to each of `destinations`.
pub fn queued(destinations: &[String], edus: &[(String, Value)]) -> Vec<QueuedEdu> {
    destinations
        .iter()
        .flat_map(|destination| {
            edus.iter().map(|(edu_type, content)| QueuedEdu {
                destination: destination.clone(),
                edu_type: edu_type.clone(),
                content: content.to_string(),
            })
        })
        .collect()
}
