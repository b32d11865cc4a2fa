//! EDUs from other servers: typing notices, receipts (and Hearth's delivery receipts),
//! presence, to-device messages, device list and cross-signing key updates. Each is checked
//! before it counts: its user belongs to the origin, and (for a room's EDUs) that user is a
//! member of the room. A refused or malformed EDU is logged and skipped; it never fails the
//! transaction that carried it.

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId,
    api::federation::transactions::edu::{
        DeviceListUpdateContent, DirectDeviceContent, PresenceContent, SigningKeyUpdateContent, TypingContent,
    },
    serde::Raw,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Federation;
use crate::{
    ephemeral::DELIVERED,
    storage::{NewReceipt, RemoteCrossSigningKey, RemoteDevice, now_ms},
    streams::Stream,
};

/// How long a typing notice from another server lasts unless renewed (as Synapse).
const REMOTE_TYPING: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct AnyEdu<'a> {
    edu_type: String,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// `m.receipt` (and `io.hearth.delivered`): room → receipt type → user → receipt.
type ReceiptContent = BTreeMap<OwnedRoomId, BTreeMap<String, BTreeMap<OwnedUserId, InboundReceipt>>>;

#[derive(Deserialize)]
struct InboundReceipt {
    event_ids: Vec<OwnedEventId>,
    #[serde(default)]
    data: ReceiptData,
}

#[derive(Deserialize, Default)]
struct ReceiptData {
    ts: Option<i64>,
    thread_id: Option<String>,
    /// Delivery receipts: whose message was delivered.
    sender: Option<OwnedUserId>,
}

/// Why an EDU was refused.
type Refusal = String;

impl Federation {
    /// Applies the EDUs of a transaction from `origin`, in order.
    pub async fn receive_edus(&self, origin: &ServerName, edus: &[Raw<ruma::api::federation::transactions::edu::Edu>]) {
        for raw in edus {
            let Ok(edu) = serde_json::from_str::<AnyEdu<'_>>(raw.json().get()) else {
                tracing::info!(%origin, "refused a malformed EDU");
                continue;
            };
            if let Err(reason) = self.receive_edu(origin, &edu.edu_type, edu.content.get()).await {
                tracing::info!(%origin, edu_type = %edu.edu_type, %reason, "refused an EDU");
            }
        }
    }

    async fn receive_edu(&self, origin: &ServerName, edu_type: &str, content: &str) -> Result<(), Refusal> {
        fn parse<'a, T: Deserialize<'a>>(content: &'a str) -> Result<T, Refusal> {
            serde_json::from_str(content).map_err(|error| format!("malformed content: {error}"))
        }
        match edu_type {
            "m.typing" => self.receive_typing(origin, parse(content)?).await,
            "m.receipt" | DELIVERED => self.receive_receipts(origin, edu_type, parse(content)?).await,
            "m.presence" => self.receive_presence(origin, parse(content)?).await,
            "m.direct_to_device" => self.receive_to_device(origin, parse(content)?).await,
            "m.device_list_update" => self.receive_device_list_update(origin, parse(content)?).await,
            "m.signing_key_update" => self.receive_signing_key_update(origin, parse(content)?).await,
            _ => Ok(()),
        }
    }

    /// A user of the origin, or a refusal.
    fn of_origin(origin: &ServerName, user_id: &UserId) -> Result<(), Refusal> {
        if user_id.server_name() == origin {
            Ok(())
        } else {
            Err(format!("{user_id} is not a user of {origin}"))
        }
    }

    /// Whether the user (of `origin`) is a joined member of the room here; in a room joined
    /// with partial state, whose members are not all known yet, whether `origin` is among
    /// its servers.
    async fn is_joined(&self, origin: &ServerName, room_id: &RoomId, user_id: &UserId) -> Result<bool, Refusal> {
        let storage = &self.base.storage;
        let membership = storage
            .membership(room_id.as_str(), user_id.as_str())
            .await
            .map_err(|error| error.to_string())?;
        if membership.as_deref() == Some("join") {
            return Ok(true);
        }
        if membership.is_none() && self.partial.is_partial(room_id) {
            let servers = storage
                .servers_in_room(room_id.as_str())
                .await
                .map_err(|error| error.to_string())?;
            return Ok(servers.iter().any(|server| server == origin.as_str()));
        }
        Ok(false)
    }

    async fn receive_typing(&self, origin: &ServerName, typing: TypingContent) -> Result<(), Refusal> {
        Self::of_origin(origin, &typing.user_id)?;
        self.check_acl(origin, &typing.room_id)
            .await
            .map_err(|_| "the room's server ACL denies the origin".to_owned())?;
        if !self.is_joined(origin, &typing.room_id, &typing.user_id).await? {
            return Err(format!("{} is not in {}", typing.user_id, typing.room_id));
        }
        let timeout = typing.typing.then_some(REMOTE_TYPING);
        self.typing
            .set(&self.base.notifier, &typing.room_id, &typing.user_id, timeout);
        Ok(())
    }

    async fn receive_receipts(
        &self,
        origin: &ServerName,
        edu_type: &str,
        content: ReceiptContent,
    ) -> Result<(), Refusal> {
        let storage = &self.base.storage;
        let ours = self.server_name();
        for (room_id, kinds) in content {
            if self.check_acl(origin, &room_id).await.is_err() {
                tracing::info!(%origin, %room_id, "receipts refused by the room's server ACL");
                continue;
            }
            for (receipt_type, users) in kinds {
                // Only public read receipts travel (and delivery receipts, in their own EDU).
                let allowed = match edu_type {
                    DELIVERED => receipt_type == DELIVERED,
                    _ => receipt_type == "m.read",
                };
                if !allowed {
                    continue;
                }
                for (user_id, receipt) in users {
                    Self::of_origin(origin, &user_id)?;
                    if !self.is_joined(origin, &room_id, &user_id).await? {
                        return Err(format!("{user_id} is not in {room_id}"));
                    }
                    // The newest event named that this server holds in the room.
                    let mut known = None;
                    for event_id in receipt.event_ids.iter().take(10) {
                        if let Ok(Some(row)) = storage.event(event_id.as_str()).await
                            && row.room_id == room_id.as_str()
                            && row.stream_ordering > 0
                            && known
                                .as_ref()
                                .is_none_or(|(_, ordering, _)| *ordering < row.stream_ordering)
                        {
                            known = Some((event_id.clone(), row.stream_ordering, row.sender));
                        }
                    }
                    let Some((event_id, ordering, event_sender)) = known else {
                        continue;
                    };
                    let (thread_id, event_sender) = if edu_type == DELIVERED {
                        // Delivery of a message of ours, by that message's sender.
                        let Some(sender) = receipt.data.sender.filter(|s| s.server_name() == ours) else {
                            continue;
                        };
                        if sender.as_str() != event_sender {
                            continue;
                        }
                        (String::new(), sender.to_string())
                    } else {
                        (receipt.data.thread_id.unwrap_or_default(), String::new())
                    };
                    let stored = NewReceipt {
                        room_id: room_id.as_str(),
                        receipt_type: &receipt_type,
                        user_id: user_id.as_str(),
                        thread_id: &thread_id,
                        event_sender: &event_sender,
                        event_id: event_id.as_str(),
                        event_stream_ordering: ordering,
                        ts: receipt.data.ts.unwrap_or_else(now_ms),
                    };
                    let position = storage.upsert_receipt(&stored).await.map_err(|e| e.to_string())?;
                    if let Some(position) = position {
                        let key = if edu_type == DELIVERED {
                            event_sender.as_str()
                        } else {
                            room_id.as_str()
                        };
                        self.base.notifier.advance(Stream::Receipts, position, [key]);
                    }
                }
            }
        }
        Ok(())
    }

    async fn receive_presence(&self, origin: &ServerName, content: PresenceContent) -> Result<(), Refusal> {
        if !self.base.config.presence.enabled {
            return Ok(());
        }
        for update in content.push {
            Self::of_origin(origin, &update.user_id)?;
            // Presence of users nobody here shares a room with is nobody's business.
            if !self
                .shares_room_with_us(&update.user_id)
                .await
                .map_err(|e| e.to_string())?
            {
                continue;
            }
            let last_active_ago = i64::try_from(u64::from(update.last_active_ago)).ok();
            self.presence
                .remote(
                    &self.base,
                    &update.user_id,
                    update.presence.as_str(),
                    update.status_msg.as_deref(),
                    last_active_ago,
                    update.currently_active,
                )
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }

    async fn receive_to_device(&self, origin: &ServerName, content: DirectDeviceContent) -> Result<(), Refusal> {
        Self::of_origin(origin, &content.sender)?;
        crate::e2ee::to_device::receive(
            &self.base,
            &content.sender,
            content.message_id.as_str(),
            &content.ev_type.to_string(),
            &content.messages,
        )
        .await
        .map_err(|error| format!("{error:?}"))
    }

    async fn receive_device_list_update(
        &self,
        origin: &ServerName,
        update: DeviceListUpdateContent,
    ) -> Result<(), Refusal> {
        let user_id = update.user_id.clone();
        Self::of_origin(origin, &user_id)?;
        if !self.shares_room_with_us(&user_id).await.map_err(|e| e.to_string())? {
            // Not followed: their list is asked for whenever a client wants it (a list kept
            // from before is stale from now on).
            let _ = self.base.storage.mark_remote_device_list_stale(user_id.as_str()).await;
            return Ok(());
        }
        let storage = &self.base.storage;
        let stream_id = i64::try_from(u64::from(update.stream_id)).map_err(|_| "stream_id out of range".to_owned())?;
        let kept = storage
            .remote_device_list(user_id.as_str())
            .await
            .map_err(|error| error.to_string())?;
        let follows = match kept {
            Some((last, false)) => {
                if stream_id <= last {
                    return Ok(()); // Seen already.
                }
                !update.prev_id.is_empty()
                    && update
                        .prev_id
                        .iter()
                        .all(|prev| i64::try_from(u64::from(*prev)).is_ok_and(|prev| prev == last))
            }
            _ => false,
        };
        if !follows {
            // A gap (or a list never fetched): fetch the whole list, off the transaction's path.
            self.resync_in_background(user_id);
            return Ok(());
        }
        let device_id = update.device_id.as_str();
        // A deleted device, or one with no keys yet (it cannot take part in encryption):
        // nothing of it is kept, but the chain moves on.
        let keys = update.keys.as_ref().filter(|_| update.deleted != Some(true));
        let device = if let Some(keys) = keys {
            let keys = keys.json().get();
            let value: serde_json::Value = serde_json::from_str(keys).map_err(|e| e.to_string())?;
            if value.get("user_id").and_then(|v| v.as_str()) != Some(user_id.as_str())
                || value.get("device_id").and_then(|v| v.as_str()) != Some(device_id)
            {
                return Err("the keys are for another device".to_owned());
            }
            Some(RemoteDevice {
                device_id: device_id.to_owned(),
                display_name: update.device_display_name.clone(),
                key_json: keys.to_owned(),
            })
        } else {
            None
        };
        let position = storage
            .update_remote_device(user_id.as_str(), stream_id, device_id, device.as_ref())
            .await
            .map_err(|error| error.to_string())?;
        crate::e2ee::device_lists_changed(&self.base, &user_id, position)
            .await
            .map_err(|error| format!("{error:?}"))
    }

    async fn receive_signing_key_update(
        &self,
        origin: &ServerName,
        update: SigningKeyUpdateContent,
    ) -> Result<(), Refusal> {
        let user_id = update.user_id;
        Self::of_origin(origin, &user_id)?;
        if !self.shares_room_with_us(&user_id).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let mut keys: Vec<RemoteCrossSigningKey> = Vec::new();
        for (usage, key) in [
            ("master", &update.master_key),
            ("self_signing", &update.self_signing_key),
        ] {
            if let Some(key) = key {
                keys.push(
                    super::devices::checked_cross_signing_key(&user_id, usage, key.json().get())
                        .ok_or_else(|| format!("a {usage} key that is not {user_id}'s"))?,
                );
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let position = self
            .base
            .storage
            .update_remote_cross_signing(user_id.as_str(), &keys)
            .await
            .map_err(|error| error.to_string())?;
        crate::e2ee::device_lists_changed(&self.base, &user_id, position)
            .await
            .map_err(|error| format!("{error:?}"))
    }

    /// Fetches a remote user's device list again, once at a time per user.
    fn resync_in_background(&self, user_id: OwnedUserId) {
        let Some(federation) = self.this.upgrade() else {
            return;
        };
        {
            let mut resyncing = self.resyncing.lock().unwrap_or_else(|p| p.into_inner());
            if !resyncing.insert(user_id.clone()) {
                return;
            }
        }
        tokio::spawn(async move {
            if let Err(error) = federation.resync_device_list(&user_id).await {
                tracing::info!(%user_id, %error, "could not fetch a device list from its server");
                let _ = federation
                    .base
                    .storage
                    .mark_remote_device_list_stale(user_id.as_str())
                    .await;
            }
            federation
                .resyncing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&user_id);
        });
    }
}
