//! The standalone gob decoder (`Decoder::decode_standalone`, and
//! `Codec::Gob`'s decoding with its per-thread definitions cache) over
//! arbitrary payloads, into `serde_json::Value` and typed structs; and the
//! encoder on whatever decoded.
//!
//! Invariants:
//! - nothing panics;
//! - `Codec::Gob` decoding (cached definitions, asked twice) gives what a
//!   fresh `decode_standalone` gives;
//! - a payload that decodes survives `encode_standalone` onto a fresh
//!   stream, and `to_standalone` of its own value, unchanged (or is refused
//!   by both for naming a type it never defines);
//! - what the encoder writes (from the decoded `Value`, with `encode` or
//!   `encode_json`) is a gob stream our decoder reads back whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;
use switchboard::codec::gob::{Decoder, Encoder, GobError};
use switchboard::{Codec, Decode};
use switchboard_fuzz::{Inner, Sample};

fn reads_back_whole(stream: &[u8]) {
    let mut decoder = Decoder::new();
    let mut at = 0;
    while at < stream.len() {
        match decoder.decode::<IgnoredAny>(&stream[at..]) {
            Ok(Some((_, used))) => at += used,
            other => panic!("our own encoding does not read back at byte {at}: {other:?}: {stream:02x?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let fresh = Decoder::new().decode_standalone::<Value>(data);
    for _ in 0..2 {
        let cached = <Value as Decode>::decode(Codec::Gob, data);
        match (&fresh, &cached) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "Codec::Gob decodes another value"),
            (Err(_), Err(_)) => {}
            _ => panic!("Codec::Gob and decode_standalone disagree: {fresh:?} / {cached:?}"),
        }
    }
    // Typed targets: structs with zero fill, options, maps, enums, bytes.
    let _ = Decoder::new().decode_standalone::<Sample>(data);
    let _ = Decoder::new().decode_standalone::<Vec<Inner>>(data);
    let _ = Decoder::new().decode_standalone::<(i64, String)>(data);
    let _ = Decoder::new().decode_standalone::<Option<u8>>(data);
    let _ = <Sample as Decode>::decode_bytes(Codec::Gob, bytes::Bytes::copy_from_slice(data));

    let Ok(value) = fresh else { return };

    // The payload onto a fresh outgoing stream, read back by a fresh decoder.
    let mut out = Vec::new();
    if Encoder::new().encode_standalone(data, &mut out).is_ok() {
        let back = Decoder::new().decode::<Value>(&out);
        assert!(matches!(&back, Ok(Some((v, used))) if *v == value && *used == out.len()), "{back:?}");
    }

    // Its own value message, cut loose again.
    let mut decoder = Decoder::new();
    if let Ok(Some((body, _))) = decoder.next_value(data) {
        match decoder.to_standalone(body) {
            Ok(again) => assert_eq!(Decoder::new().decode_standalone::<Value>(&again).expect("decodes"), value),
            // Definitions that name a type never defined (in a field the
            // value leaves out, so decoding never meets it) cannot be
            // sent on: to_standalone refuses them, as encode_standalone
            // does (standalone_tests.rs, hostile_type_graphs_hit_the_limits).
            Err(GobError::UnknownType(_)) => {}
            Err(e) => panic!("a decoded payload's value does not convert: {e}"),
        }
    }

    // The encoder on the decoded value: whatever it writes must read back.
    let mut out = Vec::new();
    if Encoder::new().encode(&value, &mut out).is_ok() {
        reads_back_whole(&out);
    }
    let mut out = Vec::new();
    if Encoder::new().encode_json("Reply", &value, &mut out).is_ok() {
        reads_back_whole(&out);
    }
});
