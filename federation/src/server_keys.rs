//! Other servers' signing keys: checking a key document (`GET /_matrix/key/v2/server`, or one
//! a notary relays), and the key map signature checks need.
//!
//! A key document is trusted only if the server signed it with the keys it lists: otherwise
//! anyone on the path could hand us keys for any server. A notary's copy must also carry the
//! notary's own signature, checked with keys we already hold for the notary.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, verify_json},
};

/// One verify key of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded standard base64, as published.
    pub public_key: String,
    /// Until when (ms) the key may verify events: `valid_until_ts` for current keys,
    /// `expired_ts` for old ones.
    pub valid_until_ts: u64,
    /// Listed under `old_verify_keys`.
    pub expired: bool,
}

/// A key document whose signatures were checked.
#[derive(Debug, Clone)]
pub struct VerifiedKeys {
    pub server_name: OwnedServerName,
    pub keys: Vec<RemoteKey>,
    /// The document as the server signed it (what a notary serves on, with its signature
    /// added).
    pub document: CanonicalJsonObject,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyDocumentError {
    #[error("the key document is malformed: {0}")]
    Malformed(String),
    #[error("the key document is for {found}, not {expected}")]
    WrongServer { expected: String, found: String },
    #[error("the key document is not signed by the keys it lists")]
    NotSelfSigned,
    #[error("a signature on the key document does not verify: {0}")]
    BadSignature(String),
    #[error("the notary did not sign the key document")]
    NotarySignatureMissing,
}

/// Checks a key document for `expected` (the server we asked about): names that server,
/// lists its keys, and is signed by every one of its current keys that signed it, with at
/// least one signature. Expired documents are still accepted: old keys verify old events;
/// `valid_until_ts` decides what a key may verify.
pub fn verify_key_document(
    document: CanonicalJsonObject,
    expected: &ServerName,
) -> Result<VerifiedKeys, KeyDocumentError> {
    let server_name = match document.get("server_name") {
        Some(CanonicalJsonValue::String(name)) => name.clone(),
        _ => return Err(KeyDocumentError::Malformed("no server_name".into())),
    };
    if server_name != expected.as_str() {
        return Err(KeyDocumentError::WrongServer {
            expected: expected.to_string(),
            found: server_name,
        });
    }
    let valid_until_ts = match document.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => return Err(KeyDocumentError::Malformed("no valid_until_ts".into())),
    };
    let mut keys = Vec::new();
    let current =
        object_field(&document, "verify_keys")?.ok_or_else(|| KeyDocumentError::Malformed("no verify_keys".into()))?;
    for (key_id, value) in current {
        keys.push(RemoteKey {
            key_id: key_id.clone(),
            public_key: key_string(value, "key", key_id)?,
            valid_until_ts,
            expired: false,
        });
    }
    for (key_id, value) in object_field(&document, "old_verify_keys")?.unwrap_or(&BTreeMap::new()) {
        let expired_ts = match value {
            CanonicalJsonValue::Object(fields) => match fields.get("expired_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
                _ => return Err(KeyDocumentError::Malformed(format!("{key_id} has no expired_ts"))),
            },
            _ => return Err(KeyDocumentError::Malformed(format!("{key_id} is not an object"))),
        };
        keys.push(RemoteKey {
            key_id: key_id.clone(),
            public_key: key_string(value, "key", key_id)?,
            valid_until_ts: expired_ts,
            expired: true,
        });
    }
    // Only the current keys may vouch for the document.
    let own: PublicKeySet = keys
        .iter()
        .filter(|key| !key.expired)
        .filter_map(|key| Some((key.key_id.clone(), Base64::parse(&key.public_key).ok()?)))
        .collect();
    let signed_with: Vec<String> = signature_key_ids(&document, &server_name);
    if signed_with.is_empty() || signed_with.iter().any(|id| !own.contains_key(id)) {
        return Err(KeyDocumentError::NotSelfSigned);
    }
    let map = PublicKeyMap::from([(server_name.clone(), own)]);
    let mut only_own = document.clone();
    keep_signatures_of(&mut only_own, &[server_name.as_str()]);
    verify_json(&map, &only_own).map_err(|e| KeyDocumentError::BadSignature(e.to_string()))?;
    let server_name = OwnedServerName::try_from(server_name).map_err(|e| KeyDocumentError::Malformed(e.to_string()))?;
    Ok(VerifiedKeys {
        server_name,
        keys,
        document,
    })
}

/// Checks a notary's copy of a key document: the server's own signatures as above, and the
/// notary's, with keys we hold for the notary.
pub fn verify_notarised_document(
    document: CanonicalJsonObject,
    expected: &ServerName,
    notary: &ServerName,
    notary_keys: &PublicKeySet,
) -> Result<VerifiedKeys, KeyDocumentError> {
    if signature_key_ids(&document, notary.as_str()).is_empty() {
        return Err(KeyDocumentError::NotarySignatureMissing);
    }
    let mut only_notary = document.clone();
    keep_signatures_of(&mut only_notary, &[notary.as_str()]);
    let map = PublicKeyMap::from([(notary.to_string(), notary_keys.clone())]);
    verify_json(&map, &only_notary).map_err(|e| KeyDocumentError::BadSignature(e.to_string()))?;
    verify_key_document(document, expected)
}

/// The key map for verifying signatures of `server` with `keys`, keeping those valid at
/// `at_ms` (for events: their `origin_server_ts`; for requests: now).
pub fn key_set(keys: &[RemoteKey], at_ms: u64) -> PublicKeySet {
    keys.iter()
        .filter(|key| key.valid_until_ts >= at_ms)
        .filter_map(|key| Some((key.key_id.clone(), Base64::parse(&key.public_key).ok()?)))
        .collect()
}

fn object_field<'a>(
    document: &'a CanonicalJsonObject,
    field: &str,
) -> Result<Option<&'a CanonicalJsonObject>, KeyDocumentError> {
    match document.get(field) {
        None => Ok(None),
        Some(CanonicalJsonValue::Object(object)) => Ok(Some(object)),
        Some(_) => Err(KeyDocumentError::Malformed(format!("{field} is not an object"))),
    }
}

fn key_string(value: &CanonicalJsonValue, field: &str, key_id: &str) -> Result<String, KeyDocumentError> {
    match value {
        CanonicalJsonValue::Object(fields) => match fields.get(field) {
            Some(CanonicalJsonValue::String(key)) if Base64::<ruma::serde::base64::Standard>::parse(key).is_ok() => {
                Ok(key.clone())
            }
            _ => Err(KeyDocumentError::Malformed(format!("{key_id} has no usable {field}"))),
        },
        _ => Err(KeyDocumentError::Malformed(format!("{key_id} is not an object"))),
    }
}

/// The key IDs `entity` signed the object with.
fn signature_key_ids(object: &CanonicalJsonObject, entity: &str) -> Vec<String> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(entity) {
            Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Drops every signature but those of `entities` (verify_json checks every entity it finds).
fn keep_signatures_of(object: &mut CanonicalJsonObject, entities: &[&str]) {
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|entity, _| entities.contains(&entity.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{OldKey, ServerKey, server_key_document};
    use ruma::{MilliSecondsSinceUnixEpoch, UInt};

    fn document_of(name: &ServerName, key: &ServerKey, old: &[OldKey]) -> CanonicalJsonObject {
        server_key_document(name, key, old, MilliSecondsSinceUnixEpoch(UInt::new(5_000).unwrap())).unwrap()
    }

    fn name(server: &str) -> &ServerName {
        server.try_into().unwrap()
    }

    #[test]
    fn a_self_signed_document_is_accepted_with_its_old_keys() {
        let (key, _) = ServerKey::generate().unwrap();
        let (old, _) = ServerKey::generate().unwrap();
        let retired = OldKey {
            key_id: old.key_id(),
            public_key_base64: old.public_key_base64(),
            expired_ts: MilliSecondsSinceUnixEpoch(UInt::new(1_000).unwrap()),
        };
        let verified = verify_key_document(document_of(name("a.test"), &key, &[retired]), name("a.test")).unwrap();
        assert_eq!(verified.keys.len(), 2);
        let set = key_set(&verified.keys, 2_000);
        assert!(set.contains_key(&key.key_id()) && !set.contains_key(&old.key_id()));
        assert_eq!(
            key_set(&verified.keys, 500).len(),
            2,
            "the old key verifies what it signed before it expired"
        );
        assert!(
            key_set(&verified.keys, 6_000).is_empty(),
            "nothing verifies past valid_until_ts"
        );
    }

    #[test]
    fn a_document_for_another_server_or_with_a_forged_key_is_refused() {
        let (key, _) = ServerKey::generate().unwrap();
        let document = document_of(name("a.test"), &key, &[]);
        assert!(matches!(
            verify_key_document(document.clone(), name("b.test")),
            Err(KeyDocumentError::WrongServer { .. })
        ));
        // Someone swaps in their own public key under the same ID: the signature no longer
        // verifies.
        let (other, _) = ServerKey::generate().unwrap();
        let mut forged = document;
        if let Some(CanonicalJsonValue::Object(keys)) = forged.get_mut("verify_keys") {
            keys.insert(
                key.key_id(),
                CanonicalJsonValue::Object(BTreeMap::from([(
                    "key".to_owned(),
                    CanonicalJsonValue::String(other.public_key_base64()),
                )])),
            );
        }
        assert!(matches!(
            verify_key_document(forged, name("a.test")),
            Err(KeyDocumentError::BadSignature(_))
        ));
    }

    #[test]
    fn an_unsigned_document_is_refused() {
        let (key, _) = ServerKey::generate().unwrap();
        let mut document = document_of(name("a.test"), &key, &[]);
        document.remove("signatures");
        assert_eq!(
            verify_key_document(document, name("a.test")).unwrap_err(),
            KeyDocumentError::NotSelfSigned
        );
    }

    #[test]
    fn a_notarised_document_needs_the_notary_signature() {
        let (key, _) = ServerKey::generate().unwrap();
        let (notary, _) = ServerKey::generate().unwrap();
        let notary_set = PublicKeySet::from([(notary.key_id(), Base64::parse(notary.public_key_base64()).unwrap())]);
        let mut document = document_of(name("a.test"), &key, &[]);
        assert_eq!(
            verify_notarised_document(document.clone(), name("a.test"), name("n.test"), &notary_set).unwrap_err(),
            KeyDocumentError::NotarySignatureMissing
        );
        notary.sign_json(name("n.test"), &mut document).unwrap();
        verify_notarised_document(document.clone(), name("a.test"), name("n.test"), &notary_set).unwrap();
        let (stranger, _) = ServerKey::generate().unwrap();
        let wrong = PublicKeySet::from([(notary.key_id(), Base64::parse(stranger.public_key_base64()).unwrap())]);
        assert!(verify_notarised_document(document, name("a.test"), name("n.test"), &wrong).is_err());
    }
}
