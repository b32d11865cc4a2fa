//! The server's ed25519 signing key and the key document it publishes at
//! `GET /_matrix/key/v2/server`.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use rand::RngExt;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, ServerName,
    signatures::{Ed25519KeyPair, sign_json},
};

/// A signing key of this server: the key pair and its ID (`ed25519:<version>`).
pub struct ServerKey {
    pair: Ed25519KeyPair,
    version: String,
    public_key: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("stored signing key is unreadable: {0}")]
    Unreadable(String),
    #[error("could not sign: {0}")]
    Signing(String),
}

impl ServerKey {
    /// A new random key. Returns the key and its PKCS#8 document, which is what to store.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let document = Ed25519KeyPair::generate().to_vec();
        // Key versions are short random strings (Synapse uses `a_XXXX`).
        let suffix: u32 = rand::rng().random();
        let version = format!("a_{:08x}", suffix);
        let key = Self::from_pkcs8(&document, &version)?;
        Ok((key, document))
    }

    /// Loads a stored key.
    pub fn from_pkcs8(document: &[u8], version: &str) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_der(document, version.to_owned()).map_err(|e| KeyError::Unreadable(e.to_string()))?;
        let public_key = pair.public_key();
        Ok(Self {
            pair,
            version: version.to_owned(),
            public_key,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.version)
    }

    /// The public key, unpadded standard base64 (as published).
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.public_key)
    }

    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Signs a JSON object in place (adds `signatures.<server>.<key id>`).
    pub fn sign_json(&self, server_name: &ServerName, object: &mut CanonicalJsonObject) -> Result<(), KeyError> {
        sign_json(server_name.as_str(), &self.pair, object).map_err(|e| KeyError::Signing(e.to_string()))
    }
}

/// A key this server used before, still published so old signatures can be checked.
pub struct OldKey {
    pub key_id: String,
    pub public_key_base64: String,
    pub expired_ts: MilliSecondsSinceUnixEpoch,
}

/// The self-signed key document of `GET /_matrix/key/v2/server`.
pub fn server_key_document(
    server_name: &ServerName,
    current: &ServerKey,
    old: &[OldKey],
    valid_until_ts: MilliSecondsSinceUnixEpoch,
) -> Result<CanonicalJsonObject, KeyError> {
    let key_object = |key: String, extra: Option<(&str, CanonicalJsonValue)>| {
        let mut object = BTreeMap::from([("key".to_owned(), CanonicalJsonValue::String(key))]);
        if let Some((name, value)) = extra {
            object.insert(name.to_owned(), value);
        }
        CanonicalJsonValue::Object(object)
    };
    let verify_keys = BTreeMap::from([(current.key_id(), key_object(current.public_key_base64(), None))]);
    let old_verify_keys: BTreeMap<String, CanonicalJsonValue> = old
        .iter()
        .map(|key| {
            let expired = CanonicalJsonValue::Integer(key.expired_ts.0.into());
            (
                key.key_id.clone(),
                key_object(key.public_key_base64.clone(), Some(("expired_ts", expired))),
            )
        })
        .collect();
    let mut document = CanonicalJsonObject::from([
        (
            "server_name".to_owned(),
            CanonicalJsonValue::String(server_name.to_string()),
        ),
        ("verify_keys".to_owned(), CanonicalJsonValue::Object(verify_keys)),
        (
            "old_verify_keys".to_owned(),
            CanonicalJsonValue::Object(old_verify_keys),
        ),
        (
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(valid_until_ts.0.into()),
        ),
    ]);
    current.sign_json(server_name, &mut document)?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use ruma::signatures::{PublicKeyMap, verify_json};

    use super::*;

    #[test]
    fn a_stored_key_loads_back_to_the_same_key() {
        let (key, document) = ServerKey::generate().unwrap();
        let loaded = ServerKey::from_pkcs8(&document, key.version()).unwrap();
        assert_eq!(loaded.public_key_base64(), key.public_key_base64());
        assert!(ServerKey::from_pkcs8(b"garbage", "x").is_err());
    }

    #[test]
    fn the_key_document_is_self_signed() {
        let (key, _) = ServerKey::generate().unwrap();
        let server: &ServerName = "example.org".try_into().unwrap();
        let document = server_key_document(server, &key, &[], MilliSecondsSinceUnixEpoch(1_000u32.into())).unwrap();
        let mut keys = PublicKeyMap::new();
        keys.insert(
            "example.org".to_owned(),
            BTreeMap::from([(key.key_id(), ruma::serde::Base64::new(key.public_key.to_vec()))]),
        );
        verify_json(&keys, &document).unwrap();
    }
}
