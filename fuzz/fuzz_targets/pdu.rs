//! A PDU as another server would send it, for each room version: reading it, computing its
//! reference hash and event ID, checking its content hash and redacting it never panic, and a
//! redacted PDU redacts to itself.
#![no_main]

use hearth_federation::pdu::PduEvent;
use libfuzzer_sys::fuzz_target;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, canonical_json::redact, signatures::reference_hash,
};

const VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let version = &VERSIONS[usize::from(selector) % VERSIONS.len()];
    let rules = version.rules().expect("a known version");
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    let Ok(object) = serde_json::from_str::<CanonicalJsonObject>(text) else {
        return;
    };
    if let Ok(hash) = reference_hash(&object, &rules) {
        let event_id = ruma::OwnedEventId::try_from(format!("${hash}"))
            .or_else(|_| ruma::OwnedEventId::try_from(format!("${hash}:example.org")));
        if let Ok(event_id) = event_id {
            let _ = PduEvent::from_json(event_id, text, false);
        }
    }
    let _ = ruma::signatures::verify_event(&Default::default(), &object, &rules);
    if let Ok(redacted) = redact(object, &rules.redaction, None) {
        let again = redact(redacted.clone(), &rules.redaction, None).expect("a redacted event redacts");
        assert_eq!(
            CanonicalJsonValue::Object(redacted),
            CanonicalJsonValue::Object(again),
            "redaction is idempotent"
        );
    }
});
