//! Wire compatibility with Go programs.
//!
//! Go services are often built on the standard library's `net/rpc`, whose
//! default body encoding is gob. [`gob`] is that encoding as a serde codec, so
//! the same Rust types and handlers serve Switchboard and Go callers. This
//! module will also hold the `net/rpc` protocol itself (request and response
//! headers over gob, `net/rpc/jsonrpc`, `DialHTTP`'s `CONNECT`), for serving
//! Go clients and calling Go servers.

pub mod bytes;
pub mod gob;
pub mod netrpc;

pub use bytes::Bytes;
