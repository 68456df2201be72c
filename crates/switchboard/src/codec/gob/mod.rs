//! Go's gob encoding (`encoding/gob`) as a serde codec: the body encoding of
//! Go's `net/rpc`.
//!
//! An [`Encoder`] and a [`Decoder`] each hold the state of one direction of
//! one stream: gob defines each type once per stream and refers to it by id
//! afterwards. Any `Serialize` type can be sent, any `Deserialize` type
//! received, so the handler that serves Switchboard callers can serve Go
//! callers unchanged.
//!
//! ```
//! use switchboard::codec::gob::{Decoder, Encoder};
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Args { #[serde(rename = "A")] a: i64, #[serde(rename = "B")] b: i64 }
//!
//! let mut stream = Vec::new();
//! Encoder::new().encode(&Args { a: 7, b: 8 }, &mut stream).unwrap();
//! // What Go's encoder writes for Args{A: 7, B: 8}, explained below.
//! assert_eq!(stream[..3], [0x1e, 0xff, 0x81]);
//! assert_eq!(stream[31..], [0x07, 0xff, 0x82, 0x01, 0x0e, 0x01, 0x10, 0x00]);
//!
//! let (args, used) = Decoder::new().decode::<Args>(&stream).unwrap().unwrap();
//! assert_eq!((args, used), (Args { a: 7, b: 8 }, stream.len()));
//! ```
//!
//! # The format
//!
//! Gob's own documentation (the "Encoding details" section of
//! <https://pkg.go.dev/encoding/gob>) is the reference; in brief:
//!
//! - **Unsigned integers** below 128 are one byte; larger ones are the byte
//!   count, negated, then the minimal big-endian bytes: 256 is `FE 01 00`.
//!   **Signed integers** are shifted left one bit, the low bit meaning
//!   "complement the rest": 7 is `0E`, -65 is `FF 81`. **Floats** are the
//!   float64 bits byte-reversed, sent as an unsigned integer: 17.0 is
//!   `FE 31 40`. **Strings and `[]byte`** are a count and the bytes.
//! - A stream is a sequence of **messages**, each an unsigned byte count then
//!   a signed type id: a negative id `-t` defines type `t` (the rest of the
//!   message is a `wireType` value describing it), a positive id is a value
//!   of that type. Ids 1-8 are predefined (bool, int, uint, float, `[]byte`,
//!   string, complex, interface); streams define theirs from 65 up. A type is
//!   defined before its first value and never again on that stream.
//! - A **struct** value is a list of (field number delta, field value) ending
//!   with a zero delta. Fields holding their zero value (0, "", false, empty
//!   slice or map, nil pointer) are **left out**; nested structs and arrays
//!   are always sent. Slices and maps are a count and the elements, every
//!   element sent. Pointers are flattened: `*T` is sent as `T`.
//! - A top-level value that is not a struct is a **singleton**: a zero delta,
//!   then the value.
//!
//! Worked through, the stream above (Go's `Encode(Args{A: 7, B: 8})`):
//!
//! ```text
//! 1e                 a message of 30 bytes
//! ff 81              type id -65: the definition of type 65 follows
//! 03                 wireType field 2 (delta 3 from -1): StructT
//! 01                   structType field 0: its CommonType
//! 01 04 41 72 67 73      Name = "Args"
//! 01 ff 82               Id = 65
//! 00                     end of CommonType
//! 01 02                structType field 1: Field, a slice of 2 fieldTypes
//! 01 01 41 01 04 00      {Name: "A", Id: 2 (int)}
//! 01 01 42 01 04 00      {Name: "B", Id: 2 (int)}
//! 00                   end of structType
//! 00                 end of wireType
//! 07                 a message of 7 bytes
//! ff 82              type id 65: a value of type Args
//! 01 0e              field 0 (delta 1): A = 7
//! 01 10              field 1 (delta 1): B = 8
//! 00                 end of struct
//! ```
//!
//! A second `Args{A: 0, B: 9}` on the same stream is just `05 ff 82 02 12 00`:
//! no definition, and A, being zero, is left out (B is reached with delta 2).
//!
//! # Rust and gob
//!
//! | Rust (serde) | gob / Go |
//! |--------------|----------|
//! | `bool` | bool |
//! | `i8`..`i64` (`i128` if it fits) | int (`int8`..`int64`) |
//! | `u8`..`u64` (`u128` if it fits) | uint |
//! | `f32`, `f64` | float |
//! | `String`, `&str`, `char` | string |
//! | `serde_bytes`, `Vec<u8>` | `[]byte` |
//! | `Vec<T>`, sequences | `[]T` |
//! | tuples, `[T; N]` (all elements one type) | `[N]T` |
//! | maps | `map[K]V` |
//! | structs (serde names, so `#[serde(rename = "A")]`: Go only matches exported, capitalized names) | struct |
//! | `Option<T>` | `*T`: `None` is a nil pointer, left out of structs |
//! | newtype structs | their content |
//! | `()` and unit structs | `struct{}` |
//! | enums: unit variants | string holding the variant name |
//!
//! Enum variants with data are an error (gob has no sum types), as are Go
//! `interface{}` values other than nil on decoding. Go types that marshal
//! themselves (`time.Time`, ...) decode as their opaque bytes; complex
//! numbers as a `(re, im)` pair.
//!
//! # Where the types come from
//!
//! Gob sends a struct's type, every field with its type, before the value;
//! serde only reveals types by serializing values. So the [`Encoder`] first
//! serializes the value into a tree, infers the gob type from it, then
//! writes definitions and value. A field whose type the value does not show
//! (an empty `Vec`, an empty map, a `None`) is zero, so gob leaves it out of
//! this value anyway, and it is left out of the struct's type too. Go's
//! decoder matches fields by name and ignores the ones it does not find on
//! the wire, so a Go program receives exactly what it would from a Go
//! sender. Types are remembered by their whole inferred shape; when a later
//! value of the same Rust struct reveals other fields, the struct is defined
//! again under a new id (the fixture tests show Go's decoder accepting two
//! ids for one struct name on one stream). Elements of one sequence or map
//! must share one type; their shapes are merged.
//!
//! The one case inference cannot serve is a value whose type is nowhere in
//! it, but which must be sent: a top-level empty `Vec` or map, a `None`, or
//! a sequence of only empty sequences. [`Encoder::encode_with_sample`] takes
//! the missing types from a sample value (say, `vec![String::new()]` for a
//! `Vec<String>` reply); plain [`Encoder::encode`] refuses with an error
//! saying so.
//!
//! # Decoding
//!
//! The [`Decoder`] drives serde from the received type definitions, so it is
//! self-describing: `serde_json::Value` works as a target, structs arrive as
//! maps keyed by field name. Gob leaves zero fields out, and
//! `#[derive(Deserialize)]` rejects missing fields, so every field the wire
//! type declares is presented: the omitted ones as their zero value (0, "",
//! false, empty sequence or map, a zero struct; `None` for `Option` targets).
//! A target struct's fields that the sender's type does not declare at all
//! (our own encoder leaves out fields it could not type) are zero as well,
//! shaped by what the target asks for; a Go receiver leaves them zero too.
//! [`Decoder::decode_json`] and [`Encoder::encode_json`] are the untyped
//! bridge (see there for how a JSON object becomes a Go struct).
//!
//! Nothing from the peer is trusted: every length is checked against the
//! bytes actually present before anything is allocated, and [`Limits`] caps
//! the message size (Go's own cap is 1 GiB; ours defaults to 64 MiB), the
//! nesting depth, the number and total size of type definitions, and the
//! zero values a type can make the decoder fill in. Bad input is a
//! [`GobError`], never a panic.
//!
//! # Standalone payloads
//!
//! Go's `net/rpc` sends every call on one gob stream per connection, so a
//! value there means nothing without the type definitions sent before it;
//! Switchboard's router hands handlers payloads that must decode on their
//! own. A **standalone payload** is a complete gob stream for exactly one
//! value: what a fresh [`Encoder`] (or a fresh Go process) writes for it, the
//! payload of [`Codec::Gob`](crate::Codec::Gob). The connection layer turns
//! a value of its incoming stream into one with [`Decoder::to_standalone`],
//! and puts a reply payload onto its outgoing stream with
//! [`Encoder::encode_standalone`]; [`Decoder::decode_standalone`] decodes
//! one. Both conversions walk the wire types and copy the value's bytes, so
//! nothing Go can tell apart is lost (struct or map, `[]byte` or `[]int`,
//! signed or unsigned, field names, nested and recursive types), which a
//! detour through serde would lose.
//!
//! ```
//! use switchboard::codec::{Codec, Decode, Encode};
//! use switchboard::codec::gob::{Decoder, Encoder};
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Args { #[serde(rename = "A")] a: i64, #[serde(rename = "B")] b: i64 }
//!
//! // What a Go client sends: two calls' arguments on one stream (the second
//! // without a type definition), here written by our own encoder.
//! let mut go = Encoder::new();
//! let mut conn = Vec::new();
//! go.encode(&Args { a: 7, b: 8 }, &mut conn).unwrap();
//! go.encode(&Args { a: 6, b: 9 }, &mut conn).unwrap();
//!
//! // In: the connection's decoder finds the second value; cut loose, it
//! // decodes on its own, as a Codec::Gob request payload.
//! let mut dec = Decoder::new();
//! let (_, used) = dec.next_value(&conn).unwrap().unwrap();
//! let (body, _) = dec.next_value(&conn[used..]).unwrap().unwrap();
//! // Just the type id (65) and the fields: Args was defined by the first value.
//! assert_eq!(body, [0xff, 0x82, 0x01, 0x0c, 0x01, 0x12, 0x00]);
//! let payload = dec.to_standalone(body).unwrap();
//! assert_eq!(Args::decode(Codec::Gob, &payload).unwrap(), Args { a: 6, b: 9 });
//!
//! // Out: the handler's reply, encoded on its own, joins the connection's
//! // outgoing stream after what is already there.
//! let mut reply = Vec::new();
//! Args { a: 42, b: 0 }.encode(Codec::Gob, &mut reply).unwrap();
//! let mut out_enc = Encoder::new();
//! let mut out = Vec::new();
//! out_enc.encode(&Args { a: 1, b: 1 }, &mut out).unwrap();
//! let before = out.len();
//! out_enc.encode_standalone(&reply, &mut out).unwrap();
//! // Args is defined on this stream already: only the value is added.
//! assert_eq!(out[before..], [0x05, 0xff, 0x82, 0x01, 0x54, 0x00]);
//! ```
//!
//! # Why not the `gob` crate
//!
//! crates.io has one gob implementation, `gob` 0.1.0 (srijs/rust-gob, from
//! 2018, no release since; there is no `serde_gob`). It describes
//! itself as early-stage, aimed at AWS Lambda's Go interface. Encoding needs
//! every type to implement `SchemaSerialize` from `serde_schema` 0.0.1, so
//! ordinary `#[derive(Serialize)]` types (and `serde_json::Value`) cannot be
//! sent; unit enum variants are "not supported yet"; it depends on `bytes`
//! 0.4 and on `owning_ref` (with `unsafe impl`s; `owning_ref` has unsound
//! APIs). On untrusted input it has no message size or nesting limit, and an
//! integer whose length byte announces more than 8 bytes (`0x80`, say)
//! reaches byteorder's `read_uint`, which panics. Its struct decoding
//! presents only the fields a message holds, so `#[derive(Deserialize)]`
//! targets fail on any zero field gob left out. Fixing all that would be a
//! rewrite, so this module is our own, checked against real Go output
//! (`tests/go/gobfixtures`).

pub mod bytes;
mod de;
mod decode;
mod encode;
mod error;
mod json;
mod ser;
mod shape;
mod standalone;
mod types;
mod wire;
mod zero;

#[cfg(test)]
mod standalone_tests;
#[cfg(test)]
mod tests;

pub use bytes::Bytes;
pub use decode::{Decoder, Next};
pub use encode::Encoder;
pub use error::GobError;
pub use wire::message_len;

/// Bounds on what one stream may make the codec do. Both sides refuse a
/// message over `max_message`; the decoder enforces the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest message body, in bytes. Default 64 MiB (Go: 1 GiB).
    pub max_message: usize,
    /// The deepest nesting of structs, slices, arrays and maps. Default 100.
    pub max_depth: usize,
    /// The most type definitions one stream may make. Default 4096.
    pub max_types: usize,
    /// The most bytes of type definitions one stream may send. Default 4 MiB.
    pub max_type_bytes: usize,
    /// The most zero values one decoded value may get filled in for fields
    /// the message left out. Default 1,000,000.
    pub max_zero_fill: usize,
}

/// The default [`Limits::max_message`]: 64 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: DEFAULT_MAX_MESSAGE,
            max_depth: 100,
            max_types: 4096,
            max_type_bytes: 4 << 20,
            max_zero_fill: 1_000_000,
        }
    }
}

__setters!(Limits {
    max_message: usize,
    max_depth: usize,
    max_types: usize,
    max_type_bytes: usize,
    max_zero_fill: usize
});
