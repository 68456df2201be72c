//! Runnable Switchboard programs: `cargo run --example NAME` (`arith_server`,
//! `arith_client`, `echo_server`, `propagation`), and the process-level
//! tests that run them (`tests/`).
//!
//! This crate is not published. What the programs share with the
//! `switchboard` command (the `Arith` service, the flag groups, serving
//! until a signal, the open-loop load generator) is the library of the
//! `switchboard-cli` package, [`switchboard_cli`], so the examples and the
//! command take the same flags and behave the same way.

/// The README's code, compiled and run as a doctest so it cannot rot. It
/// lives here, in the unpublished crate, because the README sits at the
/// workspace's root, outside every published package.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}
