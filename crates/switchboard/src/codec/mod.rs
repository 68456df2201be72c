//! Payload codecs, chosen per call by the client.
//!
//! The codec id travels in every frame header; the server decodes the request
//! with it and answers in the same codec, so one server serves JSON callers
//! (scripts, the CLI, other languages) and binary callers (Rust services, for
//! speed) side by side with no configuration.
//!
//! | id | [`Codec`] | format | types |
//! |----|-----------|--------|-------|
//! | 1 | `Json` | JSON (serde_json) | serde |
//! | 2 | `Binary` | compact binary (postcard) | serde |
//! | 3 | `MsgPack` | MessagePack, structs as maps (rmp-serde) | serde |
//! | 4 | `Protobuf` | Protocol Buffers (prost) | [`Proto<M>`] |
//! | 5 | `Gob` | Go's gob, one standalone stream per payload ([`codec::gob`](crate::codec::gob)) | serde |
//!
//! Types are encoded through two small traits, [`Encode`] and [`Decode`].
//! Every serde type implements them for the serde codecs; a prost message
//! wrapped in [`Proto`] implements them for Protobuf. Asking a serde type for
//! Protobuf (or the reverse) is a clear [`CodecError`], not a panic.
//!
//! [`Codec::Gob`] is what a Go `net/rpc` caller's arguments become on their
//! way to a handler (and its reply on the way back): each payload is a
//! *standalone* gob stream, the type definitions of one value and then the
//! value (see [standalone payloads](crate::codec::gob#standalone-payloads)).
//! Gob describes itself, so untyped targets such as `serde_json::Value`
//! decode it (structs as objects). Gob cannot send a value whose type it
//! cannot see: a top-level `None`, empty sequence or empty map fails to
//! encode with a [`CodecError`] saying so (wrap it in a struct, where an
//! empty field is simply left out). A `serde_json::Value` object is sent as
//! a Go map, so all its values must have one type.
//!
//! ```
//! use switchboard::codec::{Codec, Decode, Encode};
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Args { #[serde(rename = "A")] a: i64, #[serde(rename = "B")] b: i64 }
//!
//! let mut buf = Vec::new();
//! Args { a: 7, b: 8 }.encode(Codec::Json, &mut buf).unwrap();
//! assert_eq!(buf, br#"{"A":7,"B":8}"#);
//! assert_eq!(Args::decode(Codec::Json, &buf).unwrap(), Args { a: 7, b: 8 });
//! ```

pub mod gob;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A payload encoding. The default is [`Codec::Binary`], the fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON via serde_json.
    Json = 1,
    /// Compact binary via postcard (varint integers, no field names).
    #[default]
    Binary = 2,
    /// MessagePack via rmp-serde, structs as maps with field names.
    MsgPack = 3,
    /// Protocol Buffers via prost, for [`Proto`]-wrapped message types.
    Protobuf = 4,
    /// Go's gob: each payload a standalone gob stream (type definitions,
    /// then one value), as Go's `encoding/gob` reads and writes it. See
    /// [`codec::gob`](crate::codec::gob).
    Gob = 5,
}

impl Codec {
    /// Every codec, in id order.
    pub const ALL: [Codec; 5] = [Codec::Json, Codec::Binary, Codec::MsgPack, Codec::Protobuf, Codec::Gob];

    /// The codec with this wire id, if this build knows it.
    pub fn from_id(id: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Lower-case name (`json`, `binary`, `msgpack`, `protobuf`, `gob`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Binary => "binary",
            Codec::MsgPack => "msgpack",
            Codec::Protobuf => "protobuf",
            Codec::Gob => "gob",
        }
    }

    /// The codec with this name (as in [`Codec::name`]).
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Whether this build was compiled with support for the codec.
    pub fn is_enabled(self) -> bool {
        match self {
            Codec::Json | Codec::Binary | Codec::Gob => true,
            Codec::MsgPack => cfg!(feature = "msgpack"),
            Codec::Protobuf => cfg!(feature = "protobuf"),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A payload that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{codec} {op}: {message}")]
pub struct CodecError {
    codec: Codec,
    op: &'static str,
    message: String,
}

impl CodecError {
    /// An encode failure.
    pub fn encode(codec: Codec, message: impl fmt::Display) -> CodecError {
        CodecError { codec, op: "encode", message: message.to_string() }
    }

    /// A decode failure.
    pub fn decode(codec: Codec, message: impl fmt::Display) -> CodecError {
        CodecError { codec, op: "decode", message: message.to_string() }
    }

    /// The codec that failed.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

fn not_enabled(codec: Codec, op: &'static str) -> CodecError {
    CodecError { codec, op, message: "codec not enabled in this build (cargo feature)".into() }
}

/// A value that can be written as a payload.
pub trait Encode {
    /// Append this value, encoded with `codec`, to `out`.
    fn encode(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// This value encoded with `codec`, in a buffer of exactly its size.
    /// The default encodes into a reused scratch buffer and copies the
    /// result out once ([`encode_to_bytes`]); formats that can tell the size
    /// first encode straight into the final buffer instead.
    fn encode_bytes(&self, codec: Codec) -> Result<bytes::Bytes, CodecError> {
        encode_to_bytes(self, codec)
    }
}

/// A value that can be read from a payload.
pub trait Decode: Sized {
    /// Decode a value of this type from `bytes` with `codec`.
    fn decode(codec: Codec, bytes: &[u8]) -> Result<Self, CodecError>;

    /// Decode from a shared buffer. Byte-string fields marked
    /// [`zerocopy`] become slices of `bytes` instead of copies. The default
    /// just calls [`Decode::decode`].
    fn decode_bytes(codec: Codec, bytes: bytes::Bytes) -> Result<Self, CodecError> {
        Self::decode(codec, &bytes)
    }
}

impl<T: Serialize + ?Sized> Encode for T {
    fn encode_bytes(&self, codec: Codec) -> Result<bytes::Bytes, CodecError> {
        match codec {
            // postcard can count first (a cheap pass: byte strings count by
            // length), so the value is encoded once, straight into a buffer
            // of its exact size: no scratch copy, which matters for large
            // payloads.
            Codec::Binary => {
                let err = |e: postcard::Error| CodecError::encode(codec, e);
                let size =
                    postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default()).map_err(err)?;
                let out = postcard::to_extend(self, Vec::with_capacity(size)).map_err(err)?;
                Ok(bytes::Bytes::from(out))
            }
            _ => encode_to_bytes(self, codec),
        }
    }

    fn encode(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let err = |e: &dyn fmt::Display| CodecError::encode(codec, e);
        match codec {
            Codec::Json => serde_json::to_writer(&mut *out, self).map_err(|e| err(&e)),
            Codec::Binary => {
                // to_extend appends to the caller's (reused) Vec: about 2x
                // faster than allocating a new one per message.
                *out = postcard::to_extend(self, std::mem::take(out)).map_err(|e| err(&e))?;
                Ok(())
            }
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => rmp_serde::encode::write_named(out, self).map_err(|e| err(&e)),
            Codec::Gob => crate::codec::gob::Encoder::encode_alone(self, out).map_err(|e| err(&e)),
            Codec::Protobuf => Err(CodecError::encode(
                codec,
                "this type is a serde type; wrap a prost message in switchboard::codec::Proto to use protobuf",
            )),
            #[allow(unreachable_patterns)]
            _ => Err(not_enabled(codec, "encode")),
        }
    }
}

impl<T: DeserializeOwned> Decode for T {
    fn decode_bytes(codec: Codec, bytes: bytes::Bytes) -> Result<Self, CodecError> {
        zerocopy::with_source(&bytes, || Self::decode(codec, &bytes))
    }

    fn decode(codec: Codec, bytes: &[u8]) -> Result<Self, CodecError> {
        let err = |e: &dyn fmt::Display| CodecError::decode(codec, e);
        match codec {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| err(&e)),
            Codec::Binary => postcard::from_bytes(bytes).map_err(|e| err(&e)),
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| err(&e)),
            Codec::Gob => crate::codec::gob::Decoder::decode_alone(bytes).map_err(|e| err(&e)),
            Codec::Protobuf => Err(CodecError::decode(
                codec,
                "this type is a serde type; wrap a prost message in switchboard::codec::Proto to use protobuf",
            )),
            #[allow(unreachable_patterns)]
            _ => Err(not_enabled(codec, "decode")),
        }
    }
}

/// Encode `value` into a new [`Bytes`](bytes::Bytes) of exactly its encoded size.
///
/// Serialisers append piecemeal, so encoding into a fresh `Vec` reallocates
/// (and copies) as it doubles its way up: six times for a 150-byte message.
/// Instead this encodes into a reusable per-thread scratch buffer and copies
/// the result out once.
pub fn encode_to_bytes<T: Encode + ?Sized>(value: &T, codec: Codec) -> Result<bytes::Bytes, CodecError> {
    /// Scratch buffers that grew past this are not kept.
    const KEEP: usize = 1 << 20;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let encode = |buf: &mut Vec<u8>| {
        buf.clear();
        let result = value.encode(codec, buf).map(|()| bytes::Bytes::copy_from_slice(buf));
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        result
    };
    SCRATCH
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => encode(&mut buf),
            // Re-entered from inside a Serialize impl: use a fresh buffer.
            Err(_) => encode(&mut Vec::new()),
        })
        .unwrap_or_else(|_| encode(&mut Vec::new()))
}

pub mod zerocopy {
    //! Zero-copy byte strings: `#[serde(with = "switchboard::codec::zerocopy")]`
    //! on a [`Bytes`] field.
    //!
    //! Decoding such a field from a frame does not copy it: the field becomes a
    //! reference-counted slice of the frame's read buffer. (While a payload is
    //! decoded, a thread-local names the buffer it came from; a byte string
    //! the format hands over as a slice of that buffer is sliced, not copied.
    //! The binary codec and MessagePack hand byte strings over that way; JSON,
    //! which spells bytes as an array of numbers, still copies.) Encoding
    //! writes the bytes as a byte string, like `serde_bytes`.
    //!
    //! The trade-off, as with any zero-copy buffer: the slice keeps the read
    //! buffer it came from alive for as long as it lives. To keep a small piece
    //! of a large message for long, copy it (`Bytes::copy_from_slice`).
    //!
    //! ```
    //! use bytes::Bytes;
    //! use switchboard::codec::{Codec, Decode, Encode};
    //!
    //! #[derive(serde::Serialize, serde::Deserialize)]
    //! struct Blob {
    //!     #[serde(with = "switchboard::codec::zerocopy")]
    //!     data: Bytes,
    //! }
    //!
    //! let frame = Blob { data: Bytes::from(vec![7u8; 1 << 16]) }.encode_bytes(Codec::Binary).unwrap();
    //! let blob = Blob::decode_bytes(Codec::Binary, frame.clone()).unwrap();
    //! // The field points into the frame's buffer: nothing was copied.
    //! let inside = frame.as_ptr_range();
    //! assert!(inside.contains(&blob.data.as_ptr()));
    //! ```

    use std::cell::RefCell;
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    thread_local! {
        static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    }

    /// Run `decode` with `source` as the buffer byte strings may be sliced from.
    pub(super) fn with_source<R>(source: &Bytes, decode: impl FnOnce() -> R) -> R {
        let previous = SOURCE.with(|s| s.replace(Some(source.clone())));
        let result = decode();
        SOURCE.with(|s| *s.borrow_mut() = previous);
        result
    }

    fn from_source(slice: &[u8]) -> Bytes {
        SOURCE
            .with(|s| {
                let source = s.borrow();
                let source = source.as_ref()?;
                let range = source.as_ptr_range();
                let inside = range.start <= slice.as_ptr() && slice.as_ptr_range().end <= range.end;
                inside.then(|| source.slice_ref(slice))
            })
            .unwrap_or_else(|| Bytes::copy_from_slice(slice))
    }

    /// Serialize `bytes` as a byte string.
    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Deserialize a byte string, slicing the source buffer when possible.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
            Ok(from_source(v))
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v.as_bytes()))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(Bytes::from(out))
        }
    }
}

/// A prost message, sent with [`Codec::Protobuf`].
///
/// ```
/// # #[cfg(feature = "protobuf")] {
/// use switchboard::codec::{Codec, Decode, Encode, Proto};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Ping { #[prost(uint64, tag = "1")] id: u64 }
///
/// let mut buf = Vec::new();
/// Proto(Ping { id: 9 }).encode(Codec::Protobuf, &mut buf).unwrap();
/// assert_eq!(Proto::<Ping>::decode(Codec::Protobuf, &buf).unwrap().0.id, 9);
/// assert!(Proto(Ping { id: 9 }).encode(Codec::Json, &mut buf).is_err());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proto<M>(pub M);

#[cfg(feature = "protobuf")]
impl<M: prost::Message> Encode for Proto<M> {
    fn encode_bytes(&self, codec: Codec) -> Result<bytes::Bytes, CodecError> {
        let mut out = Vec::with_capacity(self.0.encoded_len());
        self.encode(codec, &mut out)?;
        Ok(bytes::Bytes::from(out))
    }

    fn encode(&self, codec: Codec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match codec {
            Codec::Protobuf => self.0.encode(out).map_err(|e| CodecError::encode(codec, e)),
            _ => Err(CodecError::encode(codec, "a protobuf message can only be sent with the protobuf codec")),
        }
    }
}

#[cfg(feature = "protobuf")]
impl<M: prost::Message + Default> Decode for Proto<M> {
    fn decode(codec: Codec, bytes: &[u8]) -> Result<Self, CodecError> {
        match codec {
            Codec::Protobuf => M::decode(bytes).map(Proto).map_err(|e| CodecError::decode(codec, e)),
            _ => Err(CodecError::decode(codec, "a protobuf message can only be read with the protobuf codec")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Echo {
        id: u64,
        name: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    }

    #[test]
    fn every_serde_codec_round_trips() {
        let value = Echo { id: 42, name: "ünïcode".into(), payload: vec![1, 2, 3, 255] };
        for codec in [Codec::Json, Codec::Binary, Codec::MsgPack, Codec::Gob] {
            let mut buf = Vec::new();
            value.encode(codec, &mut buf).unwrap();
            assert_eq!(Echo::decode(codec, &buf).unwrap(), value, "{codec}");
            // The exact-size path writes the same bytes.
            assert_eq!(value.encode_bytes(codec).unwrap(), buf, "{codec}");
        }
    }

    #[test]
    fn codec_mismatch_and_garbage_are_errors_not_panics() {
        let mut buf = Vec::new();
        assert!(42u64.encode(Codec::Protobuf, &mut buf).is_err());
        for codec in Codec::ALL {
            assert!(Echo::decode(codec, b"\xff\xfe garbage").is_err(), "{codec}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Blob {
        id: u64,
        #[serde(with = "super::zerocopy")]
        data: bytes::Bytes,
    }

    #[test]
    fn zerocopy_fields_round_trip_in_every_serde_codec_and_slice_the_frame_when_they_can() {
        let blob = Blob { id: 3, data: bytes::Bytes::from((0..=255u8).cycle().take(5000).collect::<Vec<_>>()) };
        for codec in [Codec::Json, Codec::Binary, Codec::MsgPack, Codec::Gob] {
            let frame = blob.encode_bytes(codec).unwrap();
            let back = Blob::decode_bytes(codec, frame.clone()).unwrap();
            assert_eq!(back, blob, "{codec}");
            let sliced = frame.as_ptr_range().contains(&back.data.as_ptr());
            // JSON spells bytes as numbers and must copy; the binary formats slice.
            assert_eq!(sliced, codec != Codec::Json, "{codec}");
            // Decoding from a plain slice copies, and is still correct.
            assert_eq!(Blob::decode(codec, &frame).unwrap(), blob, "{codec}");
        }
    }

    #[test]
    fn ids_and_names_map_both_ways() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_id(codec.id()), Some(codec));
            assert_eq!(Codec::from_name(codec.name()), Some(codec));
        }
        assert_eq!(Codec::from_id(0), None);
        assert_eq!(Codec::from_id(9), None);
        assert_eq!((Codec::Gob.id(), Codec::Gob.name()), (5, "gob"));
        assert!(Codec::Gob.is_enabled());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Typed {
        small: i8,
        big: u64,
        ratio: f32,
        text: String,
        tags: Vec<String>,
        scores: std::collections::BTreeMap<String, i64>,
        inner: Option<Box<Typed>>,
        grid: [i16; 2],
    }

    #[test]
    fn gob_payloads_are_standalone_gob_streams() {
        let value = Typed {
            small: -3,
            big: u64::MAX,
            ratio: 0.25,
            text: "Grüße".into(),
            tags: vec!["a".into(), String::new()],
            scores: [("x".to_owned(), -1)].into(),
            inner: Some(Box::new(Typed { text: "in".into(), ..Typed::default() })),
            grid: [1, -1],
        };
        let mut buf = Vec::new();
        value.encode(Codec::Gob, &mut buf).unwrap();
        assert_eq!(Typed::decode(Codec::Gob, &buf).unwrap(), value);
        // What a fresh gob encoder writes, types first.
        let mut fresh = Vec::new();
        crate::codec::gob::Encoder::new().encode(&value, &mut fresh).unwrap();
        assert_eq!(buf, fresh);
        // Self-describing: untyped targets read it, structs as objects.
        let json = serde_json::Value::decode(Codec::Gob, &buf).unwrap();
        assert_eq!(json["Big"], serde_json::json!(u64::MAX));
        assert_eq!(json["Inner"]["Text"], serde_json::json!("in"));
        for v in [56i64, -1, 0] {
            assert_eq!(i64::decode(Codec::Gob, &v.encode_bytes(Codec::Gob).unwrap()).unwrap(), v);
        }
        assert_eq!(
            Vec::<String>::decode(Codec::Gob, &vec!["z".to_owned()].encode_bytes(Codec::Gob).unwrap()).unwrap(),
            ["z"]
        );
        <()>::decode(Codec::Gob, &().encode_bytes(Codec::Gob).unwrap()).unwrap();

        // A payload is one whole value: less, or more, is an error.
        for bad in [&buf[..0], &buf[..1], &buf[..buf.len() - 1]] {
            let err = Typed::decode(Codec::Gob, bad).unwrap_err().to_string();
            assert!(err.starts_with("gob decode: truncated"), "{err}");
        }
        let two = [buf.clone(), buf.clone()].concat();
        let err = Typed::decode(Codec::Gob, &two).unwrap_err().to_string();
        assert!(err.contains("bytes after the value"), "{err}");
        assert!(Typed::decode(Codec::Gob, b"\x05\xff\x82\x01\x02").is_err());

        // Gob cannot send a top-level value whose type it cannot see.
        for err in [Vec::<i64>::new().encode_bytes(Codec::Gob), None::<i64>.encode_bytes(Codec::Gob)] {
            let err = err.unwrap_err().to_string();
            assert!(err.starts_with("gob encode: gob: cannot tell the gob type"), "{err}");
        }
    }

    #[cfg(feature = "protobuf")]
    #[test]
    fn protobuf_messages_are_not_gob() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Ping {
            #[prost(uint64, tag = "1")]
            id: u64,
        }
        let err = Proto(Ping { id: 1 }).encode(Codec::Gob, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("only be sent with the protobuf codec"), "{err}");
        assert!(Proto::<Ping>::decode(Codec::Gob, &[]).is_err());
    }

    /// Every finite `f64` survives each codec bit for bit, into a typed
    /// field and into `serde_json::Value` (the fuzzer found JSON floats that
    /// came back one unit in the last place off before serde_json's
    /// `float_roundtrip` parser was turned on).
    #[test]
    fn floats_round_trip_exactly() {
        let mut rng = fastrand::Rng::with_seed(13);
        let mut samples =
            vec![1.3333333333333333e25, f64::MIN_POSITIVE, f64::MAX, f64::EPSILON, 0.1 + 0.2, 5e-324, -0.0, 1e23];
        samples.extend((0..20_000).map(|_| f64::from_bits(rng.u64(..))).filter(|f| f.is_finite()));
        #[derive(Serialize, Deserialize)]
        struct Reading {
            x: f64,
        }
        for codec in [Codec::Json, Codec::Binary, Codec::MsgPack, Codec::Gob] {
            for &f in &samples {
                if codec == Codec::Gob && f == 0.0 {
                    // Gob leaves zero fields out, and -0.0 is zero: Go's
                    // encoder sends neither, and the decoder fills in +0.0.
                    continue;
                }
                let bytes = Reading { x: f }.encode_bytes(codec).unwrap();
                let back = Reading::decode(codec, &bytes).unwrap().x;
                assert_eq!(back.to_bits(), f.to_bits(), "{codec:?}: {f:e} came back as {back:e}");
            }
        }
        for &f in &samples {
            let text = serde_json::to_vec(&f).unwrap();
            let value = serde_json::Value::decode(Codec::Json, &text).unwrap();
            assert_eq!(value.as_f64().map(f64::to_bits), Some(f.to_bits()), "{f:e} as a JSON value");
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes are an error or a value, never a panic.
        #[test]
        fn gob_garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Typed::decode(Codec::Gob, &bytes);
            let _ = serde_json::Value::decode(Codec::Gob, &bytes);
        }
    }
}
