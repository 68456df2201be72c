//! Protocol detection (`Server::detect`, the rules the server's first step
//! applies to up to `PREFIX_LEN` peeked bytes) for a server serving
//! Switchboard frames, HTTP and Go's net/rpc.
//!
//! Invariants: never panics; 8 bytes always decide; a decision never changes
//! as more bytes arrive; `switchboard` means the frame magic, `go_jsonrpc` a
//! `{` or whitespace first, `http` an upper-case word of 3+ letters and a
//! space; nothing is left unclaimed (gob is the fallback).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::frame::MAGIC;
use switchboard::go::NetRpc;
use switchboard::server::protocol::Detected;
use switchboard::Server;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::builder().with(NetRpc::default()).build())
}

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(64)];
    let mut decided: Option<(usize, &str)> = None;
    for n in 0..=data.len() {
        let got = server().detect(&data[..n]);
        if let Some((at, before)) = decided {
            assert_eq!(got, Detected::Protocol(before), "{:02x?}: {before} after {at} bytes, {got:?} after {n}", data);
        }
        if n >= 8 {
            assert_ne!(got, Detected::NeedMore, "8 bytes did not decide: {:02x?}", &data[..n]);
        }
        let protocol = match got {
            Detected::Protocol(protocol) => protocol,
            Detected::NeedMore => continue,
            other => panic!("{:02x?} is left unclaimed: {other:?}", &data[..n]),
        };
        decided.get_or_insert((n, protocol));
        let prefix = &data[..n];
        let json_start = |b: u8| matches!(b, b'{' | b' ' | b'\t' | b'\r' | b'\n');
        match protocol {
            "switchboard" => assert!(prefix.starts_with(&MAGIC)),
            "go_jsonrpc" => assert!(json_start(prefix[0])),
            "http" => {
                let word = prefix.iter().take_while(|b| b.is_ascii_uppercase()).count();
                assert!(word >= 3 && prefix.get(word) == Some(&b' '), "HTTP for {prefix:02x?}");
            }
            "go_gob" => assert!(!prefix.starts_with(&MAGIC) && !json_start(prefix[0])),
            other => panic!("unknown protocol {other}"),
        }
    }
});
