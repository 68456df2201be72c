//! Private parsers, reachable from the fuzz targets in `fuzz/` (cargo
//! feature `fuzzing`; not public API, not semver-stable).
//!
//! Each wrapper is a thin call into the real function, so the fuzzers test
//! the code the server runs, not a copy of it. They live together here so
//! that when a parser's signature changes, one edit here keeps the fuzz
//! package building. Parsers that are already public (`frame`,
//! `codec::gob`, `Server::detect`, `codec`, `config`) are fuzzed through
//! their public API instead.

#[cfg(feature = "go")]
use crate::go::{scan, server};
use crate::server::http;

/// A JSON-RPC request as the server's reader took it from its buffer.
#[cfg(feature = "go")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonRequest {
    /// `method`, empty if absent.
    pub method: String,
    /// The raw JSON text of `params`, if present.
    pub params: Option<String>,
    /// The raw JSON text of `id`, if present.
    pub id: Option<String>,
    /// Bytes of the buffer the request used (leading whitespace included).
    pub used: usize,
}

/// The JSON-RPC server's reader (`json_request` in `go/server.rs`, after
/// the whitespace it drops between requests): the next request at the
/// front of `buf`, scanned from a fresh state; `Ok(None)` if it is not all
/// there yet; `Err` if the stream is broken (bad JSON, or longer than `max`).
#[cfg(feature = "go")]
pub fn next_json(buf: &[u8], max: usize) -> Result<Option<JsonRequest>, String> {
    let blank = scan::leading_whitespace(buf);
    let mut state = scan::JsonScan::default();
    let found = server::json_request(&buf[blank..], &mut state, max)?;
    Ok(found.map(|(request, used)| (request, used + blank)).map(|(request, used)| JsonRequest {
        method: request.method,
        params: request.params.map(|p| p.get().to_owned()),
        id: request.id.map(|id| id.get().to_owned()),
        used,
    }))
}

/// How many bytes of JSON whitespace `buf` starts with (what the JSON-RPC
/// reader drops between requests).
#[cfg(feature = "go")]
pub fn leading_whitespace(buf: &[u8]) -> usize {
    scan::leading_whitespace(buf)
}

/// Where an HTTP request head ends (`head_end` in `server/http.rs`), looking
/// at `buf` from byte `from` on (an earlier call saw no end before it).
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    http::head_end(buf, from)
}

/// An HTTP request head as the HTTP row parses it (`parse_head` in
/// `server/http.rs`): method, target, minor version, header fields.
pub fn parse_head(head: &[u8]) -> Result<(String, String, u8, Vec<(String, String)>), &'static str> {
    http::parse_head(head)
}
