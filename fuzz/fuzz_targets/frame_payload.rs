//! `Frame::take_payload` on frames flagged LZ4-compressed: decompression
//! with a limit, over arbitrary payloads; and compression round trips.
//!
//! Input: `[limit selector, payload...]` (`switchboard_fuzz::decompress_limit`).
//!
//! Invariants: never panics; an accepted payload decompresses to exactly its
//! announced size and never beyond the limit; a payload announcing more
//! than the limit is refused as `TooLarge`; `compress` then `take_payload`
//! gives back the input, and refuses it with a limit one byte short.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard::frame::{compress, Frame, FrameError, Head, Kind, Metadata, FLAG_COMPRESSED};
use switchboard_fuzz::decompress_limit;

fn compressed_frame(payload: Bytes) -> Frame {
    let head = Head { flags: FLAG_COMPRESSED, ..Head::new(Kind::Request, 1) };
    Frame { head, meta: Metadata::default(), payload }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else { return };
    let limit = decompress_limit(selector);

    // Arbitrary bytes as a compressed payload.
    let mut frame = compressed_frame(Bytes::copy_from_slice(payload));
    let claimed = payload.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    match frame.take_payload(limit) {
        Ok(out) => {
            assert!(out.len() <= limit, "{} bytes decompressed past the limit {limit}", out.len());
            assert_eq!(Some(out.len()), claimed, "decompressed size differs from the announced size");
        }
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!((Some(len as usize), max as usize), (claimed, limit));
            assert!(len as usize > limit);
        }
        Err(FrameError::BadCompression(_)) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }

    // The same bytes as plain data: compression round-trips.
    let packed = compress(payload);
    let mut frame = compressed_frame(Bytes::from(packed.clone()));
    assert_eq!(&frame.take_payload(payload.len()).expect("round trip")[..], payload);
    if !payload.is_empty() {
        let mut frame = compressed_frame(Bytes::from(packed));
        assert!(matches!(frame.take_payload(payload.len() - 1), Err(FrameError::TooLarge { .. })));
    }
});
