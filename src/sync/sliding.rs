//! Simplified sliding sync (MSC4186).
