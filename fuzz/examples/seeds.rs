//! Writes the seed corpora under `fuzz/corpus/<target>/`: real encoded
//! messages (frames from the frame encoder, gob streams Go itself wrote, from
//! the committed fixtures of `crates/switchboard/tests/go/gobfixtures`,
//! JSON-RPC requests as Go's `jsonrpc` client writes them, HTTP heads,
//! registry bodies), each behind the control bytes its target reads
//! (`switchboard_fuzz::split_*`).
//!
//! ```text
//! cd fuzz && cargo run --example seeds
//! ```
//!
//! Seeds are named `seed-*`; files libFuzzer adds when the campaign's
//! corpus is minimized into the same folders are named by their hash.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard::codec::{Codec, Encode, Proto};
use switchboard::frame::{compress, Head, Kind, Metadata, FLAG_COMPRESSED, FLAG_REFUSED};
use switchboard::codec::gob::{Decoder, Encoder};
use switchboard_fuzz::{CodecCase, PbInner, PbSample, Sample};
use switchboard_registry::model::RegisterRequest;

/// Chunk seeds each stream seed is written with: whole, then two cuttings.
const CUTS: [u8; 3] = [0, 1, 77];

struct Out {
    root: PathBuf,
    written: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("corpus folder");
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
        self.written += 1;
    }
}

fn frame(head: Head, meta: &Metadata, payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    head.encode(&mut buf, meta, payload).expect("encodes");
    buf.to_vec()
}

fn request_meta() -> Metadata {
    let mut meta = Metadata::default();
    meta.set_method("Arith.Multiply");
    meta.set_deadline(Some(Duration::from_millis(1500)));
    meta.set_trace_context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    meta.insert("tenant", "acme");
    meta
}

fn frames(out: &mut Out) {
    let args = br#"{"A":7,"B":8}"#;
    let request = frame(Head { codec: Codec::Json.id(), ..Head::new(Kind::Request, 1) }, &request_meta(), args);
    let mut error_meta = Metadata::default();
    error_meta.set_message("divide by zero");
    error_meta.set_details(Bytes::from_static(b"\x08\x03"));
    let response = frame(
        Head { codec: Codec::Json.id(), flags: FLAG_REFUSED, status: 3, ..Head::new(Kind::Response, 1) },
        &error_meta,
        b"",
    );
    let big = vec![b'x'; 3000];
    let compressed = frame(
        Head { codec: Codec::Binary.id(), flags: FLAG_COMPRESSED, ..Head::new(Kind::Request, 2) },
        &request_meta(),
        &compress(&big),
    );
    let ping = frame(Head::new(Kind::Ping, 9), &Metadata::default(), b"");
    let control: Vec<u8> = [Kind::Pong, Kind::Cancel, Kind::GoAway, Kind::OneWay]
        .into_iter()
        .flat_map(|kind| frame(Head::new(kind, 3), &Metadata::default(), b"p"))
        .collect();
    let pipelined = [request.clone(), ping.clone(), compressed.clone(), response.clone()].concat();

    let streams: [(&str, u8, &[u8]); 6] = [
        ("request", 255, &request),
        ("response", 255, &response),
        ("compressed", 255, &compressed),
        ("control", 255, &control),
        ("pipelined", 255, &pipelined),
        // A 64-byte limit: the request is skipped as oversized, the ping decodes.
        ("oversized", 4, &[request.clone(), ping.clone()].concat()),
    ];
    for (name, max, stream) in streams {
        for cut in CUTS {
            out.put("frame_decode", &format!("{name}-{cut}"), &[&[cut, max, 255][..], stream].concat());
        }
        let meta_len = u32::from_be_bytes(stream[16..20].try_into().expect("4 bytes")) as usize;
        out.put("frame_metadata", name, &stream[24..24 + meta_len]);
    }
    // A compressed payload bigger than the decompression limit (64 * 4 bytes).
    out.put("frame_decode", "compressed-over-limit", &[&[1, 255, 4][..], &compressed].concat());

    out.put("frame_payload", "text", &[&[255][..], &compress(b"hello, hello, hello, switchboard")].concat());
    out.put("frame_payload", "zeros", &[&[255][..], &compress(&[0u8; 10_000])].concat());
    out.put("frame_payload", "bomb", &[&[1][..], &compress(&[0u8; 100_000])].concat());
    out.put(
        "frame_payload",
        "json",
        &[&[255][..], &compress(&serde_json::to_vec(&sample_json()).expect("json"))].concat(),
    );
    out.put("frame_payload", "empty", &[255]);
}

fn sample_json() -> serde_json::Value {
    serde_json::json!({"A": 7, "B": [1, 2.5, "three", null, {"nested": true}], "C": "ünï"})
}

/// The Go fixtures: name → the stream Go wrote (messages concatenated).
fn go_fixtures() -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/switchboard/tests/go/gobfixtures/testdata");
    let mut fixtures = BTreeMap::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let hex: String = fs::read_to_string(&path).expect("fixture").split_whitespace().collect();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>();
        fixtures.insert(name.to_owned(), bytes);
    }
    fixtures
}

fn gob(out: &mut Out) {
    let mut ours = Vec::new();
    let mut encoder = Encoder::new();
    encoder.encode(&Sample::full(), &mut ours).expect("encodes");
    encoder.encode(&Sample { tags: Vec::new(), child: None, ..Sample::full() }, &mut ours).expect("encodes");
    encoder.encode(&vec!["a".to_owned(), "b".to_owned()], &mut ours).expect("encodes");
    encoder.encode(&BTreeMap::from([(1u32, -1i64)]), &mut ours).expect("encodes");
    // Gob has no interface{} values: one type per sequence.
    let reply = serde_json::json!({"A": 7, "B": [1.5, 2.0], "C": {"D": "ünï", "E": [true, false]}});
    encoder.encode_json("Reply", &reply, &mut ours).expect("encodes");

    let mut streams = go_fixtures();
    streams.insert("ours".into(), ours);
    for (name, stream) in &streams {
        for cut in CUTS {
            out.put("gob_stream", &format!("{name}-{cut}"), &[&[cut, 255][..], stream].concat());
        }
        // Small limits (selector 0x21): depth 3, 2 types, 288 type bytes.
        out.put("gob_stream", &format!("{name}-limited"), &[&[3, 0x21][..], stream].concat());

        // Every value of the stream, cut loose: the standalone payloads a
        // handler's Codec::Gob decoding sees.
        let mut decoder = Decoder::new();
        let mut at = 0;
        let mut i = 0;
        while let Ok(Some((body, used))) = decoder.next_value(&stream[at..]) {
            if let Ok(standalone) = decoder.to_standalone(body) {
                out.put("gob_standalone", &format!("{name}-{i}"), &standalone);
                out.put(
                    "codec_decode",
                    &format!("gob-value-{name}-{i}"),
                    &with_case(CodecCase::Value(Codec::Gob), &standalone),
                );
            }
            at += used;
            i += 1;
        }
    }
}

fn with_case(case: CodecCase, payload: &[u8]) -> Vec<u8> {
    [&[case.to_byte()][..], payload].concat()
}

fn codecs(out: &mut Out) {
    let samples = [
        ("full", Sample::full()),
        ("sparse", Sample { data: Vec::new(), blob: Bytes::new(), kids: Vec::new(), child: None, ..Sample::full() }),
    ];
    for codec in [Codec::Json, Codec::Binary, Codec::MsgPack, Codec::Gob] {
        for (name, sample) in &samples {
            let bytes = sample.encode_bytes(codec).expect("encodes");
            out.put("codec_decode", &format!("{}-{name}", codec.name()), &with_case(CodecCase::Sample(codec), &bytes));
        }
    }
    for codec in [Codec::Json, Codec::MsgPack] {
        let bytes = sample_json().encode_bytes(codec).expect("encodes");
        out.put("codec_decode", &format!("{}-value", codec.name()), &with_case(CodecCase::Value(codec), &bytes));
    }
    let pb = PbSample {
        id: 1 << 40,
        delta: -7,
        name: "Arith.Multiply".into(),
        data: vec![0, 1, 255],
        values: vec![1, -1, i64::MAX],
        child: Some(PbInner {
            label: "kid".into(),
            kids: vec![PbInner { label: "grandkid".into(), kids: Vec::new() }],
        }),
        scores: BTreeMap::from([("x".into(), -1)]),
        ratio: 0.25,
    };
    let bytes = Proto(pb).encode_bytes(Codec::Protobuf).expect("encodes");
    out.put("codec_decode", "protobuf", &with_case(CodecCase::Proto, &bytes));
}

fn netrpc(out: &mut Out) {
    // What Go's jsonrpc client writes: one object per call, then a newline.
    let calls = (0..3)
        .map(|id| format!("{{\"method\":\"Arith.Multiply\",\"params\":[{{\"A\":7,\"B\":{id}}}],\"id\":{id}}}\n"))
        .collect::<String>();
    let odd = " \r\n{\"id\":\"x\",\"method\":\"Svc.Mixed\",\"params\":[{\"Tree\":{\"a\":[1,2.5e3,-0.0]},\"Any\":null,\"S\":\"\\u00e9\\n\"}]}\t{\"method\":\"A.B\"}";
    for cut in CUTS {
        out.put("jsonrpc_request", &format!("calls-{cut}"), &[&[cut, 255][..], calls.as_bytes()].concat());
        out.put("jsonrpc_request", &format!("odd-{cut}"), &[&[cut, 255][..], odd.as_bytes()].concat());
    }
    // An 8 * 8 = 64-byte limit: the first call fits, the second does not.
    out.put("jsonrpc_request", "limited", &[&[1, 8][..], calls.as_bytes()].concat());

    let go_call = go_fixtures().remove("call").expect("the call fixture");
    let connect = [&b"CONNECT /_goRPC_ HTTP/1.0\n\n"[..], &go_call].concat();
    out.put("http_head", "connect", &connect);
    out.put("http_head", "get", b"GET /debug/rpc HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n");
    out.put("http_head", "partial", b"CONNECT /_goRPC_ HTTP/1.0\r\n");

    out.put("sniff", "switchboard", &frame(Head::new(Kind::Ping, 1), &Metadata::default(), b"")[..8]);
    out.put("sniff", "gob", &go_call[..8]);
    out.put("sniff", "jsonrpc", &calls.as_bytes()[..8]);
    out.put("sniff", "connect", b"CONNECT /_goRPC_ HTTP/1.0\n\n");
    out.put("sniff", "get", b"GET / HTTP/1.1\r\n");
    out.put("sniff", "whitespace", b" \r\n\t{");
}

fn registry(out: &mut Out) {
    let mut req = RegisterRequest::new("Arith", "arith-1", "127.0.0.1:9000");
    req.methods = vec!["Arith.Multiply".into(), "Arith.Divide".into()];
    req.metadata.version = "1.2.0".into();
    req.metadata.zone = "eu-1".into();
    req.metadata.weight = 50;
    req.metadata.tags = vec!["canary".into()];
    req.metadata.kv.insert("owner".into(), "team-a".into());
    req.ttl_ms = Some(10_000);
    let full = serde_json::to_vec_pretty(&req).expect("json");
    out.put("registry_request", "full", &[&[0][..], &full].concat());
    let minimal = br#"{"service": "Arith", "id": "arith-1", "address": "[::1]:9000"}"#;
    out.put("registry_request", "minimal", &[&[0][..], &minimal[..]].concat());
    let dns = br#"{"service":"Echo","id":"e/1","address":"echo.svc.local:0","ttl_ms":5}"#;
    out.put("registry_request", "invalid", &[&[0][..], &dns[..]].concat());
    for wait in ["500ms", "30s", "5m", "1h", "10", "99999999999h"] {
        out.put("registry_request", &format!("wait-{wait}"), &[&[1][..], wait.as_bytes()].concat());
    }

    // config_keys reads arbitrary::Unstructured operations, not a wire
    // format; a few fixed pseudo-random inputs give it somewhere to start.
    let mut state = 0x2545_f491_u32;
    for i in 0..4 {
        let bytes: Vec<u8> = (0..256)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        out.put("config_keys", &format!("ops-{i}"), &bytes);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut out = Out { root, written: 0 };
    frames(&mut out);
    gob(&mut out);
    codecs(&mut out);
    netrpc(&mut out);
    registry(&mut out);
    println!("wrote {} seed files under {}", out.written, out.root.display());
}
