//! Hearth's application services: everything about them that needs no database.
//!
//! - [`registration`]: the registration files (Synapse's YAML format), checked one by one and
//!   against each other, and new ones generated with random tokens.
//! - [`namespaces`]: which users, aliases and rooms an appservice claims or is interested in,
//!   and the [`Registry`] of every registered appservice, found by token or by ID.
//! - [`transaction`]: the body of `PUT /_matrix/app/v1/transactions/{txnId}`, with the unstable
//!   keys bridges still read.
//! - [`client`]: the homeserver's calls to an appservice (transactions, user and alias queries,
//!   ping, third-party lookups), authenticated with its `hs_token`.
//!
//! The homeserver (`hearth`) owns the persistent queue and decides what each appservice is
//! sent; this crate never depends on it.

pub mod client;
pub mod namespaces;
pub mod registration;
pub mod transaction;

pub use client::{AppserviceClient, CallError};
pub use namespaces::{Appservice, Registry};
pub use registration::{Registration, RegistrationError};
