//! The wire format: length-checked frames with a fixed 24-byte header.
//!
//! ```text
//! offset size field
//!      0    2 magic 0xC5 0xB0
//!      2    1 version (1)
//!      3    1 kind: request, response, one-way, ping, pong, cancel, go-away
//!      4    1 codec id of the payload (see crate::codec::Codec)
//!      5    1 flags: bit 0 payload is LZ4-compressed, bit 1 refused unprocessed
//!      6    2 status code (responses; 0 otherwise), big-endian
//!      8    8 request id, big-endian
//!     16    4 metadata length M, big-endian
//!     20    4 payload length P, big-endian
//!     24    M metadata: TLV entries (tag u8, length varint, value)
//!   24+M    P payload, encoded with the codec named in the header
//! ```
//!
//! Why this shape: the two lengths sit in the fixed header, so a reader knows
//! the whole frame size after 24 bytes and refuses an oversized frame before
//! it allocates anything; the first byte (0xC5) is neither ASCII nor a valid
//! first byte of a Go gob stream, so one port can sniff protocols; metadata is
//! tag-length-value so old readers skip tags they do not know. The full byte
//! layout, with the tag table, is in `docs/PROTOCOL.md`.
//!
//! Decoding is zero-copy: a decoded [`Frame`]'s metadata strings and payload
//! are [`Bytes`] slices of the connection's read buffer.
//!
//! ```
//! use bytes::BytesMut;
//! use switchboard::frame::{Decoded, FrameDecoder, Head, Kind, Metadata};
//!
//! let mut meta = Metadata::default();
//! meta.set_method("Arith.Multiply");
//! let mut buf = BytesMut::new();
//! Head::new(Kind::Request, 7).encode(&mut buf, &meta, b"payload").unwrap();
//!
//! let mut decoder = FrameDecoder::new(16 << 20);
//! let Some(Decoded::Frame(frame)) = decoder.decode(&mut buf).unwrap() else { panic!() };
//! assert_eq!(frame.head.id, 7);
//! assert_eq!(frame.meta.method(), Some("Arith.Multiply"));
//! assert_eq!(&frame.payload[..], b"payload");
//! ```

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The first two bytes of every Switchboard frame.
pub const MAGIC: [u8; 2] = [0xC5, 0xB0];
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
/// The default largest frame (header + metadata + payload) accepted: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// The default largest metadata section accepted: 64 KiB.
pub const DEFAULT_MAX_METADATA: usize = 64 << 10;
/// The default most user key/value entries in one frame's metadata: 256.
pub const DEFAULT_MAX_ENTRIES: usize = 256;

/// Header flag: the payload is LZ4-compressed (block format, 4-byte
/// little-endian uncompressed size first).
pub const FLAG_COMPRESSED: u8 = 0b0000_0001;
/// Header flag on a response: the server refused the request before any
/// handler ran (shutting down, overloaded), so it is always safe to retry.
pub const FLAG_REFUSED: u8 = 0b0000_0010;
/// Header flag on an error response: the server passes on the failure of
/// a call it made itself ([`Status::is_forwarded`](crate::Status::is_forwarded));
/// the caller must not count it against the server's health.
pub const FLAG_FORWARDED: u8 = 0b0000_0100;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A call that expects a response with the same id.
    Request = 1,
    /// The answer to a request.
    Response = 2,
    /// A call that expects no response.
    OneWay = 3,
    /// A liveness probe; answered with [`Kind::Pong`] carrying the same id.
    Ping = 4,
    /// The answer to a ping.
    Pong = 5,
    /// The caller gave up on request `id`; the server cancels its handler.
    Cancel = 6,
    /// The sender will take no new requests on this connection (graceful
    /// shutdown); requests already sent are still answered.
    GoAway = 7,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::OneWay,
            4 => Kind::Ping,
            5 => Kind::Pong,
            6 => Kind::Cancel,
            7 => Kind::GoAway,
            _ => return None,
        })
    }
}

/// The fixed part of a frame, less the two lengths (which the encoder fills in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// What the frame is for.
    pub kind: Kind,
    /// Codec id of the payload (a raw byte: unknown ids must reach the
    /// server so it can answer with a clear error).
    pub codec: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Status code on responses ([`crate::Code`] as u16); 0 otherwise.
    pub status: u16,
    /// Request id; a response carries the id of its request.
    pub id: u64,
}

impl Head {
    /// A head of this kind and id with no codec, flags or status.
    pub fn new(kind: Kind, id: u64) -> Head {
        Head { kind, codec: 0, flags: 0, status: 0, id }
    }

    /// Append the whole frame (this head, `meta`, `payload`) to `buf`.
    ///
    /// Fails only if the payload or metadata do not fit the u32 length fields;
    /// callers check their configured frame limit before encoding.
    pub fn encode(&self, buf: &mut BytesMut, meta: &Metadata, payload: &[u8]) -> Result<(), FrameError> {
        buf.reserve(HEADER_LEN + meta.encoded_len() + payload.len());
        self.encode_prefix(buf, meta, payload.len())?;
        buf.put_slice(payload);
        Ok(())
    }

    /// Append the header and metadata of a frame whose `payload_len` payload
    /// bytes the caller writes next (or queues separately, uncopied).
    pub fn encode_prefix(&self, buf: &mut BytesMut, meta: &Metadata, payload_len: usize) -> Result<(), FrameError> {
        let payload_len = u32::try_from(payload_len)
            .map_err(|_| FrameError::TooLarge { len: payload_len as u64, max: u32::MAX as u64 })?;
        let meta_len = meta.encoded_len();
        let meta_len_u32 =
            u32::try_from(meta_len).map_err(|_| FrameError::TooLarge { len: meta_len as u64, max: u32::MAX as u64 })?;
        buf.reserve(HEADER_LEN + meta_len);
        buf.put_slice(&MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(self.kind as u8);
        buf.put_u8(self.codec);
        buf.put_u8(self.flags);
        buf.put_u16(self.status);
        buf.put_u64(self.id);
        buf.put_u32(meta_len_u32);
        buf.put_u32(payload_len);
        meta.encode(buf);
        Ok(())
    }
}

/// A decoded frame. Its strings and payload borrow the read buffer's memory.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The fixed header.
    pub head: Head,
    /// The decoded metadata.
    pub meta: Metadata,
    /// The payload bytes, still compressed if `head.flags` says so.
    pub payload: Bytes,
}

impl Frame {
    /// The payload, decompressed if the frame says it is compressed.
    /// `max` bounds the decompressed size (a compression bomb is refused
    /// before anything of its claimed size is allocated).
    pub fn take_payload(&mut self, max: usize) -> Result<Bytes, FrameError> {
        let payload = std::mem::take(&mut self.payload);
        if self.head.flags & FLAG_COMPRESSED == 0 {
            return Ok(payload);
        }
        decompress(&payload, max)
    }
}

/// LZ4-compress `payload` in the format [`FLAG_COMPRESSED`] announces.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(payload)
}

/// The most an LZ4 block can expand: a length byte of 255 adds 255 bytes of
/// output, so no input byte stands for more than 255 output bytes (plus a
/// few for the minimum match of the last sequence).
const LZ4_MAX_RATIO: usize = 255;

/// Decompress a payload in the [`FLAG_COMPRESSED`] format, never trusting
/// the size it claims: a claim over `max`, or over what its compressed bytes
/// could possibly expand to, is refused before any work; the output grows
/// only as the blocks produce it; the first malformed sequence stops it.
fn decompress(payload: &[u8], max: usize) -> Result<Bytes, FrameError> {
    let (size, block) = match payload {
        [a, b, c, d, block @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, block),
        _ => return Err(FrameError::BadCompression("compressed payload shorter than its 4-byte size".into())),
    };
    if size > max {
        return Err(FrameError::TooLarge { len: size as u64, max: max as u64 });
    }
    if size > block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(16) {
        return Err(FrameError::BadCompression(format!(
            "{} compressed bytes claim {size} bytes, more than LZ4 can expand them to",
            block.len()
        )));
    }
    let out = lz4_block(block, size).map_err(|why| FrameError::BadCompression(why.into()))?;
    if out.len() != size {
        return Err(FrameError::BadCompression(format!("decompressed to {} bytes, not the {size} claimed", out.len())));
    }
    Ok(Bytes::from(out))
}

/// Decode one LZ4 block (sequences of a token, literals, a 2-byte offset
/// and a match) into at most `max` bytes.
fn lz4_block(input: &[u8], max: usize) -> Result<Vec<u8>, &'static str> {
    fn length(input: &[u8], at: &mut usize, nibble: usize) -> Result<usize, &'static str> {
        let mut len = nibble;
        if nibble == 15 {
            loop {
                let byte = *input.get(*at).ok_or("a length runs past the end")?;
                *at += 1;
                len = len.checked_add(byte as usize).ok_or("a length overflows")?;
                if byte != 255 {
                    break;
                }
            }
        }
        Ok(len)
    }
    let mut out: Vec<u8> = Vec::with_capacity(max.min(input.len().saturating_mul(4)).min(1 << 20));
    let mut at = 0;
    while at < input.len() {
        let token = input[at] as usize;
        at += 1;
        let literals = length(input, &mut at, token >> 4)?;
        let end = at.checked_add(literals).filter(|end| *end <= input.len()).ok_or("literals run past the end")?;
        if out.len() + literals > max {
            return Err("more output than the size claimed");
        }
        out.extend_from_slice(&input[at..end]);
        at = end;
        if at == input.len() {
            break; // the last sequence has literals only
        }
        let offset = match input.get(at..at + 2) {
            Some([lo, hi]) => u16::from_le_bytes([*lo, *hi]) as usize,
            _ => return Err("an offset runs past the end"),
        };
        at += 2;
        if offset == 0 || offset > out.len() {
            return Err("a match refers to bytes before the start");
        }
        let mut remaining = length(input, &mut at, token & 15)?.checked_add(4).ok_or("a length overflows")?;
        if out.len() + remaining > max {
            return Err("more output than the size claimed");
        }
        // A match may overlap its own output (offset < length): the bytes
        // from `start` repeat with period `offset`, so copying from `start`
        // as far as has been written doubles the run each step.
        let start = out.len() - offset;
        while remaining > 0 {
            let n = remaining.min(out.len() - start);
            out.extend_from_within(start..start + n);
            remaining -= n;
        }
    }
    Ok(out)
}

/// What went wrong reading a frame. Every variant but
/// [`FrameError::TooLarge`] means the byte stream is no longer trustworthy and
/// the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream does not start with the Switchboard magic.
    #[error("bad magic bytes {0:02x?}: not a Switchboard frame")]
    BadMagic([u8; 2]),
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    BadVersion(u8),
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// A frame (or decompressed payload) larger than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The size the peer announced.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// Malformed metadata.
    #[error("malformed metadata: {0}")]
    BadMetadata(&'static str),
    /// More user entries in the metadata than the limit.
    #[error("metadata has more than {max} entries")]
    TooManyEntries {
        /// The configured limit.
        max: usize,
    },
    /// A metadata section larger than the limit.
    #[error("metadata of {len} bytes exceeds the limit of {max} bytes")]
    MetadataTooLarge {
        /// The size the peer announced.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// A compressed payload that does not decompress.
    #[error("bad compressed payload: {0}")]
    BadCompression(String),
}

/// One step of [`FrameDecoder::decode`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Decoded {
    /// A whole frame.
    Frame(Frame),
    /// A frame whose header announced more than the limit. Its bytes are being
    /// discarded as they arrive (nothing of that size is allocated) and the
    /// connection stays usable; the receiver should answer `id` with
    /// `ResourceExhausted` if `kind` is a request.
    Oversized {
        /// The oversized frame's header.
        head: Head,
        /// Its announced total length.
        len: u64,
    },
    /// A frame over a metadata limit (its section larger than the limit,
    /// which is seen from the header and discarded like an oversized frame,
    /// or more user entries than allowed). The connection stays usable; the
    /// receiver should answer `head.id` with `ResourceExhausted` if it is a
    /// request.
    Refused {
        /// The frame's header.
        head: Head,
        /// Which limit it is over.
        why: FrameError,
    },
}

/// Incremental frame decoder over a connection's read buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    max_metadata: usize,
    max_entries: usize,
    /// Bytes of an oversized frame still to discard.
    skipping: u64,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame` bytes in total,
    /// metadata sections over [`DEFAULT_MAX_METADATA`] and more than
    /// [`DEFAULT_MAX_ENTRIES`] user entries.
    pub fn new(max_frame: usize) -> FrameDecoder {
        FrameDecoder { max_frame, max_metadata: DEFAULT_MAX_METADATA, max_entries: DEFAULT_MAX_ENTRIES, skipping: 0 }
    }

    /// The same decoder with other metadata limits: sections over `bytes`
    /// are refused from the header (before they are buffered), and a
    /// section with more than `entries` user entries is a protocol error.
    pub fn with_metadata_limits(mut self, bytes: usize, entries: usize) -> FrameDecoder {
        self.max_metadata = bytes;
        self.max_entries = entries;
        self
    }

    /// Whether a frame has started and not ended: bytes of it are in `buf`,
    /// or the rest of a refused frame is still to be discarded.
    pub fn in_frame(&self, buf: &BytesMut) -> bool {
        self.skipping > 0 || !buf.is_empty()
    }

    /// Total length of the frame whose header is at the front of `buf` and
    /// whose bytes have not all arrived: what finishing it will hold.
    pub fn pending_len(&self, buf: &BytesMut) -> Option<usize> {
        self.frame_in_progress(buf).filter(|total| *total > buf.len())
    }

    /// Give up on the frame whose header is at the front of `buf`: its bytes
    /// are discarded as they arrive, as an oversized frame's are. Returns its
    /// header and length (to answer it), or `None` if no header is there.
    pub fn skip_pending(&mut self, buf: &mut BytesMut) -> Option<(Head, u64)> {
        let total = self.frame_in_progress(buf)?;
        let (head, _, _) = parse_head(&buf[..HEADER_LEN]).ok()?;
        self.skip(buf, total as u64);
        Some((head, total as u64))
    }

    /// Drop the header at the front of `buf` and discard the `total - 24`
    /// bytes behind it, what has arrived now and the rest as it arrives.
    fn skip(&mut self, buf: &mut BytesMut, total: u64) {
        buf.advance(HEADER_LEN);
        self.skipping = total - HEADER_LEN as u64;
        let n = (self.skipping.min(buf.len() as u64)) as usize;
        buf.advance(n);
        self.skipping -= n as u64;
    }

    /// The configured limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Make room in `buf` for the next read.
    ///
    /// When the frame in progress has announced its length, room is made for
    /// all of it at once, so a large frame is read straight into place
    /// instead of being copied along each time the buffer grows. What is
    /// reserved ahead of the bytes actually received is capped at 1 MiB (or
    /// as much as has arrived, whichever is larger): a peer that announces
    /// big frames without sending them cannot make us hold their size.
    pub fn reserve_for_read(&self, buf: &mut BytesMut, chunk: usize) {
        const AHEAD: usize = 1 << 20;
        const MIN_SPARE: usize = 4096;
        let needed = match self.frame_in_progress(buf) {
            Some(total) if total > buf.len() => (total - buf.len()).min(AHEAD.max(buf.len())),
            _ => MIN_SPARE,
        };
        if buf.capacity() - buf.len() < needed {
            buf.reserve(needed.max(chunk));
        }
    }

    /// Total length of the frame whose header is at the front of `buf`, if
    /// the header is complete and the frame is within the limit.
    fn frame_in_progress(&self, buf: &BytesMut) -> Option<usize> {
        if self.skipping > 0 || buf.len() < HEADER_LEN || buf[..2] != MAGIC {
            return None;
        }
        let meta = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
        let payload = u32::from_be_bytes([buf[20], buf[21], buf[22], buf[23]]) as usize;
        let total = HEADER_LEN + meta + payload;
        (total <= self.max_frame && meta <= self.max_metadata).then_some(total)
    }

    /// Take the next frame out of `buf`, if a whole one is there.
    ///
    /// `Ok(None)` means more bytes are needed (the caller reads more and calls
    /// again). `Err` means the stream is corrupt and must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        if self.skipping > 0 {
            let n = (self.skipping.min(buf.len() as u64)) as usize;
            buf.advance(n);
            self.skipping -= n as u64;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        if buf.len() < HEADER_LEN {
            // Reject garbage as soon as the first bytes show it, without
            // waiting for a whole header.
            if buf.len() >= 2 && buf[..2] != MAGIC {
                return Err(FrameError::BadMagic([buf[0], buf[1]]));
            }
            return Ok(None);
        }
        let (head, meta_len, payload_len) = parse_head(&buf[..HEADER_LEN])?;
        let total = HEADER_LEN as u64 + meta_len as u64 + payload_len as u64;
        if total > self.max_frame as u64 {
            self.skip(buf, total);
            return Ok(Some(Decoded::Oversized { head, len: total }));
        }
        if meta_len as usize > self.max_metadata {
            self.skip(buf, total);
            let why = FrameError::MetadataTooLarge { len: meta_len.into(), max: self.max_metadata as u64 };
            return Ok(Some(Decoded::Refused { head, why }));
        }
        let total = total as usize;
        if buf.len() < total {
            // Not reserving `total` here: a peer announcing big frames it
            // never sends must not make us hold their size in memory. The
            // read loop grows the buffer as bytes actually arrive.
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(HEADER_LEN);
        let meta_bytes = frame.split_to(meta_len as usize);
        let meta = match Metadata::decode_limited(meta_bytes, self.max_entries) {
            Ok(meta) => meta,
            Err(why @ FrameError::TooManyEntries { .. }) => return Ok(Some(Decoded::Refused { head, why })),
            Err(e) => return Err(e),
        };
        Ok(Some(Decoded::Frame(Frame { head, meta, payload: frame })))
    }
}

fn parse_head(h: &[u8]) -> Result<(Head, u32, u32), FrameError> {
    let mut h = h;
    let magic = [h[0], h[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    h.advance(2);
    let version = h.get_u8();
    if version != VERSION {
        return Err(FrameError::BadVersion(version));
    }
    let kind_byte = h.get_u8();
    let kind = Kind::from_u8(kind_byte).ok_or(FrameError::BadKind(kind_byte))?;
    let codec = h.get_u8();
    let flags = h.get_u8();
    let status = h.get_u16();
    let id = h.get_u64();
    let meta_len = h.get_u32();
    let payload_len = h.get_u32();
    Ok((Head { kind, codec, flags, status, id }, meta_len, payload_len))
}

/// A UTF-8 string backed by [`Bytes`]: metadata strings decoded from a frame
/// share the read buffer instead of being copied.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// Validate `bytes` as UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<ByteStr, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(ByteStr(bytes))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // The constructors only admit valid UTF-8; re-checking costs a scan
        // but keeps this crate free of unsafe code.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> ByteStr {
        ByteStr(Bytes::from(s))
    }
}

impl From<&'static str> for ByteStr {
    fn from(s: &'static str) -> ByteStr {
        ByteStr(Bytes::from_static(s.as_bytes()))
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata tags. Unknown tags are skipped by readers.
mod tag {
    pub(super) const METHOD: u8 = 1;
    pub(super) const DEADLINE: u8 = 2;
    pub(super) const TRACE: u8 = 3;
    pub(super) const MESSAGE: u8 = 4;
    pub(super) const DETAILS: u8 = 5;
    pub(super) const ENTRY: u8 = 6;
}

/// Per-frame metadata: the method, the deadline, trace context, a status
/// message and details on error responses, and free user key/values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    method: Option<ByteStr>,
    deadline: Option<Duration>,
    trace: Option<ByteStr>,
    message: Option<ByteStr>,
    details: Option<Bytes>,
    entries: Vec<(ByteStr, ByteStr)>,
}

impl Metadata {
    /// `Service.Method` of a request.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// `Service.Method` as the shared string it was decoded into (a cheap
    /// clone, unlike copying the `&str`).
    pub fn method_str(&self) -> Option<&ByteStr> {
        self.method.as_ref()
    }

    /// Set the `Service.Method` name.
    pub fn set_method(&mut self, method: impl Into<ByteStr>) {
        self.method = Some(method.into());
    }

    /// How long the caller will wait, measured from when it sent the request.
    /// Relative, not an absolute time, so clock skew between hosts does not
    /// matter.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Set the relative deadline.
    pub fn set_deadline(&mut self, deadline: Option<Duration>) {
        self.deadline = deadline;
    }

    /// The W3C `traceparent` trace context, if any.
    pub fn trace_context(&self) -> Option<&str> {
        self.trace.as_deref()
    }

    /// Set the trace context.
    pub fn set_trace_context(&mut self, trace: impl Into<ByteStr>) {
        self.trace = Some(trace.into());
    }

    /// The status message of an error response.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Set the status message.
    pub fn set_message(&mut self, message: impl Into<ByteStr>) {
        self.message = Some(message.into());
    }

    /// The status details of an error response.
    pub fn details(&self) -> Option<&Bytes> {
        self.details.as_ref()
    }

    /// Set the status details.
    pub fn set_details(&mut self, details: Bytes) {
        self.details = Some(details);
    }

    /// The value of user key `key` (the first, if it was set twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v.as_str())
    }

    /// Set user key `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<ByteStr>, value: impl Into<ByteStr>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// All user key/values, in insertion order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The exact number of bytes [`Head::encode`] writes for this metadata.
    pub fn encoded_len(&self) -> usize {
        let entry = |len: usize| 1 + varint_len(len as u64) + len;
        let s = |o: &Option<ByteStr>| o.as_ref().map_or(0, |v| entry(v.len()));
        s(&self.method)
            + s(&self.trace)
            + s(&self.message)
            + self.details.as_ref().map_or(0, |d| entry(d.len()))
            + self.deadline.map_or(0, |d| entry(varint_len(deadline_micros(d))))
            + self.entries.iter().map(|(k, v)| entry(varint_len(k.len() as u64) + k.len() + v.len())).sum::<usize>()
    }

    fn encode(&self, buf: &mut BytesMut) {
        if let Some(m) = &self.method {
            put_entry(buf, tag::METHOD, m.as_bytes());
        }
        if let Some(d) = self.deadline {
            let micros = deadline_micros(d);
            let mut tmp = [0u8; 10];
            let n = write_varint(&mut tmp, micros);
            put_entry(buf, tag::DEADLINE, &tmp[..n]);
        }
        if let Some(t) = &self.trace {
            put_entry(buf, tag::TRACE, t.as_bytes());
        }
        if let Some(m) = &self.message {
            put_entry(buf, tag::MESSAGE, m.as_bytes());
        }
        if let Some(d) = &self.details {
            put_entry(buf, tag::DETAILS, d);
        }
        for (k, v) in &self.entries {
            let mut tmp = [0u8; 10];
            let n = write_varint(&mut tmp, k.len() as u64);
            buf.put_u8(tag::ENTRY);
            put_varint(buf, (n + k.len() + v.len()) as u64);
            buf.put_slice(&tmp[..n]);
            buf.put_slice(k.as_bytes());
            buf.put_slice(v.as_bytes());
        }
    }

    /// Decode metadata from its TLV bytes (zero-copy), with at most
    /// [`DEFAULT_MAX_ENTRIES`] user entries.
    pub fn decode(bytes: Bytes) -> Result<Metadata, FrameError> {
        Metadata::decode_limited(bytes, DEFAULT_MAX_ENTRIES)
    }

    /// Decode metadata with at most `max_entries` user entries. The decoded
    /// form is at most a small constant times the wire size: strings are
    /// slices of `bytes`, and the entry list is bounded.
    pub fn decode_limited(mut bytes: Bytes, max_entries: usize) -> Result<Metadata, FrameError> {
        let mut meta = Metadata::default();
        let utf8 = |b: Bytes| ByteStr::from_utf8(b).map_err(|_| FrameError::BadMetadata("string is not UTF-8"));
        while bytes.has_remaining() {
            let tag = bytes.get_u8();
            let len = read_varint(&mut bytes)?;
            if len > bytes.len() as u64 {
                return Err(FrameError::BadMetadata("entry runs past the end of the metadata"));
            }
            let mut value = bytes.split_to(len as usize);
            match tag {
                tag::METHOD => meta.method = Some(utf8(value)?),
                tag::DEADLINE => {
                    let micros = read_varint(&mut value)?;
                    meta.deadline = Some(Duration::from_micros(micros));
                }
                tag::TRACE => meta.trace = Some(utf8(value)?),
                tag::MESSAGE => meta.message = Some(utf8(value)?),
                tag::DETAILS => meta.details = Some(value),
                tag::ENTRY => {
                    let key_len = read_varint(&mut value)?;
                    if key_len > value.len() as u64 {
                        return Err(FrameError::BadMetadata("entry key runs past its entry"));
                    }
                    if meta.entries.len() >= max_entries {
                        return Err(FrameError::TooManyEntries { max: max_entries });
                    }
                    let key = utf8(value.split_to(key_len as usize))?;
                    meta.entries.push((key, utf8(value)?));
                }
                _ => {} // a tag from a newer version: skip it
            }
        }
        Ok(meta)
    }
}

fn deadline_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn varint_len(value: u64) -> usize {
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

fn put_entry(buf: &mut BytesMut, tag: u8, value: &[u8]) {
    buf.put_u8(tag);
    put_varint(buf, value.len() as u64);
    buf.put_slice(value);
}

fn put_varint(buf: &mut BytesMut, value: u64) {
    let mut tmp = [0u8; 10];
    let n = write_varint(&mut tmp, value);
    buf.put_slice(&tmp[..n]);
}

/// LEB128: 7 bits a byte, low bits first, high bit set on all but the last.
fn write_varint(out: &mut [u8; 10], mut value: u64) -> usize {
    let mut i = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

fn read_varint(bytes: &mut Bytes) -> Result<u64, FrameError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !bytes.has_remaining() {
            return Err(FrameError::BadMetadata("truncated varint"));
        }
        let byte = bytes.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(FrameError::BadMetadata("varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_meta() -> Metadata {
        let mut meta = Metadata::default();
        meta.set_method("Echo.Echo");
        meta.set_deadline(Some(Duration::from_micros(1_500_000)));
        meta.set_trace_context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        meta.set_message("ünïcode message");
        meta.set_details(Bytes::from_static(b"\x00\x01\x02"));
        meta.insert("tenant", "acme");
        meta.insert("zone", "eu-1");
        meta
    }

    #[test]
    fn frame_round_trips_with_every_metadata_field() {
        let meta = full_meta();
        let head = Head { kind: Kind::Response, codec: 3, flags: FLAG_REFUSED, status: 14, id: u64::MAX };
        let mut buf = BytesMut::new();
        head.encode(&mut buf, &meta, &[9; 300]).unwrap();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let Some(Decoded::Frame(frame)) = dec.decode(&mut buf).unwrap() else { panic!("no frame") };
        assert_eq!(frame.head, head);
        assert_eq!(frame.meta, meta);
        assert_eq!(frame.meta.get("zone"), Some("eu-1"));
        assert_eq!(&frame.payload[..], &[9; 300][..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn encoded_len_is_exact() {
        for meta in [Metadata::default(), full_meta()] {
            let mut buf = BytesMut::new();
            meta.encode(&mut buf);
            assert_eq!(meta.encoded_len(), buf.len());
        }
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut tmp = [0u8; 10];
            assert_eq!(varint_len(v), write_varint(&mut tmp, v), "{v}");
        }
    }

    #[test]
    fn partial_input_waits_for_more_bytes() {
        let mut whole = BytesMut::new();
        Head::new(Kind::Ping, 1).encode(&mut whole, &Metadata::default(), b"abc").unwrap();
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            buf.put_u8(*byte);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == whole.len() - 1, "at byte {i}");
        }
    }

    #[test]
    fn oversized_frame_is_skipped_without_buffering_and_the_next_frame_decodes() {
        let mut buf = BytesMut::new();
        Head::new(Kind::Request, 5).encode(&mut buf, &Metadata::default(), &vec![0u8; 10_000]).unwrap();
        Head::new(Kind::Request, 6).encode(&mut buf, &Metadata::default(), b"ok").unwrap();
        let mut dec = FrameDecoder::new(1024);
        // Feed in small chunks, as a socket would.
        let mut input = BytesMut::new();
        let mut seen = Vec::new();
        for chunk in buf.chunks(700) {
            input.extend_from_slice(chunk);
            while let Some(d) = dec.decode(&mut input).unwrap() {
                seen.push(d);
            }
            assert!(input.len() <= 1024 + 700, "the decoder buffered the oversized frame");
        }
        assert!(matches!(seen[0], Decoded::Oversized { head: Head { id: 5, .. }, len: 10_024 }));
        assert!(matches!(&seen[1], Decoded::Frame(f) if f.head.id == 6 && &f.payload[..] == b"ok"));
    }

    #[test]
    fn reads_reserve_whole_frames_but_not_far_ahead_of_the_data() {
        let dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        // Header of a 300 KiB frame: room for all of it at once.
        let mut whole = BytesMut::new();
        Head::new(Kind::Request, 1).encode(&mut whole, &Metadata::default(), &vec![0u8; 300 << 10]).unwrap();
        let mut buf = BytesMut::from(&whole[..100]);
        dec.reserve_for_read(&mut buf, 64 << 10);
        assert!(buf.capacity() >= whole.len(), "{}", buf.capacity());
        // Header of a 15 MiB frame with nothing behind it: at most ~1 MiB ahead.
        let mut big = BytesMut::new();
        Head::new(Kind::Request, 2).encode_prefix(&mut big, &Metadata::default(), 15 << 20).unwrap();
        dec.reserve_for_read(&mut big, 64 << 10);
        assert!(big.capacity() <= (1 << 20) + (64 << 10) + 1024, "{}", big.capacity());
    }

    #[test]
    fn huge_length_header_is_refused_before_allocation() {
        let mut buf = BytesMut::new();
        Head::new(Kind::Request, 1).encode(&mut buf, &Metadata::default(), b"").unwrap();
        buf[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        buf[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let got = dec.decode(&mut buf).unwrap();
        assert!(matches!(got, Some(Decoded::Oversized { len, .. }) if len == 24 + 2 * u32::MAX as u64));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn garbage_is_an_error_after_two_bytes() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap_err(), FrameError::BadMagic(*b"GE"));
    }

    #[test]
    fn unknown_metadata_tags_are_skipped() {
        let mut raw = BytesMut::new();
        raw.put_slice(&[200, 3, b'x', b'y', b'z']);
        put_entry(&mut raw, tag::METHOD, b"A.B");
        let meta = Metadata::decode(raw.freeze()).unwrap();
        assert_eq!(meta.method(), Some("A.B"));
    }

    #[test]
    fn compression_round_trips_and_refuses_bombs() {
        let data = vec![7u8; 100_000];
        let packed = compress(&data);
        assert!(packed.len() < 1_000);
        assert_eq!(&decompress(&packed, 1 << 20).unwrap()[..], &data[..]);
        assert!(matches!(decompress(&packed, 50_000), Err(FrameError::TooLarge { .. })));
        assert!(decompress(&[1, 2], 100).is_err());
    }

    #[test]
    fn decompression_matches_lz4_flex_on_every_kind_of_input() {
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"abcabcabcabcabcabcabcabcabcabcabcabc".to_vec(),
            vec![0u8; 1 << 20],
            (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ];
        let mut seed = 0x1234_5678_u64;
        inputs.push(
            (0..70_000)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 59) as u8 // few distinct bytes: many short matches
                })
                .collect(),
        );
        for data in inputs {
            let packed = compress(&data);
            assert_eq!(&decompress(&packed, DEFAULT_MAX_FRAME).unwrap()[..], &data[..], "{} bytes", data.len());
        }
    }

    #[test]
    fn size_claims_lz4_cannot_reach_are_refused_before_any_work() {
        // 80 bytes claiming 16 MiB: the flood of the hostile-peer report.
        let mut bomb = (16u32 << 20).to_le_bytes().to_vec();
        bomb.extend_from_slice(&[0xff; 76]);
        let err = decompress(&bomb, DEFAULT_MAX_FRAME).unwrap_err();
        assert!(matches!(&err, FrameError::BadCompression(why) if why.contains("more than LZ4")), "{err}");
        // A claim below what the data produces, or above it, is an error too.
        let mut packed = compress(&[5u8; 1000]);
        packed[..4].copy_from_slice(&999u32.to_le_bytes());
        assert!(decompress(&packed, DEFAULT_MAX_FRAME).is_err());
        packed[..4].copy_from_slice(&1001u32.to_le_bytes());
        assert!(decompress(&packed, DEFAULT_MAX_FRAME).is_err());
        // A match reaching before the start of the output.
        assert!(lz4_block(&[0x10, b'x', 5, 0], 100).is_err());
    }
}
