//! Hearth's federation protocol logic that needs no database: the server's signing keys,
//! building, hashing, signing and identifying PDUs per room version, checking other servers'
//! key documents, server discovery, and the signed outbound client.
//!
//! Everything cryptographic comes from ruma (`ruma::signatures`, `ruma::canonical_json`);
//! this crate decides what to feed it.

pub mod client;
pub mod discovery;
pub mod keys;
pub mod pdu;
pub mod server_keys;

pub use keys::{KeyError, ServerKey};
pub use pdu::{PduError, finalize_pdu};
