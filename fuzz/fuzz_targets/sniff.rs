//! Protocol sniffing (`go::netrpc::sniff`), which the server's first step
//! runs on up to 8 peeked bytes.
//!
//! Invariants: never panics; 8 bytes always decide; a decision never changes
//! as more bytes arrive; Switchboard means the frame magic, JSON-RPC a `{`
//! or whitespace first, HTTP an upper-case word of 3+ letters and a space.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::frame::MAGIC;
use switchboard::go::netrpc::{sniff, Protocol};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(64)];
    let mut decided: Option<(usize, Protocol)> = None;
    for n in 0..=data.len() {
        let got = sniff(&data[..n]);
        if let Some((at, before)) = decided {
            assert_eq!(got, Some(before), "{:02x?}: {before:?} after {at} bytes, {got:?} after {n}", data);
        }
        if n >= 8 {
            assert!(got.is_some(), "8 bytes did not decide: {:02x?}", &data[..n]);
        }
        let Some(protocol) = got else { continue };
        decided.get_or_insert((n, protocol));
        let prefix = &data[..n];
        match protocol {
            Protocol::Switchboard => assert!(prefix.starts_with(&MAGIC)),
            Protocol::JsonRpc => assert!(matches!(prefix[0], b'{' | b' ' | b'\t' | b'\r' | b'\n')),
            Protocol::Http => {
                let word = prefix.iter().take_while(|b| b.is_ascii_uppercase()).count();
                assert!(word >= 3 && prefix.get(word) == Some(&b' '), "HTTP for {prefix:02x?}");
            }
            Protocol::Gob => {
                assert!(!prefix.starts_with(&MAGIC) && !matches!(prefix[0], b'{' | b' ' | b'\t' | b'\r' | b'\n'))
            }
        }
    }
});
