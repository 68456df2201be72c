//! The net/rpc HTTP handler's request head parsing: `head_end` (where the
//! head ends) over a buffer that grows as reads arrive, and `request_line`
//! (method and path), through `switchboard::fuzzing`.
//!
//! Invariants: nothing panics; the head ends just after the first blank
//! line (`\n\n` or `\r\n\r\n`) and not before; growing the buffer never
//! moves the end once found; method and path hold no whitespace, and the
//! method is the head's first word.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::fuzzing::{head_end, request_line};

fuzz_target!(|data: &[u8]| {
    let Some(end) = head_end(data) else {
        // No blank line anywhere: no prefix has one either.
        for n in [data.len() / 2, data.len().saturating_sub(1)] {
            assert_eq!(head_end(&data[..n]), None);
        }
        return;
    };
    assert!(end <= data.len());
    let head = &data[..end];
    assert!(head.ends_with(b"\n\n") || head.ends_with(b"\r\n\r\n"), "{head:02x?}");
    assert_eq!(head_end(head), Some(end), "the end moved when the buffer shrank to the head");
    assert_eq!(head_end(&head[..end - 1]), None, "an earlier blank line was missed");

    let text = String::from_utf8_lossy(head);
    let (method, path) = request_line(&text);
    assert!(!method.chars().any(char::is_whitespace) && !path.chars().any(char::is_whitespace));
    assert_eq!(text.split_whitespace().next().unwrap_or_default(), method);
    if !path.is_empty() {
        assert!(!method.is_empty());
    }
});
