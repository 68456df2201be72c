//! Property tests for the wire format: frames round-trip whatever they hold
//! and however the bytes arrive, and no input makes the decoder panic or loop.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use switchboard::frame::{
    compress, Decoded, Frame, FrameDecoder, FrameError, Head, Kind, Metadata, DEFAULT_MAX_FRAME, FLAG_COMPRESSED,
    HEADER_LEN, MAGIC, VERSION,
};

const KINDS: [Kind; 7] =
    [Kind::Request, Kind::Response, Kind::OneWay, Kind::Ping, Kind::Pong, Kind::Cancel, Kind::GoAway];

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

fn arb_head() -> impl Strategy<Value = Head> {
    (0..KINDS.len(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u64>())
        .prop_map(|(k, codec, flags, status, id)| Head { kind: KINDS[k], codec, flags, status, id })
}

/// Everything a Metadata can hold, as plain values.
#[derive(Debug, Clone)]
struct MetaParts {
    method: Option<String>,
    deadline_micros: Option<u64>,
    trace: Option<String>,
    message: Option<String>,
    details: Option<Vec<u8>>,
    entries: Vec<(String, String)>,
}

impl MetaParts {
    fn build(&self) -> Metadata {
        let mut meta = Metadata::default();
        if let Some(m) = &self.method {
            meta.set_method(m.clone());
        }
        meta.set_deadline(self.deadline_micros.map(Duration::from_micros));
        if let Some(t) = &self.trace {
            meta.set_trace_context(t.clone());
        }
        if let Some(m) = &self.message {
            meta.set_message(m.clone());
        }
        if let Some(d) = &self.details {
            meta.set_details(Bytes::from(d.clone()));
        }
        for (k, v) in &self.entries {
            meta.insert(k.clone(), v.clone());
        }
        meta
    }
}

fn arb_meta() -> impl Strategy<Value = MetaParts> {
    (
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        proptest::collection::vec((any::<String>(), any::<String>()), 0..=4),
    )
        .prop_map(|(method, deadline_micros, trace, message, details, entries)| MetaParts {
            method,
            deadline_micros,
            trace,
            message,
            details,
            entries,
        })
}

fn assert_field_by_field(meta: &Metadata, parts: &MetaParts) {
    assert_eq!(meta.method(), parts.method.as_deref());
    assert_eq!(meta.deadline(), parts.deadline_micros.map(Duration::from_micros));
    assert_eq!(meta.trace_context(), parts.trace.as_deref());
    assert_eq!(meta.message(), parts.message.as_deref());
    assert_eq!(meta.details().map(|d| &d[..]), parts.details.as_deref());
    // insert() replaces earlier values of a key: the last value wins.
    let mut expected: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &parts.entries {
        match expected.iter_mut().find(|(ek, _)| *ek == k.as_str()) {
            Some(e) => e.1 = v.as_str(),
            None => expected.push((k.as_str(), v.as_str())),
        }
    }
    assert_eq!(meta.entries().collect::<Vec<_>>(), expected);
}

/// Run the decoder over `buf` until it wants more bytes or fails, checking it
/// makes progress on every frame. Returns what it produced and the error.
fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> (Vec<Decoded>, Option<FrameError>) {
    let mut out = Vec::new();
    // Every Some(_) consumes at least a header, so this bound is never hit
    // by a decoder that makes progress.
    for _ in 0..=(buf.len() / HEADER_LEN + 2) {
        let before = buf.len();
        match decoder.decode(buf) {
            Ok(Some(d)) => {
                assert!(buf.len() < before, "decoder produced {d:?} without consuming input");
                if let Decoded::Frame(f) = &d {
                    assert!(f.payload.len() + HEADER_LEN <= decoder.max_frame(), "frame over the limit");
                }
                out.push(d);
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
    panic!("decoder did not terminate");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_round_trips(
        head in arb_head(),
        parts in arb_meta(),
        payload in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let meta = parts.build();
        let mut buf = BytesMut::new();
        head.encode(&mut buf, &meta, &payload).unwrap();
        let encoded = buf.clone().freeze();

        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let Some(Decoded::Frame(frame)) = decoder.decode(&mut buf).unwrap() else {
            panic!("a whole frame did not decode")
        };
        prop_assert_eq!(frame.head, head);
        prop_assert_eq!(&frame.meta, &meta);
        assert_field_by_field(&frame.meta, &parts);
        prop_assert_eq!(&frame.payload[..], &payload[..]);
        prop_assert!(buf.is_empty());
        prop_assert!(decoder.decode(&mut buf).unwrap().is_none());

        // Re-encoding the decoded frame gives the same bytes.
        let mut again = BytesMut::new();
        frame.head.encode(&mut again, &frame.meta, &frame.payload).unwrap();
        prop_assert_eq!(&again[..], &encoded[..]);
    }

    #[test]
    fn frame_round_trips_in_arbitrary_chunks(
        head in arb_head(),
        parts in arb_meta(),
        payload in proptest::collection::vec(any::<u8>(), 0..4096),
        chunks in proptest::collection::vec(1usize..512, 1..64),
    ) {
        let meta = parts.build();
        // Two frames back to back, so a chunk can straddle the boundary.
        let second = Head::new(Kind::Ping, head.id.wrapping_add(1));
        let mut encoded = BytesMut::new();
        head.encode(&mut encoded, &meta, &payload).unwrap();
        let first_len = encoded.len();
        second.encode(&mut encoded, &Metadata::default(), b"").unwrap();

        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        let mut frames: Vec<(usize, Frame)> = Vec::new();
        let mut fed = 0;
        let mut sizes = chunks.iter().cycle();
        while fed < encoded.len() {
            let n = (*sizes.next().unwrap()).min(encoded.len() - fed);
            buf.extend_from_slice(&encoded[fed..fed + n]);
            fed += n;
            let (decoded, err) = drain(&mut decoder, &mut buf);
            prop_assert!(err.is_none(), "{:?}", err);
            for d in decoded {
                let Decoded::Frame(f) = d else { panic!("unexpected {d:?}") };
                frames.push((fed, f));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frames.len(), 2);
        // Each frame comes out as soon as its last byte arrives, not earlier.
        prop_assert!(frames[0].0 >= first_len);
        prop_assert_eq!(frames[1].0, encoded.len());
        let (_, first) = &frames[0];
        prop_assert_eq!(first.head, head);
        prop_assert_eq!(&first.meta, &meta);
        prop_assert_eq!(&first.payload[..], &payload[..]);
        prop_assert_eq!(frames[1].1.head, second);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..8192),
        max_frame in 24usize..(1 << 20),
        chunk in 1usize..4096,
    ) {
        // All at once.
        let mut decoder = FrameDecoder::new(max_frame);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = drain(&mut decoder, &mut buf);

        // In chunks, stopping at the first error as a connection would.
        let mut decoder = FrameDecoder::new(max_frame);
        let mut buf = BytesMut::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            if drain(&mut decoder, &mut buf).1.is_some() {
                break;
            }
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_preamble_never_panic_the_decoder(
        kind in 0u8..10,
        rest in proptest::collection::vec(any::<u8>(), 0..8192),
        max_frame in 24usize..(1 << 20),
        small_lengths in any::<bool>(),
    ) {
        let mut bytes = vec![MAGIC[0], MAGIC[1], VERSION, kind];
        bytes.extend_from_slice(&rest);
        if small_lengths && bytes.len() >= HEADER_LEN {
            // Keep the lengths within what follows so the metadata parser runs.
            let avail = (bytes.len() - HEADER_LEN) as u32;
            let meta_len = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) % (avail + 1);
            let payload_len = u32::from_be_bytes(bytes[20..24].try_into().unwrap()) % (avail - meta_len + 1);
            bytes[16..20].copy_from_slice(&meta_len.to_be_bytes());
            bytes[20..24].copy_from_slice(&payload_len.to_be_bytes());
        }
        let mut decoder = FrameDecoder::new(max_frame);
        let mut buf = BytesMut::from(&bytes[..]);
        let (decoded, err) = drain(&mut decoder, &mut buf);
        if !(1..=7).contains(&kind) && bytes.len() >= HEADER_LEN {
            prop_assert!(decoded.is_empty());
            prop_assert_eq!(err, Some(FrameError::BadKind(kind)));
        }
    }

    #[test]
    fn metadata_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(meta) = Metadata::decode(Bytes::from(bytes)) {
            // Whatever decoded is readable.
            let _ = (meta.method(), meta.deadline(), meta.trace_context(), meta.message(), meta.details());
            let _ = meta.entries().count();
        }
    }

    #[test]
    fn compressed_payload_of_arbitrary_bytes_never_panics(
        head in arb_head(),
        payload in proptest::collection::vec(any::<u8>(), 0..4096),
        claimed in proptest::option::of(0u32..(1 << 17)),
        max in 0usize..(1 << 20),
    ) {
        // Optionally a plausible size prefix, to get past the size check
        // into the LZ4 decoder.
        let mut bytes = Vec::new();
        if let Some(c) = claimed {
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        bytes.extend_from_slice(&payload);
        let head = Head { flags: head.flags | FLAG_COMPRESSED, ..head };
        let mut frame = Frame { head, meta: Metadata::default(), payload: Bytes::from(bytes) };
        if let Ok(out) = frame.take_payload(max) {
            prop_assert!(out.len() <= max, "decompressed {} bytes past the limit {}", out.len(), max);
        }
    }

    #[test]
    fn compression_round_trips_and_respects_the_limit(
        // Runs of repeated bytes mixed with noise: compressible and not.
        runs in proptest::collection::vec((any::<u8>(), 1usize..200), 0..32),
        slack in 0usize..100,
    ) {
        let payload: Vec<u8> = runs.iter().flat_map(|&(byte, n)| std::iter::repeat_n(byte, n)).collect();
        let head = Head { flags: FLAG_COMPRESSED, ..Head::new(Kind::Request, 1) };
        let packed = Bytes::from(compress(&payload));
        let mut frame = Frame { head, meta: Metadata::default(), payload: packed.clone() };
        prop_assert_eq!(&frame.take_payload(payload.len() + slack).unwrap()[..], &payload[..]);
        if !payload.is_empty() {
            let mut frame = Frame { head, meta: Metadata::default(), payload: packed };
            let too_small = payload.len() - 1 - slack.min(payload.len() - 1);
            let is_too_large = matches!(frame.take_payload(too_small), Err(FrameError::TooLarge { .. }));
            prop_assert!(is_too_large);
        }
    }
}
