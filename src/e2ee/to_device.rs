//! To-device messages: queued per device by `/sendToDevice`, delivered through `/sync`,
//! sliding sync's `to_device` extension and the WebSocket, and deleted once the device
//! acknowledges them by syncing with a later token.

use ruma::{OwnedDeviceId, OwnedUserId, api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};

use crate::{
    accounts::sessions::Sender,
    base::Base,
    error::{ApiError, ApiResult},
    storage::OutgoingToDevice,
    streams::token::Stream,
};

/// Queues the messages of one `/sendToDevice` request and wakes the recipients' syncs. A
/// repeated transaction ID sends nothing again.
pub async fn send(state: &Base, sender: &Sender, request: &send_event_to_device::v3::Request) -> ApiResult<()> {
    let mut messages = Vec::new();
    for (user_id, devices) in &request.messages {
        if user_id.server_name() != state.config.server_name {
            // Remote delivery comes with federation; say so rather than drop it silently.
            return Err(ApiError::unrecognized(
                http::StatusCode::BAD_REQUEST,
                format!("Cannot send to-device messages to {user_id}: federation is not available yet"),
            ));
        }
        for (device, content) in devices {
            messages.push(outgoing(user_id, device, content.json().get())?);
        }
    }
    let sent = state
        .storage
        .send_to_device(
            (sender.user_id.as_str(), sender.device_id.as_str()),
            request.txn_id.as_str(),
            &request.event_type.to_string(),
            &messages,
            state.config.limits.max_to_device_per_device,
        )
        .await?;
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
    }
    Ok(())
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
