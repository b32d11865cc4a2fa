//! The server-server API: what other homeservers call. Every endpoint but the key ones is
//! signed with `X-Matrix`; [`super::auth::verify_origin`] checks it (through [`super::ruma::Ruma`]) before
//! the request is parsed.

pub mod devices;
pub mod directory;
pub mod events;
pub mod keys;
pub mod membership;
pub mod openid;
pub mod query;
pub mod transactions;
pub mod version;

pub use super::auth::federation;
