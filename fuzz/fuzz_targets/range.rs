//! The `Range` header of media downloads: for any header and file size the answer is the
//! whole file, unsatisfiable, or a non-empty range inside the file. Input: the file size (8
//! bytes, little-endian), then the header.
#![no_main]

use hearth::media::range::{RangeRequest, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let header = String::from_utf8_lossy(header);
    if let RangeRequest::Part(range) = parse_range(&header, size) {
        assert!(
            range.start < range.end && range.end <= size,
            "{header:?} for {size} bytes gave {range:?}"
        );
    }
});
