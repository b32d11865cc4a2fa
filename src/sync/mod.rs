//! The sync transports: `/sync` (v3), simplified sliding sync and the WebSocket, with the
//! filters and timeline windows they share. They sit on top: they read the streams
//! ([`crate::streams`]), the ephemeral streams ([`crate::ephemeral`]), rooms, E2EE and push,
//! and nothing below imports them.

pub mod filter;
pub mod sliding;
pub mod v3;
pub mod websocket;
pub mod window;
