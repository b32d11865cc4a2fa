//! The `Range` header of media downloads (RFC 9110 §14): one range of bytes, or the whole
//! file when the header is absent, malformed or asks for several.

use std::ops::Range;

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, malformed, or several): the whole file, as RFC 9110 allows.
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110 §14.1.2), for a file of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let parse = |text: &str| text.trim().parse::<u64>().ok();
    let range = match (start.trim().is_empty(), end.trim().is_empty()) {
        // The last n bytes.
        (true, false) => match parse(end) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(suffix) => size.saturating_sub(suffix)..size,
            None => return RangeRequest::Whole,
        },
        (false, true) => match parse(start) {
            Some(start) => start..size,
            None => return RangeRequest::Whole,
        },
        (false, false) => match (parse(start), parse(end)) {
            (Some(start), Some(end)) if start <= end => start..end.saturating_add(1).min(size),
            _ => return RangeRequest::Whole,
        },
        (true, true) => return RangeRequest::Whole,
    };
    if range.start >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Part(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeRequest::Part(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), RangeRequest::Part(900..1000));
        assert_eq!(parse_range("bytes=-100", 1000), RangeRequest::Part(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeRequest::Part(0..1000));
        assert_eq!(parse_range("bytes=500-5000", 1000), RangeRequest::Part(500..1000));
        assert_eq!(parse_range("bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeRequest::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeRequest::Whole);
        assert_eq!(parse_range("items=0-1", 1000), RangeRequest::Whole);
        assert_eq!(parse_range("bytes=x-y", 1000), RangeRequest::Whole);
        // Found by the `range` fuzz target: the last position a u64 holds overflowed `end + 1`
        // (a panic in debug builds, an empty range in release).
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 1000),
            RangeRequest::Part(0..1000)
        );
    }
}
