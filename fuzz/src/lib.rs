//! What the fuzz targets share: the input layouts (so that the seed
//! generator in `examples/seeds.rs` writes inputs the targets read the same
//! way) and the types some targets decode into.
//!
//! Most targets take a few control bytes first (chunk sizes, limits), then
//! the bytes under test. The layout of each is documented on its `split_*`
//! function here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Cuts `data` into chunks whose sizes come from `seed`, the way a socket
/// might deliver it: mostly small pieces (1..=16 bytes), now and then a big
/// one. The same seed always gives the same cuts, so a crash replays.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data]; // seed 0: everything in one read
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift32: cheap, deterministic.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = match state % 8 {
            0 => 1 + (state >> 8) as usize % 4096,
            _ => 1 + (state >> 8) as usize % 16,
        };
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// `frame_decode` input: `[chunk seed, max-frame selector, decompress-limit
/// selector, stream...]`. Returns (chunk seed, max frame, decompress limit,
/// stream).
pub fn split_frame_input(data: &[u8]) -> Option<(u8, usize, usize, &[u8])> {
    let (&[seed, max, limit], stream) = data.split_first_chunk::<3>()?;
    Some((seed, max_frame(max), decompress_limit(limit), stream))
}

/// The frame limit a selector byte picks: 255 is the server's default
/// (16 MiB); the others are small, so oversized frames (skipped as they
/// arrive) are common: 0..=23 are below the header size itself.
pub fn max_frame(selector: u8) -> usize {
    match selector {
        255 => switchboard::frame::DEFAULT_MAX_FRAME,
        n => usize::from(n) * 16,
    }
}

/// The decompressed-size limit a selector byte picks (255: 16 MiB).
pub fn decompress_limit(selector: u8) -> usize {
    match selector {
        255 => switchboard::frame::DEFAULT_MAX_FRAME,
        n => usize::from(n) * 64,
    }
}

/// `gob_stream` input: `[chunk seed, limits selector, stream...]`.
pub fn split_gob_input(data: &[u8]) -> Option<(u8, switchboard::codec::gob::Limits, &[u8])> {
    let (&[seed, limits], stream) = data.split_first_chunk::<2>()?;
    Some((seed, gob_limits(limits), stream))
}

/// Gob limits from a selector byte: 255 the defaults, others small enough
/// that the fuzzer reaches every limit (message size, depth, type count,
/// type bytes, zero fill).
pub fn gob_limits(selector: u8) -> switchboard::codec::gob::Limits {
    let mut limits = switchboard::codec::gob::Limits::default();
    if selector != 255 {
        let s = usize::from(selector);
        limits.max_message = 16 + (s & 0x0f) * 64;
        limits.max_depth = 1 + (s >> 4);
        limits.max_types = 1 + (s & 0x07);
        limits.max_type_bytes = 32 + (s & 0x30) * 8;
        limits.max_zero_fill = s * 4;
    }
    limits
}

/// `jsonrpc_request` input: `[chunk seed, limit selector, stream...]`; the
/// limit is the server's frame limit (255: 16 MiB; else selector * 8).
pub fn split_json_input(data: &[u8]) -> Option<(u8, usize, &[u8])> {
    let (&[seed, max], stream) = data.split_first_chunk::<2>()?;
    let max = if max == 255 { switchboard::frame::DEFAULT_MAX_FRAME } else { usize::from(max) * 8 };
    Some((seed, max, stream))
}

/// `codec_decode` input: `[selector, payload...]`; see [`CodecCase`].
pub fn split_codec_input(data: &[u8]) -> Option<(CodecCase, &[u8])> {
    let (&selector, payload) = data.split_first()?;
    Some((CodecCase::from_byte(selector), payload))
}

/// What `codec_decode` decodes its payload as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecCase {
    /// [`Sample`] in a serde codec.
    Sample(switchboard::Codec),
    /// `serde_json::Value` in a self-describing codec (JSON, MessagePack, gob).
    Value(switchboard::Codec),
    /// [`PbSample`] in protobuf.
    Proto,
}

impl CodecCase {
    /// The case a selector byte picks.
    pub fn from_byte(b: u8) -> CodecCase {
        use switchboard::Codec;
        match b % 8 {
            0 => CodecCase::Sample(Codec::Json),
            1 => CodecCase::Sample(Codec::Binary),
            2 => CodecCase::Sample(Codec::MsgPack),
            3 => CodecCase::Sample(Codec::Gob),
            4 => CodecCase::Value(Codec::Json),
            5 => CodecCase::Value(Codec::MsgPack),
            6 => CodecCase::Value(Codec::Gob),
            _ => CodecCase::Proto,
        }
    }

    /// The selector byte of this case.
    pub fn to_byte(self) -> u8 {
        (0..8).find(|&b| CodecCase::from_byte(b) == self).unwrap_or(0)
    }
}

/// A struct with most serde shapes, for the typed decode paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// An unsigned integer.
    #[serde(rename = "Id")]
    pub id: u64,
    /// A signed integer.
    #[serde(rename = "Delta")]
    pub delta: i32,
    /// A float (NaN compares unequal: targets compare encodings instead).
    #[serde(rename = "Ratio")]
    pub ratio: f64,
    /// A bool.
    #[serde(rename = "Flag")]
    pub flag: bool,
    /// A string.
    #[serde(rename = "Name")]
    pub name: String,
    /// Bytes, as serde bytes.
    #[serde(rename = "Data", with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Bytes that may slice the frame (the zero-copy path).
    #[serde(rename = "Blob", with = "switchboard::codec::zerocopy")]
    pub blob: bytes::Bytes,
    /// A sequence.
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    /// A map (ordered, so equal maps encode alike).
    #[serde(rename = "Scores")]
    pub scores: BTreeMap<String, i64>,
    /// An optional nested struct.
    #[serde(rename = "Child")]
    pub child: Option<Inner>,
    /// A sequence of nested structs.
    #[serde(rename = "Kids")]
    pub kids: Vec<Inner>,
    /// A unit-variant enum (gob sends these as strings).
    #[serde(rename = "Mode")]
    pub mode: Mode,
}

/// Nested in [`Sample`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inner {
    /// A string.
    #[serde(rename = "Label")]
    pub label: String,
    /// A small integer.
    #[serde(rename = "Rank")]
    pub rank: u8,
}

/// A unit-variant enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// First.
    Fast,
    /// Second.
    Safe,
}

impl Sample {
    /// A sample with every field set.
    pub fn full() -> Sample {
        Sample {
            id: 1 << 40,
            delta: -7,
            ratio: 0.25,
            flag: true,
            name: "Arith.Multiply".into(),
            data: vec![0, 1, 2, 255],
            blob: bytes::Bytes::from_static(b"zero-copy"),
            tags: vec!["a".into(), "bé".into()],
            scores: BTreeMap::from([("x".into(), -1), ("y".into(), i64::MAX)]),
            child: Some(Inner { label: "kid".into(), rank: 3 }),
            kids: vec![Inner { label: String::new(), rank: 0 }, Inner { label: "k2".into(), rank: 200 }],
            mode: Mode::Safe,
        }
    }
}

/// A protobuf message with most field kinds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbSample {
    /// uint64.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// sint32 (zigzag).
    #[prost(sint32, tag = "2")]
    pub delta: i32,
    /// string.
    #[prost(string, tag = "3")]
    pub name: String,
    /// bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
    /// packed repeated.
    #[prost(int64, repeated, tag = "5")]
    pub values: Vec<i64>,
    /// nested message.
    #[prost(message, optional, tag = "6")]
    pub child: Option<PbInner>,
    /// map.
    #[prost(btree_map = "string, int32", tag = "7")]
    pub scores: std::collections::BTreeMap<String, i32>,
    /// double.
    #[prost(double, tag = "8")]
    pub ratio: f64,
}

/// Nested in [`PbSample`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbInner {
    /// string.
    #[prost(string, tag = "1")]
    pub label: String,
    /// repeated nested (recursion depth is prost's limit to enforce).
    #[prost(message, repeated, tag = "2")]
    pub kids: Vec<PbInner>,
}
