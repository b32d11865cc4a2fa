//! Sync and pagination tokens come back from clients: any text either is refused or reads as
//! a token that prints and reads back to itself.
#![no_main]

use hearth::streams::token::StreamToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(token) = StreamToken::parse(text) else {
        return;
    };
    let printed = token.to_string();
    let again = StreamToken::parse(&printed).expect("a printed token reads back");
    assert_eq!(token, again, "{text} -> {printed}");
    let _ = token.clamp_to(&StreamToken::default());
});
