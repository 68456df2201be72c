//! The macro's error messages, checked with trybuild: every way
//! `#[switchboard::service]` rejects its input has a case in `tests/ui/`
//! (`NAME.rs`, and `NAME.stderr` holding what rustc prints for it), and
//! `tests/ui/pass/` holds cases that must compile and run.
//!
//! The `.stderr` files are rustc's rendering of the errors, so they belong
//! to one compiler version: they were written with rustc 1.95. A different
//! compiler can word or lay out the same error differently; after a
//! toolchain update, regenerate them with
//! `TRYBUILD=overwrite cargo test -p switchboard-macros --test compile_fail`
//! and read the diff before committing it.
//!
//! trybuild builds the cases as a separate project under
//! `target/tests/trybuild`, so the first run compiles the core crate once
//! more there.

#[test]
fn macro_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
