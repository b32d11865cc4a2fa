//! Hearth, a Matrix homeserver.
//!
//! Start with [`server::run`], which wires configuration, storage and the HTTP router, and
//! with [`api::router`], the table of every endpoint.

pub mod account_data;
pub mod accounts;
pub mod api;
pub mod appservices;
pub mod base;
pub mod cache;
pub mod config;
pub mod e2ee;
pub mod ephemeral;
pub mod error;
pub mod federation;
pub mod json;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod push;
pub mod ratelimit;
pub mod rooms;
pub mod server;
pub mod services;
pub mod signing;
pub mod storage;
pub mod streams;
pub mod sync;
pub mod tls;
