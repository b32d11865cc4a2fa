//! The client-server API (and the admin API beside it): handlers for what users' clients
//! call. Each authenticates through [`super::auth`], calls the area that does the work, and
//! maps the result.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod appservice;
pub mod dehydrated_device;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod key_backup;
pub mod keys;
pub mod media;
pub mod membership;
pub mod profile;
pub mod push;
pub mod register;
pub mod relations;
pub mod rooms;
pub mod session;
pub mod spaces;
pub mod sync;
pub mod user_directory;
