//! [`Decoder`]: one receiving side of a gob stream.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::de::{top_level, Ctx};
use super::types::{read_wire_type, TypeId, WireType, FIRST_USER_ID};
use super::wire::{message_len, Reader};
use super::{GobError, Limits};

/// The receiving side of one gob stream (one connection).
///
/// It remembers the type definitions the peer has sent, and decodes values
/// with them into any serde type. A stream reader frames messages with
/// [`message_len`](Self::message_len) and hands each body to
/// [`decode_message`](Self::decode_message), or hands its whole buffer to
/// [`decode`](Self::decode), which takes what one value needs.
///
/// ```
/// use switchboard::go::gob::Decoder;
///
/// // What Go's `gob.NewEncoder(w).Encode(Args{A: 7, B: 8})` writes.
/// let go: &[u8] = &[
///     0x1e, 0xff, 0x81, 0x03, 0x01, 0x01, 0x04, 0x41, 0x72, 0x67, 0x73, 0x01, 0xff, 0x82, 0x00, 0x01,
///     0x02, 0x01, 0x01, 0x41, 0x01, 0x04, 0x00, 0x01, 0x01, 0x42, 0x01, 0x04, 0x00, 0x00, 0x00,
///     0x07, 0xff, 0x82, 0x01, 0x0e, 0x01, 0x10, 0x00,
/// ];
/// let mut dec = Decoder::new();
/// // Not enough bytes yet: nothing is consumed.
/// assert!(dec.decode::<serde_json::Value>(&go[..35]).unwrap().is_none());
/// let (value, used) = dec.decode::<serde_json::Value>(go).unwrap().unwrap();
/// assert_eq!(value, serde_json::json!({"A": 7, "B": 8}));
/// assert_eq!(used, go.len());
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    types: HashMap<TypeId, WireType>,
    type_bytes: usize,
    limits: Limits,
}

impl Decoder {
    /// A decoder for a new stream, with [`Limits::default`].
    pub fn new() -> Self {
        Decoder::default()
    }

    /// A decoder enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Decoder { limits, ..Decoder::default() }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The frame of the next message in `buf`: see [`message_len`](super::message_len),
    /// with this decoder's `max_message`.
    pub fn message_len(&self, buf: &[u8]) -> Result<Option<(usize, usize)>, GobError> {
        message_len(buf, self.limits.max_message)
    }

    /// Handles one message body (without its byte count): a type definition
    /// is remembered and gives `Ok(None)`; a value is decoded into `T`.
    pub fn decode_message<'de, T: Deserialize<'de>>(&mut self, body: &'de [u8]) -> Result<Option<T>, GobError> {
        let mut r = Reader::new(body);
        let id = r.int("a message's type id")?;
        if id < 0 {
            self.define(id.checked_neg().unwrap_or(i64::MAX), r, body.len())?;
            return Ok(None);
        }
        if id == 0 {
            return Err(GobError::Corrupt("a value of type id 0".into()));
        }
        let ctx = Ctx::new(&self.types, &self.limits);
        let value = top_level(&ctx, id, &mut r)?;
        match r.remaining() {
            0 => Ok(Some(value)),
            n => Err(GobError::TrailingBytes(n)),
        }
    }

    /// Decodes the next value from `buf`, the unread bytes of a stream:
    /// handles the type definitions before it and returns the value with the
    /// number of bytes used. `Ok(None)` means `buf` does not yet hold the
    /// whole value; then nothing was used, and the call can be repeated with
    /// more bytes.
    pub fn decode<'de, T: Deserialize<'de>>(&mut self, buf: &'de [u8]) -> Result<Option<(T, usize)>, GobError> {
        // First find the value message, so that nothing is consumed unless
        // the value can be decoded now.
        let mut bodies = Vec::new();
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let Some((header, len)) = self.message_len(rest)? else { return Ok(None) };
            let body = rest.get(header..header + len).unwrap_or_default();
            used += header + len;
            bodies.push(body);
            if Reader::new(body).int("a message's type id")? >= 0 {
                break;
            }
        }
        let Some((value_body, definitions)) = bodies.split_last() else { return Ok(None) };
        for body in definitions {
            self.decode_message::<IgnoredAny>(body)?;
        }
        match self.decode_message(value_body)? {
            Some(value) => Ok(Some((value, used))),
            None => Err(GobError::Corrupt("internal: a value message defined a type".into())),
        }
    }

    fn define(&mut self, id: TypeId, mut r: Reader<'_>, len: usize) -> Result<(), GobError> {
        if id < FIRST_USER_ID || id > TypeId::from(i32::MAX) || self.types.contains_key(&id) {
            return Err(GobError::DuplicateType(id));
        }
        if self.types.len() >= self.limits.max_types {
            return Err(GobError::TooManyTypes(self.limits.max_types));
        }
        self.type_bytes = self.type_bytes.saturating_add(len);
        if self.type_bytes > self.limits.max_type_bytes {
            return Err(GobError::BadTypeDef(format!(
                "the type definitions on this stream passed the limit of {} bytes",
                self.limits.max_type_bytes
            )));
        }
        let wire = read_wire_type(&mut r)?;
        if r.remaining() > 0 {
            return Err(GobError::BadTypeDef(format!(
                "{} extra bytes after the definition of type {id}",
                r.remaining()
            )));
        }
        self.types.insert(id, wire);
        Ok(())
    }
}
