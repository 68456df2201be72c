//! [`Decoder`]: one receiving side of a gob stream.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::de::{top_level, Ctx};
use super::standalone::Prefixes;
use super::types::{read_wire_type, TypeId, WireType, FIRST_USER_ID};
use super::wire::{message_head, message_len, type_id_prefix, Reader};
use super::{GobError, Limits};

/// What [`Decoder::take_value`] found at the front of a stream's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<'b> {
    /// A whole value message: its body, and the bytes used up to its end
    /// (definitions before it included, which the decoder has taken).
    Value {
        /// The message body, type id first.
        body: &'b [u8],
        /// Bytes of the buffer up to the end of the value message.
        used: usize,
    },
    /// No whole value yet.
    Incomplete {
        /// The buffer's first `taken` bytes were whole type definitions, now
        /// remembered by the decoder: the caller drops them.
        taken: usize,
        /// The length (byte count included) of the message after those,
        /// once its byte count has arrived: nothing more can be found until
        /// that much is buffered. The message is within
        /// [`Limits::max_message`] (and, if a definition, within the type
        /// limits); the bytes are not all there, so a reader may budget for
        /// them but should not trust the peer to send them.
        need: Option<usize>,
    },
}

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
/// use switchboard::codec::gob::Decoder;
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
    ///
    /// Each call looks at `buf` from its start again. A reader of a stream
    /// that arrives in pieces uses [`take_value`](Self::take_value) instead,
    /// which keeps the definitions as they arrive.
    pub fn next_value<'b>(&mut self, buf: &'b [u8]) -> Result<Option<(&'b [u8], usize)>, GobError> {
        // First find the value message, so that nothing is taken unless the
        // whole value is here. Definitions are held to the stream's limits
        // as soon as their byte count is there.
        let mut bodies = Vec::new();
        let mut used = 0;
        let mut defined = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let Some((header, len)) = message_head(rest, self.limits.max_message)? else { return Ok(None) };
            let arrived = rest.get(header..(header + len).min(rest.len())).unwrap_or_default();
            if type_id_prefix(arrived)?.is_some_and(|id| id < 0) {
                self.admit_definitions(bodies.len() + 1, defined + len)?;
                defined += len;
            }
            if arrived.len() < len {
                return Ok(None);
            }
            used += header + len;
            bodies.push(arrived);
            if Reader::new(arrived).int("a message's type id")? >= 0 {
                break;
            }
        }
        let Some((value, definitions)) = bodies.split_last() else { return Ok(None) };
        for body in definitions {
            self.decode_message::<IgnoredAny>(body)?;
        }
        Ok(Some((value, used)))
    }

    /// Takes the type definitions at the front of `buf`, the unread bytes of
    /// a stream, as they arrive, and finds the value message after them.
    /// For a reader whose buffer fills in pieces: every call looks only at
    /// what follows the definitions it has taken, which the caller drops, so
    /// a stream costs the same however it is cut up. A definition is held
    /// to the stream's [`Limits`] (number of types, bytes of definitions) as
    /// soon as its byte count and type id are there, before the rest of it
    /// is buffered. An error means the stream cannot be read further.
    ///
    /// ```
    /// use switchboard::codec::gob::{Decoder, Encoder, Next};
    ///
    /// let mut stream = Vec::new();
    /// // A []string: a type definition, then the value.
    /// Encoder::new().encode(&["seven", "eight"], &mut stream).unwrap();
    /// let mut dec = Decoder::new();
    /// let mut buf = Vec::new();
    /// // The stream arrives a byte at a time.
    /// let value = stream.iter().find_map(|&b| {
    ///     buf.push(b);
    ///     match dec.take_value(&buf).unwrap() {
    ///         Next::Value { body, used } => Some((dec.decode_value::<Vec<String>>(body).unwrap(), used)),
    ///         Next::Incomplete { taken, .. } => {
    ///             buf.drain(..taken); // definitions are kept by the decoder
    ///             None
    ///         }
    ///     }
    /// });
    /// assert_eq!(value, Some((vec!["seven".to_owned(), "eight".to_owned()], buf.len())));
    /// assert!(buf.len() < stream.len()); // the definition was taken as it came
    /// ```
    pub fn take_value<'b>(&mut self, buf: &'b [u8]) -> Result<Next<'b>, GobError> {
        let mut taken = 0;
        loop {
            let rest = buf.get(taken..).unwrap_or_default();
            let Some((header, len)) = message_head(rest, self.limits.max_message)? else {
                return Ok(Next::Incomplete { taken, need: None });
            };
            let need = header + len;
            let body = rest.get(header..need.min(rest.len())).unwrap_or_default();
            let whole = body.len() == len;
            match type_id_prefix(body)? {
                Some(id) if id < 0 => {
                    self.admit_definitions(1, len)?;
                    if !whole {
                        return Ok(Next::Incomplete { taken, need: Some(need) });
                    }
                    self.decode_message::<IgnoredAny>(body)?;
                    taken += need;
                }
                _ if !whole => return Ok(Next::Incomplete { taken, need: Some(need) }),
                _ => return Ok(Next::Value { body, used: taken + need }),
            }
        }
    }

    /// Whether `types` more definitions of `bytes` in all fit in the
    /// stream's limits.
    fn admit_definitions(&self, types: usize, bytes: usize) -> Result<(), GobError> {
        if self.types.len().saturating_add(types) > self.limits.max_types {
            return Err(GobError::TooManyTypes(self.limits.max_types));
        }
        if self.type_bytes.saturating_add(bytes) > self.limits.max_type_bytes {
            return Err(GobError::BadTypeDef(format!(
                "the type definitions on this stream would pass the limit of {} bytes",
                self.limits.max_type_bytes
            )));
        }
        Ok(())
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
        self.admit_definitions(1, len)?;
        self.type_bytes += len;
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
