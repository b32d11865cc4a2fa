//! The server-server API: what other homeservers call. Today the server's own signing keys;
//! federation (issue 20) adds the rest here, authenticated by X-Matrix in [`super::auth`].

pub mod keys;
