//! Hearth's integration tests, one module per area, linked into one test binary: one link of the
//! server and its dependencies instead of one per area, which keeps a clean build's time and
//! disk small. Run one area with a name filter, e.g. `cargo nextest run media::`.

mod common;

mod account;
mod account_data;
mod admin;
mod appservice;
mod connections;
mod dehydrated_device;
mod device_lists;
mod devices;
mod directory;
mod discovery;
mod e2ee_keys;
mod ephemeral;
mod federation;
mod guests;
mod history;
mod key_backup;
mod login;
mod malformed_input;
mod media;
mod media_images;
mod privacy;
mod profile;
mod published;
mod push_rules;
mod pushers;
mod rate_limits;
mod register;
mod relations;
mod room_behaviour;
mod room_rules;
mod rooms;
mod schema_check;
mod servers;
mod sliding_sync;
mod storage;
mod sync;
mod sync_state;
mod to_device;
mod uia;
mod websocket;
