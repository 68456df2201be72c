//! Go's `net/rpc`, both ways: a Switchboard server answers unmodified Go
//! programs on the same port as its own protocol, and [`GoClient`] calls Go
//! servers through the same [`Channel`](crate::Channel) API as Switchboard's
//! own client.
//!
//! Three wire forms, all from Go's standard library:
//!
//! | Go side | wire |
//! |---------|------|
//! | `rpc.Dial("tcp", addr)`, `rpc.ServeConn` | gob: on one gob stream per direction, a request header `{ServiceMethod, Seq}` then the argument; a response header `{ServiceMethod, Seq, Error}` then the reply (an empty struct when `Error` is set) |
//! | `jsonrpc.Dial`, `jsonrpc.ServeConn` | JSON-RPC 1.0: `{"method":"Arith.Multiply","params":[{...}],"id":N}` and `{"id":N,"result":...,"error":null}` |
//! | `rpc.DialHTTP`, `rpc.HandleHTTP` | `CONNECT /_goRPC_ HTTP/1.0`, answered `HTTP/1.0 200 Connected to Go RPC`, then gob as above |
//!
//! ## One port: how a connection's protocol is told
//!
//! The server looks at the first bytes a client sends ([`sniff`]):
//!
//! | first bytes | protocol |
//! |-------------|----------|
//! | `C5 B0` | Switchboard frames (the frame magic) |
//! | an HTTP method, `CONNECT ` (or `GET `, `POST `, ...) | HTTP: `CONNECT /_goRPC_` switches to gob; anything else is answered `405 must CONNECT`, as Go's server does |
//! | `{`, or JSON whitespace | JSON-RPC |
//! | anything else | gob |
//!
//! Nothing is ambiguous for real clients: a gob stream starts with the byte
//! count of its first message, and Go's net/rpc client's first message (the
//! type definition of `rpc.Request`) is 47 bytes, `0x2f`; a gob count can
//! only collide with `{` (123) or whitespace (9, 10, 13, 32) if that first
//! message had exactly that length. Bytes that are none of these are read as
//! gob, whose decoder refuses them with a clear error.
//!
//! ## Calls
//!
//! A Go call becomes an ordinary [`Request`](crate::Request) for
//! `Service.Method`, dispatched through the server's middleware and router
//! like any other, so one Rust handler serves Switchboard and Go callers.
//! Calls on one connection run concurrently and are answered as they
//! finish, out of order, matched by `Seq`, exactly as Go's own server does.
//! Errors reach Go callers as net/rpc error strings: the handler's status
//! message, and for names the router does not know, Go's own wording
//! (`rpc: can't find service X`, `rpc: can't find method X`).
//!
//! A stream that cannot be read (garbage, a gob type that does not parse,
//! a message over the frame limit) ends that connection: the server logs
//! why, lets calls already running answer, and closes it. Other
//! connections are untouched.
//!
//! ## Limits
//!
//! Go connections are held to the same limits as native ones
//! ([`ServerConfig`](crate::server::ServerConfig)): one message up to
//! `max_frame`; gob type definitions to [`Limits`](crate::go::gob::Limits)
//! (4,096 types, 4 MiB) as they arrive, a definition refused from its first
//! bytes; buffered input and queued answers against `memory_budget` (a
//! started gob message is charged whole from its byte count) and
//! `max_queued_bytes`; the handshake timeout until the first whole request
//! (an HTTP head counts), the frame timeout for a request started and not
//! finished, the idle timeout; and a write that makes no progress for the
//! frame timeout closes the connection. Input is parsed incrementally, so
//! a request sent in small pieces costs what it costs sent at once.

mod client;
mod conn;
pub(crate) mod scan;
pub(crate) mod server;

pub use client::{GoClient, GoProtocol};

/// The protocol a connection speaks, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Switchboard's own frames.
    Switchboard,
    /// Go's net/rpc over gob.
    Gob,
    /// Go's net/rpc/jsonrpc (JSON-RPC 1.0).
    JsonRpc,
    /// HTTP: Go's `rpc.DialHTTP` (`CONNECT /_goRPC_`), or something else to refuse.
    Http,
}

/// The Switchboard frame magic (docs/PROTOCOL.md).
const MAGIC: [u8; 2] = [0xC5, 0xB0];

/// The protocol `first` (the first bytes of a connection) belongs to, or
/// `None` if more bytes are needed to tell (at most 8 are ever needed).
///
/// ```
/// use switchboard::go::netrpc::{sniff, Protocol};
/// assert_eq!(sniff(&[0xC5, 0xB0, 1]), Some(Protocol::Switchboard));
/// assert_eq!(sniff(b"{\"method\""), Some(Protocol::JsonRpc));
/// assert_eq!(sniff(b"CONNECT /_goRPC_ HTTP/1.0\n\n"), Some(Protocol::Http));
/// assert_eq!(sniff(&[0x2f, 0xff, 0x81]), Some(Protocol::Gob));
/// assert_eq!(sniff(b"CONN"), None); // could still be CONNECT
/// ```
pub fn sniff(first: &[u8]) -> Option<Protocol> {
    // The server peeks at most 8 bytes: decide on those alone, so that more
    // bytes never change the answer.
    let first = &first[..first.len().min(8)];
    let &b0 = first.first()?;
    if b0 == MAGIC[0] {
        return match first.get(1) {
            None => None,
            Some(&b1) if b1 == MAGIC[1] => Some(Protocol::Switchboard),
            Some(_) => Some(Protocol::Gob),
        };
    }
    if b0 == b'{' || matches!(b0, b' ' | b'\t' | b'\r' | b'\n') {
        return Some(Protocol::JsonRpc);
    }
    if b0.is_ascii_uppercase() {
        // An HTTP method: upper-case letters, then a space.
        let word = first.iter().position(|&b| !b.is_ascii_uppercase());
        return match word {
            None if first.len() < 8 => None,
            Some(at) if at >= 3 && first.get(at) == Some(&b' ') => Some(Protocol::Http),
            _ => Some(Protocol::Gob),
        };
    }
    Some(Protocol::Gob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_is_told_apart_from_its_first_bytes() {
        assert_eq!(sniff(&[]), None);
        assert_eq!(sniff(&[0xC5]), None);
        assert_eq!(sniff(&[0xC5, 0xB0]), Some(Protocol::Switchboard));
        assert_eq!(sniff(&[0xC5, 0x00]), Some(Protocol::Gob));
        assert_eq!(sniff(b"\n{}"), Some(Protocol::JsonRpc));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http));
        assert_eq!(sniff(b"CONNECT"), None);
        assert_eq!(sniff(b"CONNECT "), Some(Protocol::Http));
        assert_eq!(sniff(b"ABCDEFGHIJ"), Some(Protocol::Gob));
        assert_eq!(sniff(b"AB CD"), Some(Protocol::Gob));
        // Go's first gob message: the 47-byte type definition of rpc.Request.
        assert_eq!(sniff(&[0x2f, 0xff, 0x81, 0x03]), Some(Protocol::Gob));
        assert_eq!(sniff(&[0xff, 0x00]), Some(Protocol::Gob));
    }

    #[test]
    fn bytes_past_the_eighth_never_change_the_answer() {
        // Found by fuzz/fuzz_targets/sniff.rs: an upper-case word of 8+
        // letters is gob after 8 bytes (what the server peeks), and was HTTP
        // when a space followed later.
        let long_word = b"PROPFIND / HTTP/1.1\r\n";
        assert_eq!(sniff(&long_word[..8]), Some(Protocol::Gob));
        assert_eq!(sniff(long_word), Some(Protocol::Gob));
        assert_eq!(sniff(b"ZZZZZZZZZZZZGETZZZZ $BZ"), Some(Protocol::Gob));
    }
}
