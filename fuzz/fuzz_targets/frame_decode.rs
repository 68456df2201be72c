//! `FrameDecoder::decode` over arbitrary bytes, fed whole and in arbitrary
//! chunks, and `Frame::take_payload` on every decoded frame.
//!
//! Input: `[chunk seed, max-frame selector, decompress-limit selector,
//! stream...]` (`switchboard_fuzz::split_frame_input`).
//!
//! Invariants:
//! - decoding never panics, and the frames, oversized skips and final error
//!   do not depend on how the bytes were cut into reads;
//! - between reads the buffer holds less than one frame limit (an oversized
//!   frame is discarded as it arrives, never buffered); frames over the
//!   default metadata limits (64 KiB, 256 entries) are refused, and decoding
//!   goes on after them;
//! - a decoded frame re-encodes to exactly `24 + metadata + payload` bytes
//!   that decode to the same frame, and re-encoding that is byte-identical;
//! - `take_payload` returns an uncompressed payload as is, and a compressed
//!   one decompressed to exactly its announced size, never above the limit.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchboard::frame::{Decoded, Frame, FrameDecoder, FrameError, Head, Metadata, FLAG_COMPRESSED, HEADER_LEN};
use switchboard_fuzz::{chunks, split_frame_input};

#[derive(Debug, PartialEq)]
enum Event {
    Frame { head: Head, meta: Metadata, payload: Bytes },
    Oversized { head: Head, len: u64 },
    Refused { head: Head, why: String },
}

fn decode_all(max: usize, pieces: &[&[u8]], limit: usize) -> (Vec<Event>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        decoder.reserve_for_read(&mut buf, piece.len());
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Frame(frame))) => {
                    check_frame(&frame, limit);
                    events.push(Event::Frame { head: frame.head, meta: frame.meta, payload: frame.payload });
                }
                Ok(Some(Decoded::Oversized { head, len })) => {
                    assert!(len > max as u64, "oversized frame of {len} bytes within the limit {max}");
                    events.push(Event::Oversized { head, len });
                }
                Ok(Some(Decoded::Refused { head, why })) => {
                    assert!(
                        matches!(why, FrameError::MetadataTooLarge { .. } | FrameError::TooManyEntries { .. }),
                        "refused for {why}"
                    );
                    events.push(Event::Refused { head, why: why.to_string() });
                }
                Ok(Some(other)) => panic!("an unknown decoder answer: {other:?}"),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
        assert!(
            buf.len() < max.max(HEADER_LEN),
            "{} bytes buffered between reads with a frame limit of {max}",
            buf.len()
        );
    }
    (events, None)
}

fn check_frame(frame: &Frame, limit: usize) {
    let mut out = BytesMut::new();
    frame.head.encode(&mut out, &frame.meta, &frame.payload).expect("a decoded frame re-encodes");
    assert_eq!(out.len(), HEADER_LEN + frame.meta.encoded_len() + frame.payload.len());
    let encoded = out.clone().freeze();
    let mut decoder = FrameDecoder::new(out.len());
    let Ok(Some(Decoded::Frame(again))) = decoder.decode(&mut out) else {
        panic!("a re-encoded frame does not decode: {encoded:02x?}");
    };
    assert!(out.is_empty(), "re-encoded frame left {} bytes", out.len());
    assert_eq!((again.head, &again.meta, &again.payload), (frame.head, &frame.meta, &frame.payload));
    let mut twice = BytesMut::new();
    again.head.encode(&mut twice, &again.meta, &again.payload).expect("re-encodes");
    assert_eq!(twice.freeze(), encoded, "re-encoding is not canonical");

    let mut taken = frame.clone();
    match taken.take_payload(limit) {
        Ok(payload) if frame.head.flags & FLAG_COMPRESSED == 0 => assert_eq!(payload, frame.payload),
        Ok(payload) => {
            let claimed = u32::from_le_bytes(frame.payload[..4].try_into().expect("4 bytes")) as usize;
            assert!(payload.len() <= limit, "decompressed {} bytes over the limit {limit}", payload.len());
            assert_eq!(payload.len(), claimed, "decompressed size differs from the announced size");
        }
        Err(e) => assert!(frame.head.flags & FLAG_COMPRESSED != 0, "uncompressed payload refused: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((seed, max, limit, stream)) = split_frame_input(data) else { return };
    let whole = decode_all(max, &[stream], limit);
    let cut = decode_all(max, &chunks(stream, seed), limit);
    assert_eq!(whole, cut, "decoding depends on how the stream was cut");
});
