//! The WebSocket transport.
