//! Any request body: Hearth's own checks (NUL, nesting depth) never panic, and what they let
//! through and parses as canonical JSON (what PDUs and signatures are made of) prints and reads
//! back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruma::CanonicalJsonValue;

fuzz_target!(|data: &[u8]| {
    let checked = hearth::api::check_json_body(data);
    if checked.is_err() {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(canonical) = CanonicalJsonValue::try_from(value) else {
        return;
    };
    let text = canonical.to_string();
    let again: CanonicalJsonValue = serde_json::from_str(&text).expect("canonical JSON reads back");
    assert_eq!(canonical, again);
    assert_eq!(text, again.to_string(), "canonical JSON is one text");
});
