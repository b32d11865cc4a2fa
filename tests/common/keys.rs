//! Real ed25519 keys for the encryption tests: devices that sign their keys, and
//! cross-signing keys, as a client would make them.

#![allow(dead_code)]

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    canonical_json::try_from_json_map,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use super::Session;

/// An ed25519 key pair; `key_id` is `ed25519:<name>`.
pub struct Key {
    pair: Ed25519KeyPair,
    pub public: String,
}

impl Key {
    /// A key named by `name` (a device ID), or by its own public key when `name` is None
    /// (cross-signing keys).
    pub fn new(name: Option<&str>) -> Self {
        let document = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&document, String::new()).expect("key");
        let public = STANDARD_NO_PAD.encode(probe.public_key());
        let version = name.map_or_else(|| public.clone(), str::to_owned);
        let pair = Ed25519KeyPair::from_der(&document, version).expect("key");
        Self { pair, public }
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// Adds this key's signature, as `signer`'s, to a JSON object.
    pub fn sign(&self, signer: &str, value: &Value) -> Value {
        let mut object = try_from_json_map(value.as_object().expect("object").clone()).expect("canonical");
        sign_json(signer, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).expect("json")
    }

    /// Only the signature this key makes on `value`.
    pub fn signature(&self, signer: &str, value: &Value) -> String {
        self.sign(signer, value)["signatures"][signer][self.key_id()]
            .as_str()
            .expect("signature")
            .to_owned()
    }
}

/// A device with its identity key.
pub struct Device {
    pub user_id: String,
    pub device_id: String,
    pub key: Key,
}

impl Device {
    pub fn new(session: &Session) -> Self {
        Self {
            user_id: session.user_id.clone(),
            device_id: session.device_id.clone(),
            key: Key::new(Some(&session.device_id)),
        }
    }

    /// The device keys, self-signed.
    pub fn device_keys(&self) -> Value {
        let keys = json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.device_id): STANDARD_NO_PAD.encode([7u8; 32]),
                format!("ed25519:{}", self.device_id): self.key.public,
            },
        });
        self.key.sign(&self.user_id, &keys)
    }

    /// `count` signed curve25519 one-time keys, IDs `<prefix>0`, `<prefix>1`, …
    pub fn one_time_keys(&self, prefix: &str, count: usize) -> Value {
        let mut keys = serde_json::Map::new();
        for index in 0..count {
            let key = json!({ "key": STANDARD_NO_PAD.encode([u8::try_from(index % 256).unwrap(); 32]) });
            keys.insert(
                format!("signed_curve25519:{prefix}{index}"),
                self.key.sign(&self.user_id, &key),
            );
        }
        Value::Object(keys)
    }

    pub fn fallback_key(&self, id: &str) -> Value {
        let key = json!({ "key": STANDARD_NO_PAD.encode([9u8; 32]), "fallback": true });
        json!({ format!("signed_curve25519:{id}"): self.key.sign(&self.user_id, &key) })
    }
}

/// A user's three cross-signing keys and their upload bodies.
pub struct CrossSigning {
    pub user_id: String,
    pub master: Key,
    pub self_signing: Key,
    pub user_signing: Key,
}

impl CrossSigning {
    pub fn new(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            master: Key::new(None),
            self_signing: Key::new(None),
            user_signing: Key::new(None),
        }
    }

    fn key_json(&self, key: &Key, usage: &str) -> Value {
        json!({ "user_id": self.user_id, "usage": [usage], "keys": { key.key_id(): key.public } })
    }

    pub fn master_json(&self) -> Value {
        self.key_json(&self.master, "master")
    }

    /// The body of `/keys/device_signing/upload`, the sub-keys signed by the master key.
    pub fn upload_body(&self) -> Value {
        json!({
            "master_key": self.master_json(),
            "self_signing_key": self.master.sign(&self.user_id, &self.key_json(&self.self_signing, "self_signing")),
            "user_signing_key": self.master.sign(&self.user_id, &self.key_json(&self.user_signing, "user_signing")),
        })
    }
}
