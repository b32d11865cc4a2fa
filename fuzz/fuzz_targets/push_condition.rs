//! Push rule conditions are set by users and evaluated against events other users send:
//! reading any condition and evaluating it against any event never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruma::{
    UInt, owned_room_id, owned_user_id,
    push::{FlattenedJson, PushCondition, PushConditionRoomCtx},
    serde::Raw,
};

fuzz_target!(|data: (&str, &str)| {
    let (condition, event) = data;
    let Ok(condition) = serde_json::from_str::<PushCondition>(condition) else {
        return;
    };
    // As Hearth's evaluator: only an event that reads as JSON is evaluated (ruma's
    // FlattenedJson panics on numbers serde_json cannot hold, such as 1e400).
    if serde_json::from_str::<serde_json::Value>(event).is_err() {
        return;
    }
    let Ok(event) = serde_json::value::RawValue::from_string(event.to_owned()) else {
        return;
    };
    let flattened = FlattenedJson::from_raw(&Raw::<serde_json::Value>::from_json(event));
    let context = PushConditionRoomCtx::new(
        owned_room_id!("!room:example.org"),
        UInt::from(5u32),
        owned_user_id!("@alice:example.org"),
        "Alice".to_owned(),
    );
    let _ = futures_executor::block_on(condition.applies(&flattened, &context));
});
