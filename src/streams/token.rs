//! Sync tokens: one position per stream, written `s{events}_{account_data}_{receipts}_{typing}_
//! {presence}_{to_device}_{device_lists}`.
//!
//! The events component is a pagination gap, as in `/messages` tokens (`s<N>`): "every event
//! below N". The others are the last position included. So a sync token is also a valid
//! `/messages` token, as clients expect of Synapse.

use std::fmt;

/// A token this server did not give out (or no longer can read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidToken(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Room events, by stream ordering (the last persisted event, not the gap).
    Events = 0,
    AccountData = 1,
    Receipts = 2,
    /// Typing notices live in memory; the position starts at the clock's milliseconds when the
    /// process starts, so positions keep rising across restarts.
    Typing = 3,
    Presence = 4,
    ToDevice = 5,
    DeviceLists = 6,
}

impl Stream {
    pub const COUNT: usize = 7;
    pub const ALL: [Stream; Self::COUNT] = [
        Stream::Events,
        Stream::AccountData,
        Stream::Receipts,
        Stream::Typing,
        Stream::Presence,
        Stream::ToDevice,
        Stream::DeviceLists,
    ];

    /// The row in `stream_positions`, for streams kept in the database.
    pub fn table_name(self) -> Option<&'static str> {
        match self {
            Stream::Events => Some("events"),
            Stream::AccountData => Some("account_data"),
            Stream::Receipts => Some("receipts"),
            Stream::Typing => None,
            Stream::Presence => Some("presence"),
            Stream::ToDevice => Some("to_device"),
            Stream::DeviceLists => Some("device_lists"),
        }
    }
}

/// A position on every stream. `get(Stream::Events)` is the last event included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamToken([i64; Stream::COUNT]);

impl StreamToken {
    pub fn get(&self, stream: Stream) -> i64 {
        self.0[stream as usize]
    }

    pub fn set(&mut self, stream: Stream, position: i64) {
        self.0[stream as usize] = position;
    }

    /// The last event position covered.
    pub fn events(&self) -> i64 {
        self.get(Stream::Events)
    }

    /// Reads a token a client sent back. A `/messages` token (`s<N>`) reads as "nothing seen"
    /// on the other streams.
    pub fn parse(text: &str) -> Result<Self, InvalidToken> {
        let invalid = || InvalidToken(text.to_owned());
        let body = text.strip_prefix('s').ok_or_else(invalid)?;
        let mut token = Self::default();
        let parts: Vec<&str> = body.split('_').collect();
        if parts.len() > Stream::COUNT {
            return Err(invalid());
        }
        for (index, part) in parts.iter().enumerate() {
            let value: i64 = part.parse().map_err(|_| invalid())?;
            if value < 0 {
                return Err(invalid());
            }
            token.0[index] = value;
        }
        // The text holds the gap after the last event.
        token.0[0] = (token.0[0] - 1).max(0);
        Ok(token)
    }

    /// Each component no later than `current`: a token from before a restore (or a typing
    /// position from a clock that went back) must not make the server wait for positions
    /// that will never come, nor skip what comes next.
    pub fn clamp_to(mut self, current: &StreamToken) -> Self {
        for stream in Stream::ALL {
            let position = self.get(stream).min(current.get(stream));
            self.set(stream, position);
        }
        self
    }
}

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0[0] + 1)?;
        for value in &self.0[1..] {
            write!(f, "_{value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_pagination_tokens() {
        let mut token = StreamToken::default();
        token.set(Stream::Events, 41);
        token.set(Stream::Typing, 7);
        let text = token.to_string();
        assert_eq!(text, "s42_0_0_7_0_0_0");
        assert_eq!(StreamToken::parse(&text).unwrap(), token);
        assert_eq!(StreamToken::parse("s42").unwrap().events(), 41);
        for bad in ["", "42", "s", "sx_1", "s1_2_3_4_5_6_7_8", "s-3"] {
            assert!(StreamToken::parse(bad).is_err(), "{bad}");
        }
    }
}
