//! `frame::Metadata::decode` over arbitrary TLV bytes.
//!
//! Invariants: never panics; decoded metadata re-encodes (inside a frame)
//! to exactly `encoded_len` bytes, which decode to equal metadata; the
//! accessors agree with the entries (`get` finds the first value of a key).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchboard::frame::{Decoded, FrameDecoder, Head, Kind, Metadata, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = Metadata::decode(Bytes::copy_from_slice(data)) else { return };
    let mut frame = BytesMut::new();
    Head::new(Kind::Request, 0).encode(&mut frame, &meta, b"").expect("encodes");
    let meta_len = u32::from_be_bytes(frame[16..20].try_into().expect("4 bytes")) as usize;
    assert_eq!(meta_len, meta.encoded_len(), "encoded_len is not the length written");
    assert_eq!(frame.len(), HEADER_LEN + meta_len);
    let encoded = Bytes::copy_from_slice(&frame[HEADER_LEN..]);
    let Ok(Some(Decoded::Frame(f))) = FrameDecoder::new(frame.len()).decode(&mut frame) else {
        panic!("re-encoded metadata does not decode");
    };
    assert_eq!(f.meta, meta);
    assert_eq!(Metadata::decode(encoded).expect("decodes alone"), meta);
    for (key, value) in meta.entries() {
        let first = meta.entries().find(|(k, _)| *k == key).map(|(_, v)| v);
        assert_eq!(meta.get(key), first);
        let _ = value;
    }
    let _ = (meta.method(), meta.deadline(), meta.trace_context(), meta.message(), meta.details());
});
