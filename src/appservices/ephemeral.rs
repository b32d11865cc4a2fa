//! Typing notices, read receipts and presence for appservices that asked for them
//! (`receive_ephemeral`, MSC2409): each change is rendered once as the event clients get, and
//! added to the next transaction of every appservice interested in its room (or, for
//! presence, in a room the user is in). Sorted here, off the writer's path.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{interest::RoomInterest, queue::TransactionCourier};
use crate::{base::Base, ephemeral::typing::Typing, outbox::Outbox, storage::StorageError};

/// A change an appservice may want to hear of.
pub enum EphemeralNews {
    Typing {
        room_id: String,
    },
    Receipt {
        room_id: String,
        user_id: String,
        receipt_type: String,
        event_id: String,
        thread_id: String,
        ts: i64,
    },
    Presence {
        user_id: String,
    },
}

/// Runs until the server stops (the sender side goes with the services).
pub async fn sort_news(
    base: Base,
    typing: Arc<Typing>,
    outbox: Arc<Outbox<TransactionCourier>>,
    mut news: mpsc::Receiver<EphemeralNews>,
) {
    while let Some(item) = news.recv().await {
        if let Err(error) = sort(&base, &typing, &outbox, item).await {
            tracing::warn!(%error, "could not hand an appservice its typing, receipt or presence");
        }
    }
}

async fn sort(
    base: &Base,
    typing: &Typing,
    outbox: &Arc<Outbox<TransactionCourier>>,
    news: EphemeralNews,
) -> Result<(), StorageError> {
    let registry = base.appservice_registry();
    let listening: Vec<_> = registry
        .iter()
        .filter(|service| service.registration.wants_ephemeral() && service.registration.url.is_some())
        .collect();
    if listening.is_empty() {
        return Ok(());
    }
    let (item, rooms) = match &news {
        EphemeralNews::Typing { room_id } => {
            let users = typing.changed_between(room_id, i64::MIN, i64::MAX).unwrap_or_default();
            let item = json!({ "type": "m.typing", "room_id": room_id, "content": { "user_ids": users } });
            (item, vec![room_id.clone()])
        }
        EphemeralNews::Receipt {
            room_id,
            user_id,
            receipt_type,
            event_id,
            thread_id,
            ts,
        } => {
            let mut receipt = json!({ "ts": ts });
            if !thread_id.is_empty() {
                receipt["thread_id"] = Value::from(thread_id.as_str());
            }
            let content = json!({ event_id: { receipt_type: { user_id: receipt } } });
            let item = json!({ "type": "m.receipt", "room_id": room_id, "content": content });
            (item, vec![room_id.clone()])
        }
        EphemeralNews::Presence { user_id } => {
            let Some(row) = base.storage.presence(user_id).await? else {
                return Ok(());
            };
            let content = crate::ephemeral::presence::presence_content(&row);
            let item = json!({ "type": "m.presence", "sender": user_id, "content": content });
            (item, base.storage.rooms_with_membership(user_id, "join").await?)
        }
    };
    for service in listening {
        let mut interested =
            matches!(&news, EphemeralNews::Presence { user_id } if service.is_user_in_namespace(user_id));
        let mut interest = RoomInterest::now();
        for room_id in &rooms {
            if interested {
                break;
            }
            interested = interest.room(base, service, room_id).await?;
        }
        if interested {
            outbox.courier().push_ephemeral(service.id(), item.clone());
            outbox.wake_or_start(service.id().to_owned());
        }
    }
    Ok(())
}
