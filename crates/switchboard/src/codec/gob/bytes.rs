//! Go's `[]byte`, as Go itself writes it in each format: [`Bytes`] and the
//! [`with`](self) adapter (`#[serde(with = "switchboard::codec::gob::bytes")]`).
//!
//! Go has one byte-slice type and two ways to send it: `encoding/gob` sends
//! raw bytes, `encoding/json` (and so `net/rpc/jsonrpc`) a base64 string.
//! A Rust field meant to carry a Go `[]byte` should do the same, whichever
//! way the call came in, so one handler serves gob and JSON-RPC callers.
//! serde says which kind of format it is talking to
//! (`is_human_readable`): in JSON the value is a base64 string, in binary
//! formats (gob, MessagePack, postcard) raw bytes. Reading is lenient: JSON
//! may also hold an array of numbers, and binary formats a sequence.
//!
//! ```
//! use switchboard::codec;
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Blob {
//!     #[serde(rename = "Data", with = "codec::gob::bytes")]
//!     data: Vec<u8>,
//! }
//!
//! let json = serde_json::to_string(&Blob { data: b"hi".to_vec() }).unwrap();
//! assert_eq!(json, r#"{"Data":"aGk="}"#); // what Go's encoding/json writes
//! assert_eq!(serde_json::from_str::<Blob>(&json).unwrap().data, b"hi");
//! ```

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A Go `[]byte`: base64 in JSON, raw bytes in binary formats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserialize(deserializer).map(Bytes)
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Serializes bytes as Go does: base64 for JSON, raw for binary formats.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.serialize_str(&BASE64.encode(bytes))
    } else {
        serializer.serialize_bytes(bytes)
    }
}

/// Deserializes bytes written by [`serialize`] (or by Go).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    if deserializer.is_human_readable() {
        deserializer.deserialize_any(BytesVisitor { base64: true })
    } else {
        deserializer.deserialize_bytes(BytesVisitor { base64: false })
    }
}

struct BytesVisitor {
    base64: bool,
}

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.base64 {
            f.write_str("a base64 string (Go's []byte in JSON)")
        } else {
            f.write_str("bytes")
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        if self.base64 {
            BASE64.decode(v).map_err(|e| E::custom(format!("not base64: {e}")))
        } else {
            Ok(v.as_bytes().to_vec())
        }
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<u8>, E> {
        Ok(Vec::new()) // Go's nil slice in JSON: null
    }

    fn visit_none<E: de::Error>(self) -> Result<Vec<u8>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_base64_and_binary_formats_raw_bytes() {
        let b = Bytes(vec![0, 1, 2, 250]);
        assert_eq!(serde_json::to_string(&b).expect("json"), "\"AAEC+g==\"");
        assert_eq!(serde_json::from_str::<Bytes>("\"AAEC+g==\"").expect("json"), b);
        assert_eq!(serde_json::from_str::<Bytes>("[0,1,2,250]").expect("lenient"), b);
        assert_eq!(serde_json::from_str::<Bytes>("null").expect("nil"), Bytes::default());
        assert!(serde_json::from_str::<Bytes>("\"not base64!\"").is_err());
        let packed = postcard::to_allocvec(&b).expect("postcard");
        assert_eq!(packed, [4, 0, 1, 2, 250]);
        assert_eq!(postcard::from_bytes::<Bytes>(&packed).expect("postcard"), b);
    }

    #[test]
    fn gob_carries_raw_bytes_as_go_s_byte_slice() {
        use crate::codec::gob::{Decoder, Encoder};
        let b = Bytes(vec![0, 1, 2, 250]);
        let (mut ours, mut plain) = (Vec::new(), Vec::new());
        Encoder::new().encode(&b, &mut ours).expect("gob");
        // Exactly what a plain byte slice (serialize_bytes) gives: Go's []byte.
        Encoder::new().encode(&serde_bytes::Bytes::new(&b.0), &mut plain).expect("gob");
        assert_eq!(ours, plain);
        let (back, _) = Decoder::new().decode::<Bytes>(&ours).expect("decodes").expect("whole");
        assert_eq!(back, b);
    }
}
