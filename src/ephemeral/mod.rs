//! Ephemeral streams: typing notices, read and delivery receipts, and presence. Each keeps
//! its own state (typing in memory, the rest in storage), numbers its changes on a stream
//! (see [`crate::streams`]) and wakes the clients that care. The sync transports read them;
//! federation EDUs and appservice ephemeral events will too.

pub mod delivery;
pub mod presence;
pub mod receipts;
pub mod typing;

/// The receipt type of delivery receipts (beyond the spec; see docs/delivered.md).
pub const DELIVERED: &str = "io.hearth.delivered";
