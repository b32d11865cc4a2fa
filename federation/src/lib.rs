//! Hearth's federation-shaped protocol logic that needs no database: the server's signing
//! keys, and building, hashing, signing and identifying PDUs per room version.
//!
//! Everything cryptographic comes from ruma (`ruma::signatures`, `ruma::canonical_json`);
//! this crate decides what to feed it.

pub mod keys;
pub mod pdu;

pub use keys::{KeyError, ServerKey};
pub use pdu::{PduError, finalize_pdu};
