//! End-to-end encryption support: the server stores and hands out keys, relays to-device
//! messages and tells clients whose devices changed. It never sees plaintext.
//!
//! - [`keys`]: device keys, one-time and fallback keys, cross-signing keys and signatures.
//! - [`to_device`]: queuing and delivering to-device messages.
//! - This module: what `/sync`, sliding sync and `/keys/changes` report (`device_lists`,
//!   one-time key counts, to-device messages).

pub mod keys;
pub mod to_device;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ruma::UserId;
use serde_json::{Value, json};

use crate::{
    accounts::sessions::Sender,
    base::Base,
    error::ApiResult,
    streams::token::{Stream, StreamToken},
};

/// Most to-device messages in one sync response; the rest come with the next one.
pub const TO_DEVICE_PER_SYNC: i64 = 100;

/// Announces that the user's devices or keys changed at `position` on the `device_lists`
/// stream: every waiting sync of the user and of everyone sharing a room with them wakes.
pub async fn device_lists_changed(state: &Base, user_id: &UserId, position: i64) -> ApiResult<()> {
    device_lists_changed_since(state, user_id, position - 1, position).await
}

/// [`device_lists_changed`] for the user's changes in (`since`, `position`].
pub async fn device_lists_changed_since(state: &Base, user_id: &UserId, since: i64, position: i64) -> ApiResult<()> {
    // The position first, with no await before it: the change is committed and must become
    // visible even if what follows fails or the client hangs up.
    state
        .notifier
        .advance(Stream::DeviceLists, position, [user_id.as_str()]);
    if user_id.server_name() == state.config.server_name {
        // Other servers sharing a room with the user are sent the changes.
        state.publish(crate::base::Change::DeviceList {
            user_id: user_id.as_str(),
            since,
            position,
        });
    }
    let keys = state.listen_keys(user_id).await?;
    state.notifier.wake(keys.iter().map(String::as_str));
    Ok(())
}

/// `device_lists` between two tokens: users whose keys changed and who share a room with the
/// viewer (or are the viewer), users who newly share a room, and users who share none now.
pub async fn device_list_changes(
    state: &Base,
    viewer: &str,
    from: &StreamToken,
    to: &StreamToken,
) -> ApiResult<(BTreeSet<String>, BTreeSet<String>)> {
    let sharing = sharing_changes(state, viewer, from.events(), to.events()).await?;
    device_list_changes_given(state, viewer, from, to, sharing).await
}

/// [`device_list_changes`] with the [`sharing_changes`] between the tokens already computed.
async fn device_list_changes_given(
    state: &Base,
    viewer: &str,
    from: &StreamToken,
    to: &StreamToken,
    (sharing, left): Sharing,
) -> ApiResult<(BTreeSet<String>, BTreeSet<String>)> {
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let (after, until) = (from.get(Stream::DeviceLists), to.get(Stream::DeviceLists));
    if until > after {
        changed.extend(state.storage.device_list_changes(viewer, after, until).await?);
    }
    changed.extend(sharing);
    changed.retain(|user| !left.contains(user));
    Ok((changed, left))
}

/// Users who now share a room with a viewer, and users who share none, after membership
/// changes ([`sharing_changes`]).
pub type Sharing = (BTreeSet<String>, BTreeSet<String>);

/// Users whose sharing of a room with the viewer may have changed between two event positions
/// (someone joined or left a room of the viewer's, or the viewer joined or left one): those who
/// share a room with the viewer now, and those who share none.
pub async fn sharing_changes(state: &Base, viewer: &str, from: i64, to: i64) -> ApiResult<Sharing> {
    let storage = &state.storage;
    let (mut sharing_now, mut sharing_none) = (BTreeSet::new(), BTreeSet::new());
    if to <= from || !state.caches.member_events_after(from) {
        return Ok((sharing_now, sharing_none));
    }
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for (room_id, target) in storage.member_changes(viewer, from, to).await? {
        if target == viewer {
            // The viewer joined or left: everyone in the room may have come or gone.
            candidates.extend(storage.joined_members(&room_id).await?);
        } else {
            candidates.insert(target);
        }
    }
    candidates.remove(viewer);
    if !candidates.is_empty() {
        let sharing: HashSet<String> = storage.users_sharing_a_room(viewer).await?.into_iter().collect();
        for candidate in candidates {
            if sharing.contains(&candidate) {
                sharing_now.insert(candidate);
            } else {
                sharing_none.insert(candidate);
            }
        }
    }
    Ok((sharing_now, sharing_none))
}

/// The encryption parts of one sync response for a device.
pub struct SyncE2ee {
    pub to_device: Vec<Value>,
    /// The `to_device` position the next token carries: the last message sent if more wait,
    /// else the stream's position.
    pub to_device_next: i64,
    pub changed: BTreeSet<String>,
    pub left: BTreeSet<String>,
    pub one_time_key_counts: BTreeMap<String, i64>,
    pub unused_fallback_key_types: Vec<String>,
}

impl SyncE2ee {
    /// Whether there is news (counts alone are not).
    pub fn is_empty(&self) -> bool {
        self.to_device.is_empty() && self.changed.is_empty() && self.left.is_empty()
    }

    pub fn device_lists(&self) -> Value {
        json!({ "changed": self.changed, "left": self.left })
    }
}

/// Computes what a device gets: its to-device messages after `to_device.1`, having first
/// deleted those up to `to_device.0` (default: up to `to_device.1`; the client presented a
/// token past them, so it has them), the device list changes since `since`, and its key
/// counts. `sharing` holds the [`sharing_changes`] since `since` (empty without one).
pub async fn sync_e2ee(
    state: &Base,
    sender: &Sender,
    since: Option<&StreamToken>,
    to_device: (Option<i64>, i64),
    now: &StreamToken,
    to_device_limit: i64,
    sharing: Sharing,
) -> ApiResult<SyncE2ee> {
    let (acknowledged, after) = to_device;
    // Never past what the client holds: a token from the future must not delete messages
    // that have not been delivered.
    let acknowledged = acknowledged.map_or(after, |acknowledged| acknowledged.min(after));
    let (one_time_key_counts, unused_fallback_key_types, waiting_deletion) =
        key_counts(state, sender, acknowledged).await?;
    let (to_device, to_device_next) = to_device_batch(
        state,
        sender,
        if waiting_deletion { acknowledged } else { 0 },
        after,
        now.get(Stream::ToDevice),
        to_device_limit,
    )
    .await?;
    let (changed, left) = match since {
        Some(since) => device_list_changes_given(state, sender.user_id.as_str(), since, now, sharing).await?,
        None => Default::default(),
    };
    Ok(SyncE2ee {
        to_device,
        to_device_next,
        changed,
        left,
        one_time_key_counts,
        unused_fallback_key_types,
    })
}

/// Deletes the device's to-device messages up to `delete_upto` (0: none to delete), then
/// reads up to `limit` in (`after`, `until`]. Returns them and the position to resume after:
/// the last one returned if more may wait, else `until`.
pub async fn to_device_batch(
    state: &Base,
    sender: &Sender,
    delete_upto: i64,
    after: i64,
    until: i64,
    limit: i64,
) -> ApiResult<(Vec<Value>, i64)> {
    let storage = &state.storage;
    let (user_id, device_id) = (sender.user_id.as_str(), sender.device_id.as_str());
    if delete_upto > 0 {
        storage
            .delete_acknowledged_to_device(user_id, device_id, delete_upto)
            .await?;
    }
    if until <= after {
        return Ok((Vec::new(), after));
    }
    let rows = storage
        .to_device_messages(user_id, device_id, after, until, limit)
        .await?;
    let next = match rows.last() {
        Some(last) if i64::try_from(rows.len()).is_ok_and(|count| count >= limit) => last.stream_position,
        _ => until,
    };
    let events = rows
        .into_iter()
        .map(|row| {
            let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
            json!({ "type": row.event_type, "sender": row.sender, "content": content })
        })
        .collect();
    Ok((events, next))
}

/// The device's unclaimed one-time keys per algorithm, its unused fallback key types, and
/// whether messages at or below `acknowledged` wait to be deleted.
pub async fn key_counts(
    state: &Base,
    sender: &Sender,
    acknowledged: i64,
) -> ApiResult<(BTreeMap<String, i64>, Vec<String>, bool)> {
    let (user_id, device_id) = (sender.user_id.as_str(), sender.device_id.as_str());
    let found = state.storage.device_key_state(user_id, device_id, acknowledged).await?;
    let mut counts: BTreeMap<String, i64> = found.one_time_key_counts.into_iter().collect();
    // Clients read a missing count as "unknown"; zero tells them to upload.
    counts.entry("signed_curve25519".to_owned()).or_insert(0);
    Ok((counts, found.unused_fallback_key_types, found.acknowledged_messages > 0))
}
