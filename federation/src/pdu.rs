//! PDUs: turning a built event into a complete, signed PDU with its event ID, and reading a
//! stored PDU back as an event the auth rules and state resolution understand.
//!
//! Room versions differ in how events are identified and referenced:
//! - v1, v2: the event ID is `$random:server`, written into the event; `prev_events` and
//!   `auth_events` are `[event_id, {"sha256": reference_hash}]` pairs.
//! - v3 and later: the event ID is `$` + the event's reference hash (standard base64 in v3,
//!   URL-safe from v4); references are plain event IDs.
//! - v12: the room ID is `!` + the create event's reference hash, and the create event carries
//!   no `room_id`.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, ServerName, UserId,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    signatures::{hash_and_sign_event, reference_hash},
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use crate::keys::ServerKey;

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("event is larger than {MAX_PDU_BYTES} bytes")]
    TooLarge,
    #[error("could not hash or sign the event: {0}")]
    Signing(String),
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

/// How an event refers to earlier events (`prev_events`, `auth_events`) in this room version.
/// `refs` pairs each event ID with that event's stored PDU (needed for v1/v2 reference hashes).
pub fn event_references(
    rules: &RoomVersionRules,
    refs: &[(&str, &CanonicalJsonObject)],
) -> Result<CanonicalJsonValue, PduError> {
    let list = match rules.events_reference_format {
        EventsReferenceFormatVersion::V1 => refs
            .iter()
            .map(|(id, pdu)| {
                let hash = reference_hash(pdu, rules).map_err(|e| PduError::Signing(e.to_string()))?;
                let hashes = BTreeMap::from([("sha256".to_owned(), CanonicalJsonValue::String(hash))]);
                Ok(CanonicalJsonValue::Array(vec![
                    CanonicalJsonValue::String((*id).to_owned()),
                    CanonicalJsonValue::Object(hashes),
                ]))
            })
            .collect::<Result<Vec<_>, PduError>>()?,
        _ => refs
            .iter()
            .map(|(id, _)| CanonicalJsonValue::String((*id).to_owned()))
            .collect(),
    };
    Ok(CanonicalJsonValue::Array(list))
}

/// Completes a built event: content hash, this server's signature, and the event ID, per the
/// room version. The object must hold every other field already.
pub fn finalize_pdu(
    object: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    server_name: &ServerName,
    key: &ServerKey,
) -> Result<OwnedEventId, PduError> {
    let legacy_id = match rules.event_id_format {
        EventIdFormatVersion::V1 => {
            let id = OwnedEventId::try_from(format!("${}:{server_name}", random_localpart()))
                .map_err(|e| PduError::Malformed(e.to_string()))?;
            object.insert("event_id".to_owned(), CanonicalJsonValue::String(id.to_string()));
            Some(id)
        }
        _ => None,
    };
    hash_and_sign_event(server_name.as_str(), key.pair(), object, &rules.redaction).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => PduError::TooLarge,
        other => PduError::Signing(other.to_string()),
    })?;
    if ruma::canonical_json::to_canonical_value(&*object)
        .map(|value| value.to_string().len() > MAX_PDU_BYTES)
        .unwrap_or(true)
    {
        return Err(PduError::TooLarge);
    }
    match legacy_id {
        Some(id) => Ok(id),
        None => {
            let hash = reference_hash(object, rules).map_err(|e| match e {
                ruma::signatures::JsonError::PduTooLarge => PduError::TooLarge,
                other => PduError::Signing(other.to_string()),
            })?;
            OwnedEventId::try_from(format!("${hash}")).map_err(|e| PduError::Malformed(e.to_string()))
        }
    }
}

/// The room ID a v12-style create event defines: `!` + its reference hash.
pub fn room_id_from_create_event_id(event_id: &ruma::EventId) -> Result<OwnedRoomId, PduError> {
    let hash = event_id.as_str().trim_start_matches('$');
    OwnedRoomId::try_from(format!("!{hash}")).map_err(|e| PduError::Malformed(e.to_string()))
}

fn random_localpart() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..18)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A PDU as the authorization rules and state resolution see it.
#[derive(Debug, Clone)]
pub struct PduEvent {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: i64,
    pub rejected: bool,
}

/// `prev_events`/`auth_events` entries: a plain ID (v3+) or an `[id, hashes]` pair (v1, v2).
#[derive(Deserialize)]
#[serde(untagged)]
enum EventReference {
    Id(OwnedEventId),
    WithHashes(OwnedEventId, serde::de::IgnoredAny),
}

impl EventReference {
    fn into_id(self) -> OwnedEventId {
        match self {
            Self::Id(id) | Self::WithHashes(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct PduFields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<EventReference>,
    #[serde(default)]
    auth_events: Vec<EventReference>,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    depth: i64,
}

impl PduEvent {
    /// Reads a PDU from its JSON. `event_id` is the ID it is stored under (for v3+ it is not in
    /// the JSON).
    pub fn from_json(event_id: OwnedEventId, json: &str, rejected: bool) -> Result<Self, PduError> {
        let fields: PduFields = serde_json::from_str(json).map_err(|e| PduError::Malformed(e.to_string()))?;
        // From v11 `redacts` moved into the content; accept either.
        let redacts = fields.redacts.or_else(|| {
            #[derive(Deserialize)]
            struct RedactsContent {
                redacts: Option<OwnedEventId>,
            }
            serde_json::from_str::<RedactsContent>(fields.content.get())
                .ok()?
                .redacts
        });
        Ok(Self {
            event_id,
            room_id: fields.room_id,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events.into_iter().map(EventReference::into_id).collect(),
            auth_events: fields.auth_events.into_iter().map(EventReference::into_id).collect(),
            redacts,
            depth: fields.depth,
            rejected,
        })
    }
}

impl ruma::state_res::Event for PduEvent {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use ruma::RoomVersionId;

    use super::*;

    /// The spec's test key (appendices, "Cryptographic test vectors"): seed
    /// `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`, key ID `ed25519:1`, server `domain`.
    fn spec_key() -> ServerKey {
        // The spec's seed has non-zero trailing bits, which strict decoders refuse.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let seed = lenient.decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        // A PKCS#8 v1 document for an ed25519 private key is this fixed prefix and the seed.
        let mut document = hex_bytes("302e020100300506032b657004220420");
        document.extend_from_slice(&seed);
        ServerKey::from_pkcs8(&document, "1").unwrap()
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn object(json: serde_json::Value) -> CanonicalJsonObject {
        match CanonicalJsonValue::try_from(json).unwrap() {
            CanonicalJsonValue::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    fn server() -> &'static ServerName {
        "domain".try_into().unwrap()
    }

    #[test]
    fn json_signing_matches_the_spec_vectors() {
        let key = spec_key();
        let mut empty = object(serde_json::json!({}));
        key.sign_json(server(), &mut empty).unwrap();
        assert_eq!(
            empty["signatures"],
            CanonicalJsonValue::try_from(serde_json::json!({ "domain": { "ed25519:1":
                "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ" } }))
            .unwrap()
        );
        let mut data = object(serde_json::json!({ "one": 1, "two": "Two" }));
        key.sign_json(server(), &mut data).unwrap();
        assert_eq!(
            data["signatures"],
            CanonicalJsonValue::try_from(serde_json::json!({ "domain": { "ed25519:1":
                "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw" } }))
            .unwrap()
        );
    }

    #[test]
    fn event_hashing_and_signing_match_the_spec_vectors() {
        let key = spec_key();
        let mut event = object(serde_json::json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
            "origin_server_ts": 1000000, "type": "X", "content": {},
            "prev_events": [], "auth_events": [], "depth": 3,
            "unsigned": { "age_ts": 1000000 }
        }));
        let rules = RoomVersionId::V3.rules().unwrap();
        let event_id = finalize_pdu(&mut event, &rules, server(), &key).unwrap();
        assert_eq!(
            event["hashes"],
            CanonicalJsonValue::try_from(
                serde_json::json!({ "sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos" })
            )
            .unwrap()
        );
        assert_eq!(
            event["signatures"],
            CanonicalJsonValue::try_from(serde_json::json!({ "domain": { "ed25519:1":
                "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg" } }))
            .unwrap()
        );
        // v3+: the event ID is the reference hash.
        assert_eq!(
            event_id.as_str(),
            format!("${}", reference_hash(&event, &rules).unwrap())
        );
    }

    #[test]
    fn event_ids_follow_the_room_version() {
        let key = spec_key();
        let base = serde_json::json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin_server_ts": 1, "type": "X",
            "content": { "body": "hi" }, "prev_events": [], "auth_events": [], "depth": 1
        });
        let v1 = finalize_pdu(
            &mut object(base.clone()),
            &RoomVersionId::V1.rules().unwrap(),
            server(),
            &key,
        )
        .unwrap();
        assert!(v1.as_str().ends_with(":domain"), "{v1}");
        let v4 = finalize_pdu(
            &mut object(base.clone()),
            &RoomVersionId::V4.rules().unwrap(),
            server(),
            &key,
        )
        .unwrap();
        assert!(
            !v4.as_str().contains(':') && !v4.as_str()[1..].contains('/') && !v4.as_str().contains('+'),
            "{v4}"
        );
        let room = room_id_from_create_event_id(&v4).unwrap();
        assert_eq!(&room.as_str()[1..], &v4.as_str()[1..]);
    }

    #[test]
    fn oversized_events_are_refused() {
        let key = spec_key();
        let mut big = object(serde_json::json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin_server_ts": 1, "type": "X",
            "content": { "body": "x".repeat(70_000) }, "prev_events": [], "auth_events": [], "depth": 1
        }));
        let result = finalize_pdu(&mut big, &RoomVersionId::V11.rules().unwrap(), server(), &key);
        assert!(matches!(result, Err(PduError::TooLarge)), "{result:?}");
    }

    #[test]
    fn stored_pdus_of_every_format_read_back() {
        let v1 = r#"{"event_id":"$a:d","room_id":"!r:d","sender":"@u:d","origin_server_ts":5,"type":"m.room.redaction",
            "content":{},"redacts":"$b:d","prev_events":[["$p:d",{"sha256":"x"}]],"auth_events":[["$c:d",{"sha256":"y"}]],"depth":4}"#;
        let event = PduEvent::from_json("$a:d".try_into().unwrap(), v1, false).unwrap();
        assert_eq!(event.prev_events[0].as_str(), "$p:d");
        assert_eq!(event.auth_events[0].as_str(), "$c:d");
        assert_eq!(event.redacts.as_ref().unwrap().as_str(), "$b:d");
        let v11 = r#"{"room_id":"!r:d","sender":"@u:d","origin_server_ts":5,"type":"m.room.redaction",
            "content":{"redacts":"$b"},"prev_events":["$p"],"auth_events":["$c"],"depth":4}"#;
        let event = PduEvent::from_json("$a".try_into().unwrap(), v11, false).unwrap();
        assert_eq!(event.redacts.as_ref().unwrap().as_str(), "$b");
        assert!(PduEvent::from_json("$a".try_into().unwrap(), "{}", false).is_err());
    }
}
