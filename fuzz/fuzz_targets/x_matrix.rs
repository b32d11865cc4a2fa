//! `Authorization: X-Matrix …` headers arrive from any server on the federation listener:
//! any header value is refused or parses into one that prints and parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruma::api::federation::authentication::XMatrix;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let Ok(parsed) = XMatrix::try_from(&value) else {
        return;
    };
    let printed = http::HeaderValue::from(&parsed);
    let again = XMatrix::try_from(&printed).expect("a printed X-Matrix header parses");
    assert_eq!(parsed.origin, again.origin);
    assert_eq!(parsed.destination, again.destination);
    assert_eq!(parsed.key, again.key);
    assert_eq!(parsed.sig, again.sig);
});
