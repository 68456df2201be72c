//! The JSON-RPC server's request reader (`next_json` in
//! `go/netrpc/server.rs`, through `switchboard::fuzzing`), driven the way
//! the server drives it: requests taken one after another from a buffer
//! that grows as reads arrive.
//!
//! Input: `[chunk seed, limit selector, stream...]`
//! (`switchboard_fuzz::split_json_input`).
//!
//! Invariants:
//! - nothing panics;
//! - with no size limit, the requests read and whether the stream ends
//!   cleanly do not depend on how the bytes were cut into reads (a request
//!   split across reads is never refused; bad input may be caught a read
//!   earlier or later, `0` versus `0e`, but is caught);
//! - with the limit, what waits in the buffer for more bytes is never
//!   more than the limit (memory is bounded whatever the peer sends);
//! - a request's `params` and `id` are valid JSON, and it uses no byte past
//!   its end (the same request is read from exactly its own bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use switchboard::fuzzing::{leading_whitespace, next_json, JsonRequest};
use switchboard_fuzz::{chunks, split_json_input};

/// The requests read, and whether the stream ended cleanly (no error, and
/// nothing but whitespace left over: the server's `End::Closed`).
fn read_all(pieces: &[&[u8]], max: usize) -> (Vec<JsonRequest>, bool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            // Whitespace between requests is dropped as it arrives, as the
            // server's reader does: it never counts against the limit.
            let blank = leading_whitespace(&buf);
            buf.drain(..blank);
            match next_json(&buf, max) {
                Ok(Some(request)) => {
                    check(&buf, &request, max);
                    buf.drain(..request.used);
                    requests.push(request);
                }
                Ok(None) => break,
                Err(_) => return (requests, false),
            }
        }
        assert!(buf.len() <= max, "{} bytes buffered between reads, limit {max}", buf.len());
    }
    let clean = buf.iter().all(u8::is_ascii_whitespace);
    (requests, clean)
}

fn check(buf: &[u8], request: &JsonRequest, max: usize) {
    assert!(request.used > 0 && request.used <= buf.len());
    for raw in request.params.iter().chain(&request.id) {
        assert!(serde_json::from_str::<IgnoredAny>(raw).is_ok(), "not JSON: {raw:?}");
    }
    let alone = next_json(&buf[..request.used], max);
    assert_eq!(alone.as_ref().ok().and_then(Option::as_ref), Some(request), "{alone:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((seed, max, stream)) = split_json_input(data) else { return };
    let pieces = chunks(stream, seed);
    let whole = read_all(&[stream], usize::MAX);
    let cut = read_all(&pieces, usize::MAX);
    assert_eq!(whole, cut, "reading requests depends on how the stream was cut");
    let _ = read_all(&pieces, max);
});
