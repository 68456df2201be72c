//! Go's `net/rpc`, both ways: a Switchboard server with [`NetRpc`] answers
//! unmodified Go programs on the same port as its own protocol, and
//! [`GoClient`] calls Go servers through the same
//! [`Channel`](crate::Channel) API as Switchboard's own client (cargo
//! feature `go`, on by default).
//!
//! This module is a layer on top of the core: it plugs into the server
//! through the public protocol layer ([`crate::server::protocol`],
//! [`crate::server::http`]) and into the client through [`Channel`](crate::Channel);
//! nothing below it refers to it. Its payloads use the gob codec
//! ([`crate::codec::gob`]), which is a leaf of the codec layer.
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
//! The server shows the first bytes a client sends to each protocol it
//! serves ([`crate::server::protocol`]); with [`NetRpc`] those are:
//!
//! | first bytes | protocol |
//! |-------------|----------|
//! | `C5 B0` | Switchboard frames (the frame magic) |
//! | an HTTP method, `CONNECT ` (or `GET `, `POST `, ...) | HTTP ([`crate::server::http`]): `CONNECT /_goRPC_` switches to gob; other requests go to other routes, or are answered 404 / 405 |
//! | `{`, or JSON whitespace | JSON-RPC |
//! | anything else | gob (the fallback) |
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
//! `max_frame`; gob type definitions to [`Limits`](crate::codec::gob::Limits)
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

use bytes::BytesMut;

pub use client::{GoClient, GoProtocol};

use crate::call::BoxFuture;
use crate::server::http::HttpRoute;
use crate::server::protocol::{Connection, Detect, Protocol};
use crate::server::{Extension, ServerBuilder};

/// Serve Go's net/rpc on a server's listeners, beside its own protocol:
/// gob (`rpc.Dial`), JSON-RPC (`jsonrpc.Dial`) and HTTP `CONNECT
/// /_goRPC_` (`rpc.DialHTTP`).
///
/// ```
/// use switchboard::{go::NetRpc, Server};
///
/// let server = Server::builder().with(NetRpc::default()).build();
/// # drop(server);
/// ```
#[derive(Debug, Clone)]
pub struct NetRpc {
    gob: bool,
    json: bool,
    http: bool,
}

impl Default for NetRpc {
    /// All three wire forms.
    fn default() -> NetRpc {
        NetRpc { gob: true, json: true, http: true }
    }
}

impl NetRpc {
    /// Whether to serve gob connections (`rpc.Dial`, `rpc.ServeConn`).
    /// Gob takes every connection no other protocol claims.
    pub fn gob(mut self, on: bool) -> NetRpc {
        self.gob = on;
        self
    }

    /// Whether to serve JSON-RPC connections (`jsonrpc.Dial`).
    pub fn json(mut self, on: bool) -> NetRpc {
        self.json = on;
        self
    }

    /// Whether to serve `rpc.DialHTTP` (an HTTP route for `CONNECT
    /// /_goRPC_`).
    pub fn http(mut self, on: bool) -> NetRpc {
        self.http = on;
        self
    }
}

impl Extension for NetRpc {
    fn extend(self, mut builder: ServerBuilder) -> ServerBuilder {
        if self.json {
            builder = builder.protocol(JsonRpc);
        }
        if self.gob {
            builder = builder.protocol(Gob);
        }
        if self.http {
            builder = builder.http_route(HttpRoute::upgrade("CONNECT", server::GO_RPC_PATH, server::serve_connect));
        }
        builder
    }
}

/// Go's net/rpc over gob: a gob stream starts with the byte count of its
/// first message, which may be any byte, so gob takes what nothing else
/// claims ([`Detect::Fallback`]).
struct Gob;

impl Protocol for Gob {
    fn name(&self) -> &'static str {
        "go_gob"
    }

    fn detect(&self, _prefix: &[u8]) -> Detect {
        Detect::Fallback
    }

    fn serve(&self, conn: Connection) -> BoxFuture<'static, ()> {
        let peer = conn.peer();
        let (stream, clock, dispatcher) = conn.into_parts();
        let (rd, wr) = stream.into_split();
        tracing::debug!(%peer, "Go net/rpc (gob) connection");
        Box::pin(server::serve_gob(dispatcher, rd, wr, peer, BytesMut::new(), clock))
    }
}

/// Go's net/rpc/jsonrpc: a stream of JSON objects, so `{` or JSON
/// whitespace first.
struct JsonRpc;

impl Protocol for JsonRpc {
    fn name(&self) -> &'static str {
        "go_jsonrpc"
    }

    fn detect(&self, prefix: &[u8]) -> Detect {
        match prefix.first() {
            Some(b'{' | b' ' | b'\t' | b'\r' | b'\n') => Detect::Mine,
            _ => Detect::NotMine,
        }
    }

    fn serve(&self, conn: Connection) -> BoxFuture<'static, ()> {
        let peer = conn.peer();
        let (stream, clock, dispatcher) = conn.into_parts();
        let (rd, wr) = stream.into_split();
        tracing::debug!(%peer, "Go net/rpc (JSON-RPC) connection");
        Box::pin(server::serve_jsonrpc(dispatcher, rd, wr, peer, BytesMut::new(), clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::protocol::Detected::{self, NeedMore, Protocol as P};
    use crate::Server;

    fn detect(first: &[u8]) -> Detected {
        Server::builder().with(NetRpc::default()).build().detect(first)
    }

    #[test]
    fn every_protocol_is_told_apart_from_its_first_bytes() {
        assert_eq!(detect(&[]), NeedMore);
        assert_eq!(detect(&[0xC5]), NeedMore);
        assert_eq!(detect(&[0xC5, 0xB0]), P("switchboard"));
        assert_eq!(detect(&[0xC5, 0x00]), P("go_gob"));
        assert_eq!(detect(b"\n{}"), P("go_jsonrpc"));
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), P("http"));
        assert_eq!(detect(b"CONNECT"), NeedMore);
        assert_eq!(detect(b"CONNECT "), P("http"));
        assert_eq!(detect(b"ABCDEFGHIJ"), P("go_gob"));
        assert_eq!(detect(b"AB CD"), P("go_gob"));
        // Go's first gob message: the 47-byte type definition of rpc.Request.
        assert_eq!(detect(&[0x2f, 0xff, 0x81, 0x03]), P("go_gob"));
        assert_eq!(detect(&[0xff, 0x00]), P("go_gob"));
    }

    #[test]
    fn bytes_past_the_eighth_never_change_the_answer() {
        // Found by fuzz/fuzz_targets/sniff.rs: an upper-case word of 8+
        // letters is gob after 8 bytes, and was HTTP when a space followed
        // later.
        let long_word = b"PROPFIND / HTTP/1.1\r\n";
        assert_eq!(detect(&long_word[..8]), P("go_gob"));
        assert_eq!(detect(long_word), P("go_gob"));
        assert_eq!(detect(b"ZZZZZZZZZZZZGETZZZZ $BZ"), P("go_gob"));
    }

    #[test]
    fn without_go_nothing_claims_what_is_not_a_frame() {
        let server = Server::builder().build();
        assert_eq!(server.detect(&[0x2f, 0xff, 0x81]), Detected::Unknown);
        assert_eq!(server.detect(b"GET / HTTP/1.1\r\n"), Detected::Unknown);
        assert_eq!(server.detect(&[0xC5, 0xB0]), P("switchboard"));
    }
}
