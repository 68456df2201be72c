//! Round-trip and robustness tests.
