//! Filters (inline in `/sync?filter=` or uploaded): parsing any text and applying what parses
//! to events never panics.
#![no_main]

use hearth::sync::filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, &str, &str)| {
    let (json, event_type, sender) = data;
    let Ok(definition) = filter::parse(json) else {
        return;
    };
    let room = &definition.room;
    let _ = filter::room_event_allowed(&room.timeline, event_type, sender);
    let _ = filter::room_event_allowed(&room.state, event_type, sender);
    let _ = filter::event_allowed(&definition.presence, event_type, Some(sender));
    let _ = filter::room_allowed(room, &room.timeline, sender);
    let _ = filter::timeline_limit(&room.timeline);
});
