//! Private parsers of the registry's HTTP API, reachable from the fuzz
//! targets in `fuzz/` (cargo feature `fuzzing`; not public API, not
//! semver-stable). Thin wrappers, so the fuzzers test the code the server
//! runs; the store and the model are fuzzed through their public API.

use std::time::Duration;

use axum::response::IntoResponse;

use crate::model::RegisterRequest;
use crate::server;

/// A `PUT /v1/instances` body as the server parses it (`parse_json` in
/// `server.rs`: serde_json with the failing field's path, then nothing
/// but whitespace after the object). The error is the HTTP status the
/// server would answer: 400 for bad JSON, 422 for a shape error.
pub fn parse_register(body: &[u8]) -> Result<RegisterRequest, u16> {
    server::parse_json(body).map_err(status)
}

/// A blocking query's `wait=` value (`parse_wait` in `server.rs`); the
/// error is the HTTP status the server would answer.
pub fn parse_wait(text: &str) -> Result<Duration, u16> {
    server::parse_wait(text).map_err(status)
}

fn status(e: server::ApiError) -> u16 {
    e.into_response().status().as_u16()
}
