//! The body of `PUT /_matrix/app/v1/transactions/{txnId}`.
//!
//! ruma's `push_events` request carries the stable keys only; bridges in use today still read
//! the unstable names (mautrix reads MSC2409's `de.sorunome.msc2409.*`, and MSC3202's one-time
//! key counts under both spellings Synapse sends), so the body is written here, with each
//! value under every name a bridge may look for, as Synapse does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One-time key counts, or unused fallback key types: user → device → value.
pub type PerDevice<T> = BTreeMap<String, BTreeMap<String, T>>;

/// What one transaction hands an appservice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// Room events in client format, in stream order.
    pub events: Vec<Value>,
    /// `m.typing`, `m.receipt` and `m.presence` (MSC2409), each with its `room_id` when it
    /// belongs to a room.
    pub ephemeral: Vec<Value>,
    /// To-device messages for the appservice's users, each with `to_user_id` and
    /// `to_device_id` (MSC2409).
    pub to_device: Vec<Value>,
    /// Users whose devices changed, and users no longer sharing a room (MSC3202).
    pub device_lists_changed: Vec<String>,
    pub device_lists_left: Vec<String>,
    /// One-time key counts per algorithm of the appservice's devices (MSC3202).
    pub one_time_key_counts: PerDevice<BTreeMap<String, u64>>,
    /// Fallback key types not used yet (MSC3202).
    pub unused_fallback_key_types: PerDevice<Vec<String>>,
}

impl Transaction {
    /// Whether there is nothing worth a request (key counts alone are not news).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.ephemeral.is_empty()
            && self.to_device.is_empty()
            && self.device_lists_changed.is_empty()
            && self.device_lists_left.is_empty()
    }

    /// The JSON body, every part under each of its names.
    pub fn to_body(&self) -> Value {
        let mut body = Map::new();
        body.insert("events".into(), Value::from(self.events.clone()));
        if !self.ephemeral.is_empty() {
            body.insert("ephemeral".into(), Value::from(self.ephemeral.clone()));
            body.insert(
                "de.sorunome.msc2409.ephemeral".into(),
                Value::from(self.ephemeral.clone()),
            );
        }
        if !self.to_device.is_empty() {
            body.insert(
                "de.sorunome.msc2409.to_device".into(),
                Value::from(self.to_device.clone()),
            );
        }
        if !self.device_lists_changed.is_empty() || !self.device_lists_left.is_empty() {
            body.insert(
                "org.matrix.msc3202.device_lists".into(),
                json!({ "changed": self.device_lists_changed, "left": self.device_lists_left }),
            );
        }
        if !self.one_time_key_counts.is_empty() {
            let counts = json!(self.one_time_key_counts);
            body.insert("org.matrix.msc3202.device_one_time_keys_count".into(), counts.clone());
            body.insert("org.matrix.msc3202.device_one_time_key_counts".into(), counts);
        }
        if !self.unused_fallback_key_types.is_empty() {
            body.insert(
                "org.matrix.msc3202.device_unused_fallback_key_types".into(),
                json!(self.unused_fallback_key_types),
            );
        }
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_only_transaction_has_events_alone() {
        let transaction = Transaction {
            events: vec![json!({"type": "m.room.message"})],
            ..Transaction::default()
        };
        assert_eq!(transaction.to_body(), json!({"events": [{"type": "m.room.message"}]}));
    }

    #[test]
    fn ephemeral_and_key_counts_go_under_stable_and_unstable_names() {
        let mut transaction = Transaction {
            ephemeral: vec![json!({"type": "m.typing"})],
            ..Transaction::default()
        };
        transaction
            .one_time_key_counts
            .entry("@bot:x".into())
            .or_default()
            .insert("DEV".into(), BTreeMap::from([("signed_curve25519".to_owned(), 5)]));
        let body = transaction.to_body();
        assert_eq!(body["ephemeral"], body["de.sorunome.msc2409.ephemeral"]);
        assert_eq!(
            body["org.matrix.msc3202.device_one_time_keys_count"]["@bot:x"]["DEV"]["signed_curve25519"],
            5
        );
        assert_eq!(
            body["org.matrix.msc3202.device_one_time_keys_count"],
            body["org.matrix.msc3202.device_one_time_key_counts"]
        );
        assert!(body.get("org.matrix.msc3202.device_lists").is_none());
    }
}
