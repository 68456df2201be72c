//! The HTTP row's request head parsing (`server/http.rs`): `head_end`
//! (where the head ends) over a buffer that grows as reads arrive, and
//! `parse_head`, through `switchboard::fuzzing`.
//!
//! Invariants: nothing panics; the head ends just after the first blank
//! line (`\n\n` or `\r\n\r\n`) and not before; scanning on from any cut
//! finds the same end; a parsed head has an upper-case method, a target
//! without whitespace or control bytes, version 1.0 or 1.1, at most
//! `MAX_HEADERS` fields with token names and no CR/LF in names or values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::fuzzing::{head_end, parse_head};
use switchboard::server::http::MAX_HEADERS;

fuzz_target!(|data: &[u8]| {
    let Some(end) = head_end(data, 0) else {
        // No blank line anywhere: no prefix has one either.
        for n in [data.len() / 2, data.len().saturating_sub(1)] {
            assert_eq!(head_end(&data[..n], 0), None);
        }
        return;
    };
    assert!(end <= data.len());
    let head = &data[..end];
    assert!(head.ends_with(b"\n\n") || head.ends_with(b"\r\n\r\n"), "{head:02x?}");
    assert_eq!(head_end(head, 0), Some(end), "the end moved when the buffer shrank to the head");
    assert_eq!(head_end(&head[..end - 1], 0), None, "an earlier blank line was missed");
    // Arriving in two pieces: scanning on from the cut finds the same end.
    let cut = data.len() / 3;
    if cut < end {
        assert_eq!(head_end(data, cut), Some(end), "scanning on from {cut} moved the end");
    }

    let Ok((method, target, minor, headers)) = parse_head(head) else { return };
    assert!(!method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()), "{method:?}");
    assert!(!target.is_empty() && !target.bytes().any(|b| b <= b' ' || b == 0x7f), "{target:?}");
    assert!(minor <= 1);
    assert!(headers.len() <= MAX_HEADERS);
    for (name, value) in &headers {
        assert!(!name.is_empty() && !name.bytes().any(|b| b <= b' ' || b == b':'), "{name:?}");
        assert!(!value.contains(['\r', '\n']), "{value:?}");
        assert_eq!(value.trim_matches([' ', '\t']), value);
    }
});
