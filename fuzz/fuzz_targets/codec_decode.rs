//! Payload decoding in every codec (`switchboard::codec`), as a handler's
//! `Request::decode` runs it on what a peer sent: postcard, JSON,
//! MessagePack and gob into a struct with most serde shapes (with the
//! zero-copy `Bytes` field), JSON, MessagePack and gob into
//! `serde_json::Value`, and protobuf into a prost message.
//!
//! Input: `[selector, payload...]` (`switchboard_fuzz::CodecCase`).
//!
//! Invariants: nothing panics; `decode_bytes` (zero-copy) decodes what
//! `decode` decodes; whatever decodes re-encodes, and that encoding decodes
//! and encodes again to the same bytes (compared as bytes, so NaN is fine).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use switchboard::codec::{Codec, Decode, Encode, Proto};
use switchboard_fuzz::{split_codec_input, CodecCase, PbSample, Sample};

fn round_trip<T: Decode + Encode + Debug>(codec: Codec, payload: &[u8]) -> Option<T> {
    let value = T::decode(codec, payload).ok()?;
    let Ok(first) = value.encode_bytes(codec) else {
        // Gob cannot send everything serde can read (say, an empty
        // top-level map); the other codecs can.
        assert_eq!(codec, Codec::Gob, "{value:?} decoded but does not encode");
        return Some(value);
    };
    let again = T::decode(codec, &first).unwrap_or_else(|e| panic!("our encoding {first:02x?} does not decode: {e}"));
    let second = again.encode_bytes(codec).expect("encodes again");
    assert_eq!(first, second, "encoding is not stable: {value:?} then {again:?}");
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    let Some((case, payload)) = split_codec_input(data) else { return };
    match case {
        CodecCase::Sample(codec) => {
            let decoded = round_trip::<Sample>(codec, payload);
            let zero_copy = Sample::decode_bytes(codec, bytes::Bytes::copy_from_slice(payload));
            match (&decoded, &zero_copy) {
                (Some(a), Ok(b)) => {
                    assert!(a.ratio.is_nan() || a == b, "decode_bytes differs: {a:?} / {b:?}")
                }
                (None, Err(_)) => {}
                _ => panic!("decode and decode_bytes disagree: {decoded:?} / {zero_copy:?}"),
            }
        }
        CodecCase::Value(codec) => {
            let _ = round_trip::<serde_json::Value>(codec, payload);
        }
        CodecCase::Proto => {
            let _ = round_trip::<Proto<PbSample>>(Codec::Protobuf, payload);
        }
    }
});
