//! To-device messages: queued per device by `/sendToDevice`, delivered through `/sync`,
//! sliding sync's `to_device` extension and the WebSocket, and deleted once the device
//! acknowledges them by syncing with a later token.

use std::collections::BTreeMap;

use ruma::{
    OwnedDeviceId, OwnedUserId, UserId, api::client::to_device::send_event_to_device, events::AnyToDeviceEventContent,
    serde::Raw, to_device::DeviceIdOrAllDevices,
};
use serde_json::{Map, Value, json};

use crate::{
    accounts::sessions::Sender,
    base::{Base, Change},
    error::{ApiError, ApiResult},
    storage::{OutgoingToDevice, QueuedEdu, ToDeviceSent},
    streams::token::Stream,
};

/// Queues the messages of one `/sendToDevice` request and wakes the recipients' syncs.
/// Messages for other servers' users go, one EDU per server, into those servers' outbound
/// queues (in the same transaction: nothing is lost on a restart). A repeated transaction ID
/// sends nothing again.
pub async fn send(state: &Base, sender: &Sender, request: &send_event_to_device::v3::Request) -> ApiResult<()> {
    let event_type = request.event_type.to_string();
    let mut messages = Vec::new();
    // One EDU per recipient: a request to many users of one server makes several small EDUs,
    // never one too large for a transaction.
    let mut remote: BTreeMap<(String, String), Map<String, Value>> = BTreeMap::new();
    for (user_id, devices) in &request.messages {
        let local = user_id.server_name() == state.config.server_name;
        for (device, content) in devices {
            let message = outgoing(user_id, device, content.json().get())?;
            if local {
                messages.push(message);
                continue;
            }
            let content: Value = serde_json::from_str(&message.content).map_err(|_| ApiError::internal())?;
            remote
                .entry((user_id.server_name().to_string(), user_id.to_string()))
                .or_default()
                .insert(message.device_id, content);
        }
    }
    if !remote.is_empty() && !state.config.federation.enabled {
        return Err(ApiError::forbidden("Federation is disabled on this server"));
    }
    let edus: Vec<QueuedEdu> = remote
        .into_iter()
        .map(|((destination, user_id), devices)| QueuedEdu {
            destination,
            edu_type: "m.direct_to_device".to_owned(),
            content: json!({
                "sender": sender.user_id,
                "type": event_type,
                "message_id": crate::accounts::tokens::random_string(24),
                "messages": { user_id: devices },
            })
            .to_string(),
        })
        .collect();
    let sent = state
        .storage
        .send_to_device(
            (sender.user_id.as_str(), sender.device_id.as_str()),
            request.txn_id.as_str(),
            &event_type,
            &messages,
            &edus,
            state.config.limits.max_to_device_per_device,
        )
        .await?;
    announce(state, &sent);
    if sent.fresh {
        let mut woken: Vec<&str> = edus.iter().map(|edu| edu.destination.as_str()).collect();
        woken.dedup();
        for destination in woken {
            state.publish(Change::EdusQueued { destination });
        }
    }
    Ok(())
}

/// Stores the messages of an `m.direct_to_device` EDU from another server for our users'
/// devices. The EDU's `message_id` makes a repeat deliver nothing twice.
pub async fn receive(
    state: &Base,
    sender: &UserId,
    message_id: &str,
    event_type: &str,
    messages: &BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Raw<AnyToDeviceEventContent>>>,
) -> ApiResult<()> {
    let mut local = Vec::new();
    for (user_id, devices) in messages {
        if user_id.server_name() != state.config.server_name {
            continue;
        }
        for (device, content) in devices {
            local.push(outgoing(user_id, device, content.json().get())?);
        }
    }
    // The sender's "device" is the origin's message ID space: IDs are unique per server.
    let sent = state
        .storage
        .send_to_device(
            (sender.as_str(), ""),
            message_id,
            event_type,
            &local,
            &[],
            state.config.limits.max_to_device_per_device,
        )
        .await?;
    announce(state, &sent);
    Ok(())
}

/// Logs dropped messages and wakes the recipients.
fn announce(state: &Base, sent: &ToDeviceSent) {
    if sent.dropped > 0 {
        tracing::warn!(
            dropped = sent.dropped,
            "to-device inbox full: dropped the oldest messages of a device that does not sync"
        );
    }
    if let Some(position) = sent.position {
        state
            .notifier
            .advance(Stream::ToDevice, position, sent.recipients.iter().map(String::as_str));
        state.publish(Change::ToDevice {
            recipients: &sent.recipients,
        });
    }
}

/// Largest content of one to-device message. Key shares and verification messages are a few
/// KiB; the bound keeps one request (copied to every device with `*`) from filling inboxes.
const MAX_CONTENT_BYTES: usize = 64 * 1024;

fn outgoing(user_id: &OwnedUserId, device: &DeviceIdOrAllDevices, content: &str) -> ApiResult<OutgoingToDevice> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ApiError::too_large(MAX_CONTENT_BYTES));
    }
    let value: serde_json::Value =
        serde_json::from_str(content).map_err(|_| ApiError::bad_json("Message content must be JSON"))?;
    if !value.is_object() {
        return Err(ApiError::bad_json("Message content must be a JSON object"));
    }
    let device_id = match device {
        DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
        DeviceIdOrAllDevices::DeviceId(id) => OwnedDeviceId::to_string(id),
    };
    Ok(OutgoingToDevice {
        user_id: user_id.to_string(),
        device_id,
        content: value.to_string(),
    })
}
