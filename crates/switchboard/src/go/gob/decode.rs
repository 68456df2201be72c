//! [`Decoder`]: one receiving side of a gob stream.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::de::{top_level, Ctx};
use super::standalone::Prefixes;
use super::types::{read_wire_type, TypeId, WireType, FIRST_USER_ID};
use super::wire::{message_len, Reader};
use super::{GobError, Limits};

/// The receiving side of one gob stream (one connection).
///
/// It remembers the type definitions the peer has sent, and decodes values
/// with them into any serde type. A stream reader hands its buffer to
/// [`decode`](Self::decode), which takes what one value needs; or, to keep
/// going past a value that does not fit its target type, to
/// [`next_value`](Self::next_value) (definitions, framing) and then
/// [`decode_value`](Self::decode_value). [`message_len`](Self::message_len)
/// and [`decode_message`](Self::decode_message) work one message at a time.
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
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    pub(super) types: HashMap<TypeId, WireType>,
    type_bytes: usize,
    limits: Limits,
    /// What [`to_standalone_cached`](Self::to_standalone_cached) remembers.
    pub(super) prefixes: Prefixes,
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
        self.value_of(id, r).map(Some)
    }

    /// Decodes a value message body (as [`next_value`](Self::next_value)
    /// returns it) with the types defined so far. A failure here, such as a
    /// value that does not fit `T`, leaves the stream usable: the next value
    /// starts after this one.
    pub fn decode_value<'de, T: Deserialize<'de>>(&self, body: &'de [u8]) -> Result<T, GobError> {
        let mut r = Reader::new(body);
        let id = r.int("a message's type id")?;
        if id < 0 {
            return Err(GobError::Corrupt(format!("a definition of type {}, not a value", id.unsigned_abs())));
        }
        self.value_of(id, r)
    }

    fn value_of<'de, T: Deserialize<'de>>(&self, id: TypeId, mut r: Reader<'de>) -> Result<T, GobError> {
        if id == 0 {
            return Err(GobError::Corrupt("a value of type id 0".into()));
        }
        let ctx = Ctx::new(&self.types, &self.limits);
        let value = top_level(&ctx, id, &mut r)?;
        match r.remaining() {
            0 => Ok(value),
            n => Err(GobError::TrailingBytes(n)),
        }
    }

    /// Takes the type definitions at the front of `buf`, the unread bytes of
    /// a stream, and finds the value message after them: its body and the
    /// number of bytes used up to its end. `Ok(None)` means `buf` does not
    /// hold the whole value yet; then nothing was taken, and the call can be
    /// repeated with more bytes. An error here (bad framing, a bad type
    /// definition) means the stream cannot be read further.
    pub fn next_value<'b>(&mut self, buf: &'b [u8]) -> Result<Option<(&'b [u8], usize)>, GobError> {
        // First find the value message, so that nothing is taken unless the
        // whole value is here.
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
        let Some((value, definitions)) = bodies.split_last() else { return Ok(None) };
        for body in definitions {
            self.decode_message::<IgnoredAny>(body)?;
        }
        Ok(Some((value, used)))
    }

    /// Decodes the next value from `buf`, the unread bytes of a stream:
    /// [`next_value`](Self::next_value) then [`decode_value`](Self::decode_value).
    /// Returns the value and the number of bytes used, or `Ok(None)` if
    /// `buf` does not hold the whole value yet (nothing was used).
    pub fn decode<'de, T: Deserialize<'de>>(&mut self, buf: &'de [u8]) -> Result<Option<(T, usize)>, GobError> {
        let Some((body, used)) = self.next_value(buf)? else { return Ok(None) };
        Ok(Some((self.decode_value(body)?, used)))
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
