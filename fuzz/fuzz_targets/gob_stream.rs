//! The gob stream decoder as the net/rpc server drives it: `next_value`
//! over a stream fed whole and in arbitrary chunks, each value decoded
//! into `serde_json::Value` (the self-describing path), into typed structs,
//! through `decode_json`, and cut loose with `to_standalone` (what a Go
//! caller's argument becomes), then re-encoded onto an outgoing stream
//! with `encode_standalone` (what a reply goes through).
//!
//! Input: `[chunk seed, limits selector, stream...]`
//! (`switchboard_fuzz::split_gob_input`).
//!
//! Invariants:
//! - nothing panics, and the values and the way the stream ends do not
//!   depend on how the bytes were cut into reads;
//! - a value that decodes into `Value` also decodes into `IgnoredAny`;
//! - `to_standalone_cached` gives the bytes `to_standalone` gives;
//! - a standalone payload decodes on a fresh decoder to the same `Value`
//!   as the value did on the stream, and survives `encode_standalone`
//!   onto another stream and a fresh decoder reading that stream;
//! - `decode_json` on the same bytes uses the same number of bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use switchboard::codec::gob::{Decoder, Encoder, Limits};
use switchboard_fuzz::{chunks, split_gob_input, Sample};

/// The shape of Go's `rpc.Request` header (the server's first read of
/// every call).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct RequestHeader {
    #[serde(rename = "ServiceMethod", default)]
    service_method: String,
    #[serde(rename = "Seq", default)]
    seq: u64,
}

#[derive(Debug, PartialEq)]
struct Seen {
    used: usize,
    value: Option<Value>,
    standalone: Option<Vec<u8>>,
}

/// The receiving end of the re-encoded stream.
struct Peer {
    encoder: Encoder,
    stream: Vec<u8>,
    decoder: Decoder,
    read: usize,
}

impl Peer {
    fn relay(&mut self, standalone: &[u8], expected: &Value) {
        self.encoder.encode_standalone(standalone, &mut self.stream).expect("a standalone payload re-encodes");
        let rest = &self.stream[self.read..];
        let (body, used) = match self.decoder.next_value(rest) {
            Ok(Some(found)) => found,
            other => panic!("the re-encoded stream does not read back: {other:?}"),
        };
        assert_eq!(used, rest.len(), "the re-encoded value is not all there");
        let value: Value = self.decoder.decode_value(body).expect("the re-encoded value decodes");
        assert_eq!(&value, expected, "a value changed on its way through encode_standalone");
        self.read += used;
    }
}

fn read_stream(limits: Limits, pieces: &[&[u8]]) -> (Vec<Seen>, Option<String>) {
    let mut decoder = Decoder::with_limits(limits);
    // Limits a standalone payload is read back with: the same bounds on the
    // value (depth, zero fill); framing and definition budgets at their
    // defaults, as renumbered type ids may take a byte more.
    let alone_limits = Limits::default().max_depth(limits.max_depth).max_zero_fill(limits.max_zero_fill);
    let mut peer = Peer { encoder: Encoder::new(), stream: Vec::new(), decoder: Decoder::new(), read: 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = decoder.clone();
            let (body, used) = match decoder.next_value(&buf) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => return (seen, Some(e.to_string())),
            };
            let value = decoder.decode_value::<Value>(body);
            let ignored = decoder.decode_value::<IgnoredAny>(body);
            if value.is_ok() {
                assert!(ignored.is_ok(), "decodes as Value but not as IgnoredAny: {ignored:?}");
            }
            let _ = decoder.decode_value::<RequestHeader>(body);
            let _ = decoder.decode_value::<Sample>(body);

            let standalone = decoder.to_standalone(body);
            let cached = decoder.to_standalone_cached(body);
            assert_eq!(standalone, cached, "to_standalone_cached differs from to_standalone");
            if let Ok(payload) = &standalone {
                assert!(ignored.is_ok(), "to_standalone accepted a value decode_value refuses");
                let alone = Decoder::with_limits(alone_limits).decode_standalone::<Value>(payload);
                match (&value, &alone) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "the standalone payload decodes to another value"),
                    (Ok(_), Err(e)) => panic!("the standalone payload does not decode: {e}"),
                    (Err(e), Ok(_)) => panic!("only the standalone payload decodes; on the stream: {e}"),
                    (Err(_), Err(_)) => {}
                }
                if let Ok(v) = &value {
                    peer.relay(payload, v);
                }
            }

            let mut json = before;
            match json.decode_json(&buf) {
                Ok(Some((_, json_used))) => assert_eq!(json_used, used, "decode_json used other bytes"),
                Ok(None) => panic!("decode_json wants more bytes than next_value"),
                Err(_) => {}
            }

            seen.push(Seen { used, value: value.ok(), standalone: standalone.ok() });
            buf.drain(..used);
        }
    }
    (seen, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((seed, limits, stream)) = split_gob_input(data) else { return };
    let whole = read_stream(limits, &[stream]);
    let cut = read_stream(limits, &chunks(stream, seed));
    assert_eq!(whole, cut, "reading the stream depends on how it was cut");
});
