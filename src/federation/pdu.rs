//! Checking a PDU from another server before it enters the pipeline, in the spec's order:
//! the format its room version requires, the signatures of the servers that must sign it,
//! and its content hash (a mismatch does not reject it: it is kept redacted).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, Verified, reference_hash, required_server_signatures_to_verify_event, verify_event},
    state_res::check_pdu_format,
};

use super::Federation;

/// Why a PDU was refused before the auth rules saw it.
#[derive(Debug, thiserror::Error)]
pub enum PduCheckError {
    #[error("malformed PDU: {0}")]
    Format(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("could not read keys")]
    Internal,
}

impl Federation {
    /// Checks a PDU; returns its event ID and the object to store (redacted when its content
    /// hash does not match).
    pub async fn check_pdu(
        &self,
        mut object: CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<(OwnedEventId, CanonicalJsonObject), PduCheckError> {
        // What a sender may add on the way is not part of the event.
        object.remove("unsigned");
        check_pdu_format(&object, &rules.event_format).map_err(PduCheckError::Format)?;
        let event_id = event_id_of(&object, rules)?;
        let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
            .map_err(|e| PduCheckError::Format(e.to_string()))?;
        let at = if rules.enforce_key_validity {
            match object.get("origin_server_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
                _ => 0,
            }
        } else {
            0
        };
        let mut keys = PublicKeyMap::new();
        for server in &servers {
            let wanted = signing_key_ids(&object, server);
            let set = self
                .key_set(server, &wanted, at)
                .await
                .map_err(|_| PduCheckError::Internal)?;
            keys.insert(server.to_string(), set);
        }
        match verify_event(&keys, &object, rules) {
            Ok(Verified::All) => Ok((event_id, object)),
            Ok(Verified::Signatures) => {
                tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
                let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
                    .map_err(|e| PduCheckError::Format(e.to_string()))?;
                Ok((event_id, redacted))
            }
            Err(error) => Err(PduCheckError::Signature(error.to_string())),
        }
    }
}

/// The event ID: written in the event (v1, v2) or its reference hash (v3 on).
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId, PduCheckError> {
    let id = match rules.event_id_format {
        EventIdFormatVersion::V1 => match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => return Err(PduCheckError::Format("no event_id".into())),
        },
        _ => format!(
            "${}",
            reference_hash(object, rules).map_err(|e| PduCheckError::Format(e.to_string()))?
        ),
    };
    OwnedEventId::try_from(id).map_err(|e| PduCheckError::Format(e.to_string()))
}

/// The key IDs `server` signed the object with.
fn signing_key_ids(object: &CanonicalJsonObject, server: &OwnedServerName) -> Vec<String> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(server.as_str()) {
            Some(CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
