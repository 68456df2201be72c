//! The gob codec against real Go (`tests/go/gobfixtures`, a standard-library
//! Go program): the committed fixtures are what Go's encoder wrote; we decode
//! them, encode the same values byte for byte, and hand our encodings to Go's
//! decoder; values cut loose from Go's streams are what Go writes for them
//! alone, and standalone payloads put on our streams are what Go reads.
//! Needs `go` on PATH (Debian's `golang-go`; scripts/test.sh installs
//! it): without it these tests fail, they do not skip.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard::codec::gob::{Decoder, Encoder, GobError};
use switchboard::codec::{Codec, Decode, Encode};

#[path = "support/go.rs"]
mod go;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    label: String,
    score: f64,
}

/// Go's `Nested` in tests/go/gobfixtures/main.go, field for field.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
#[serde(rename_all = "PascalCase")]
struct Nested {
    name: String,
    count: i64,
    ratio: f64,
    flag: bool,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    tags: Vec<String>,
    scores: BTreeMap<String, i64>,
    child: Inner,
    kids: Vec<Inner>,
    ptr: Option<i64>,
    big: u64,
    grid: [i32; 3],
    zero: i64,
    empty: String,
}

/// net/rpc's request header (`rpc.Request`).
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
#[serde(rename = "Request", rename_all = "PascalCase")]
struct RpcRequest {
    service_method: String,
    seq: u64,
}

/// net/rpc's response header (`rpc.Response`).
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
#[serde(rename = "Response", rename_all = "PascalCase")]
struct RpcResponse {
    service_method: String,
    seq: u64,
    error: String,
}

fn request(seq: u64) -> RpcRequest {
    RpcRequest { service_method: "Arith.Multiply".into(), seq }
}

/// Go's `Node`: it contains itself, so its gob type is recursive.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
#[serde(rename_all = "PascalCase")]
struct Node {
    name: String,
    kids: Vec<Node>,
}

/// Go's `Mixed`. `When` is a `time.Time`, which encodes itself: its bytes
/// arrive as they are.
#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
struct Mixed {
    tree: Node,
    #[serde(with = "serde_bytes")]
    when: Vec<u8>,
    any: Option<i64>,
    small: i8,
    byte: u8,
    ratio: f32,
    ids: BTreeMap<i32, String>,
    ptr: Option<Inner>,
    pair: [bool; 2],
    us: Vec<u16>,
    c: (f64, f64),
}

fn node(name: &str, kids: Vec<Node>) -> Node {
    Node { name: name.into(), kids }
}

/// Go's `mixed()`.
fn mixed() -> Mixed {
    // time.Time's MarshalBinary: version 1, seconds since year 1, nanoseconds,
    // zone offset in minutes (-1: UTC).
    let secs: u64 = 1_704_164_645 + 62_135_596_800; // 2024-01-02T03:04:05Z
    let when = [&[1][..], &secs.to_be_bytes(), &6u32.to_be_bytes(), &[0xff, 0xff]].concat();
    Mixed {
        tree: node("root", vec![node("a", vec![]), node("b", vec![node("c", vec![])])]),
        when,
        any: None,
        small: -8,
        byte: 200,
        ratio: 0.5,
        ids: BTreeMap::from([(-1, "minus one".into())]),
        ptr: Some(Inner { label: "p".into(), score: -1.0 }),
        pair: [false, true],
        us: vec![1, 65535],
        c: (1.5, -2.0),
    }
}

/// The value of testdata/nested.hex.
fn nested() -> Nested {
    Nested {
        name: "Grüße, 世界 ✓".into(),
        count: -129,
        ratio: -2.5,
        flag: true,
        data: vec![0, 1, 2, 0xfe, 0xff],
        tags: vec!["a".into(), "".into(), "ζ".into()],
        scores: BTreeMap::from([("x".into(), -1)]),
        child: Inner { label: "in".into(), score: 17.0 },
        kids: vec![Inner { label: "k1".into(), score: 0.5 }, Inner::default()],
        ptr: Some(-7),
        big: u64::MAX,
        grid: [1, 0, -1],
        zero: 0,
        empty: String::new(),
    }
}

/// The value of testdata/zeros.hex: everything zero but Count.
fn zeros() -> Nested {
    Nested { count: -1, ..Nested::default() }
}

fn program_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/gobfixtures")
}

fn hex_decode(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex digit"))
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fixture_text(name: &str) -> String {
    let path = program_dir().join("testdata").join(format!("{name}.hex"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's whole stream.
fn fixture(name: &str) -> Vec<u8> {
    hex_decode(&fixture_text(name))
}

/// Decodes every value in `stream` with one decoder.
fn decode_all<T: serde::de::DeserializeOwned>(stream: &[u8]) -> Vec<T> {
    let mut dec = Decoder::new();
    let mut values = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let (value, used) = dec.decode::<T>(&stream[at..]).expect("decode").expect("a complete value");
        values.push(value);
        at += used;
    }
    values
}

/// The Go program, built once per test process (support/go.rs).
fn go_program() -> PathBuf {
    go::go_program("gobfixtures")
}

fn run_go(args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new(go_program())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the Go program");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write to the Go program");
    let out = child.wait_with_output().expect("wait for the Go program");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8 output"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Go decodes `stream` into its type `kind`, value after value, and gives
/// each back as JSON.
fn go_decode(kind: &str, stream: &[u8]) -> Vec<Value> {
    match run_go(&["decode", kind], &hex_encode(stream)) {
        Ok(out) => out.lines().map(|l| serde_json::from_str(l).expect("Go printed JSON")).collect(),
        Err(stderr) => panic!("Go could not decode our {kind} stream {}: {stderr}", hex_encode(stream)),
    }
}

fn encode_each<T: Serialize>(enc: &mut Encoder, values: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        enc.encode(v, &mut out).expect("encode");
    }
    out
}

// --- (a) Go's bytes, decoded ------------------------------------------------

#[test]
fn go_fixtures_decode_into_rust_types() {
    assert_eq!(decode_all::<Args>(&fixture("args")), [Args { a: 7, b: 8 }]);
    assert_eq!(
        decode_all::<Args>(&fixture("args_stream")),
        [Args { a: 7, b: 8 }, Args { a: 0, b: 9 }, Args { a: 0, b: 0 }]
    );
    assert_eq!(decode_all::<Nested>(&fixture("nested")), [nested()]);
    assert_eq!(decode_all::<Nested>(&fixture("zeros")), [zeros()]);
    assert_eq!(decode_all::<i64>(&fixture("int")), [56]);
    assert_eq!(decode_all::<i32>(&fixture("int")), [56]);
    assert_eq!(decode_all::<String>(&fixture("string")), ["héllo, 世界 ✓"]);
    assert_eq!(decode_all::<f64>(&fixture("float")), [17.0]);
    assert_eq!(decode_all::<Vec<i64>>(&fixture("slice")), [vec![1, -2, 300]]);
    assert_eq!(decode_all::<BTreeMap<String, i64>>(&fixture("map")), [BTreeMap::from([("seven".into(), 7)])]);
}

#[test]
fn go_fixtures_decode_into_json_values() {
    assert_eq!(decode_all::<Value>(&fixture("args")), [json!({"A": 7, "B": 8})]);
    // Zero fields the message left out come back as zero values.
    assert_eq!(
        decode_all::<Value>(&fixture("args_stream")),
        [json!({"A": 7, "B": 8}), json!({"A": 0, "B": 9}), json!({"A": 0, "B": 0})]
    );
    let zeros = decode_all::<Value>(&fixture("zeros")).remove(0);
    assert_eq!(zeros["Count"], json!(-1));
    assert_eq!(zeros["Child"], json!({"Label": "", "Score": 0.0}));
    assert_eq!(zeros["Tags"], json!([]));
    assert_eq!(zeros["Grid"], json!([0, 0, 0]));
    let nested = decode_all::<Value>(&fixture("nested")).remove(0);
    assert_eq!(nested["Name"], json!("Grüße, 世界 ✓"));
    assert_eq!(nested["Data"], json!([0, 1, 2, 254, 255]));
    assert_eq!(nested["Kids"][1], json!({"Label": "", "Score": 0.0}));
    assert_eq!(nested["Big"], json!(u64::MAX));
    let mut dec = Decoder::new();
    let (value, _) = dec.decode_json(&fixture("map")).unwrap().unwrap();
    assert_eq!(value, json!({"seven": 7}));
}

// --- (b) our bytes, compared with Go's --------------------------------------

#[test]
fn rust_encodings_match_go_byte_for_byte() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("args", encode_each(&mut Encoder::new(), &[Args { a: 7, b: 8 }])),
        ("args_stream", encode_each(&mut Encoder::new(), &[Args { a: 7, b: 8 }, Args { a: 0, b: 9 }, Args::default()])),
        // Go spells the slice of Inner "[]main.Inner": name the package.
        ("nested", encode_each(&mut Encoder::new().with_package("main"), &[nested()])),
        ("int", encode_each(&mut Encoder::new(), &[56i64])),
        ("string", encode_each(&mut Encoder::new(), &["héllo, 世界 ✓"])),
        ("float", encode_each(&mut Encoder::new(), &[17.0f64])),
        ("slice", encode_each(&mut Encoder::new(), &[vec![1i64, -2, 300]])),
        ("map", encode_each(&mut Encoder::new(), &[BTreeMap::from([("seven", 7i64)])])),
    ];
    for (name, ours) in cases {
        assert_eq!(hex_encode(&ours), hex_encode(&fixture(name)), "fixture {name}");
    }
}

#[test]
fn json_bridge_encodes_args_as_go_does() {
    let mut out = Vec::new();
    Encoder::new().encode_json("Args", &json!({"A": 7, "B": 8}), &mut out).unwrap();
    assert_eq!(hex_encode(&out), hex_encode(&fixture("args")));
}

/// A net/rpc call and its replies, as Go's gob codec writes them: header
/// and body on one stream, for every call.
#[test]
fn net_rpc_messages_match_go_byte_for_byte() {
    let mut enc = Encoder::new();
    let mut call = Vec::new();
    enc.encode(&request(0), &mut call).unwrap();
    enc.encode(&Args { a: 7, b: 8 }, &mut call).unwrap();
    enc.encode(&request(1), &mut call).unwrap();
    enc.encode(&Args { a: 0, b: 9 }, &mut call).unwrap();
    assert_eq!(hex_encode(&call), hex_encode(&fixture("call")));

    let mut enc = Encoder::new();
    let mut reply = Vec::new();
    let ok = RpcResponse { service_method: "Arith.Multiply".into(), seq: 0, error: String::new() };
    let failed = RpcResponse { service_method: "Arith.Divide".into(), seq: 1, error: "divide by zero".into() };
    enc.encode(&ok, &mut reply).unwrap();
    enc.encode(&56i64, &mut reply).unwrap();
    enc.encode(&failed, &mut reply).unwrap();
    // net/rpc's body for an error reply is struct{}{}: our ().
    enc.encode(&(), &mut reply).unwrap();
    assert_eq!(hex_encode(&reply), hex_encode(&fixture("reply")));
    assert_eq!(
        go_decode("response,int,response,skip", &reply)[2],
        json!({
            "ServiceMethod": "Arith.Divide",
            "Seq": 1,
            "Error": "divide by zero"
        })
    );

    // And Go's bytes decode into the Rust types, header by body.
    let go = fixture("reply");
    let mut dec = Decoder::new();
    let mut at = 0;
    let mut bodies = Vec::new();
    while at < go.len() {
        let (body, used) = dec.next_value(&go[at..]).unwrap().unwrap();
        bodies.push(body);
        at += used;
    }
    assert_eq!(dec.decode_value::<RpcResponse>(bodies[0]).unwrap(), ok);
    assert_eq!(dec.decode_value::<i64>(bodies[1]).unwrap(), 56);
    assert_eq!(dec.decode_value::<RpcResponse>(bodies[2]).unwrap(), failed);
    dec.decode_value::<()>(bodies[3]).unwrap();
    let go = fixture("call");
    let decoded: Vec<Value> = decode_all(&go);
    assert_eq!(
        decoded,
        [
            json!({"ServiceMethod": "Arith.Multiply", "Seq": 0}),
            json!({"A": 7, "B": 8}),
            json!({"ServiceMethod": "Arith.Multiply", "Seq": 1}),
            json!({"A": 0, "B": 9}),
        ]
    );
}

/// The fixtures are what the Go program writes today (not hand-edited).
#[test]
fn fixtures_are_what_go_writes() {
    let names =
        ["args", "args_stream", "nested", "zeros", "int", "string", "float", "slice", "map", "call", "reply", "mixed"];
    for name in names {
        let go = run_go(&["encode", name], "").unwrap_or_else(|e| panic!("encode {name}: {e}"));
        assert_eq!(go, fixture_text(name), "testdata/{name}.hex is stale: rerun `gobfixtures gen testdata`");
    }
}

// --- (c) our bytes, decoded by Go -------------------------------------------

#[test]
fn go_decodes_rust_encodings() {
    let mut enc = Encoder::new();
    let ours = encode_each(&mut enc, &[Args { a: 7, b: 8 }, Args { a: 0, b: 9 }, Args::default()]);
    assert_eq!(go_decode("args", &ours), [json!({"A": 7, "B": 8}), json!({"A": 0, "B": 9}), json!({"A": 0, "B": 0})]);

    // Go's view of our Nested is Go's view of its own.
    let go_view = go_decode("nested", &fixture("nested"));
    assert_eq!(go_decode("nested", &encode_each(&mut Encoder::new(), &[nested()])), go_view);

    assert_eq!(go_decode("int", &encode_each(&mut Encoder::new(), &[56i64])), [json!(56)]);
    assert_eq!(go_decode("int", &encode_each(&mut Encoder::new(), &[0i64, -1])), [json!(0), json!(-1)]);
    assert_eq!(go_decode("string", &encode_each(&mut Encoder::new(), &["héllo, 世界 ✓"])), [json!("héllo, 世界 ✓")]);
    assert_eq!(go_decode("float", &encode_each(&mut Encoder::new(), &[-0.25f64])), [json!(-0.25)]);
    assert_eq!(
        go_decode("slice", &encode_each(&mut Encoder::new(), &[vec![i64::MIN, 0, i64::MAX]])),
        [json!([i64::MIN, 0, i64::MAX])]
    );
    let map = BTreeMap::from([("a".to_owned(), 1i64), ("b".to_owned(), -2)]);
    assert_eq!(go_decode("map", &encode_each(&mut Encoder::new(), &[map])), [json!({"a": 1, "b": -2})]);

    let mut out = Vec::new();
    Encoder::new().encode_json("Args", &json!({"A": 6, "B": -9}), &mut out).unwrap();
    assert_eq!(go_decode("args", &out), [json!({"A": 6, "B": -9})]);
}

/// The untyped bridge: JSON objects become structs Go decodes into its own
/// types, nested ones and slices of them included.
#[test]
fn go_decodes_json_sent_as_structs() {
    let arg = json!({
        "Name": "Grüße",
        "Count": -3,
        "Ratio": 1.5,
        "Flag": true,
        "Tags": ["a", "b"],
        "Child": {"Label": "c", "Score": 2.0},
        "Kids": [{"Label": "k"}, {"Score": 1.5}],
        "Ptr": 9,
        "Extra": "Go ignores fields it does not have",
        "Nothing": null,
    });
    let mut out = Vec::new();
    Encoder::new().encode_json("Nested", &arg, &mut out).unwrap();
    let go = go_decode("nested", &out).remove(0);
    assert_eq!(go["Name"], json!("Grüße"));
    assert_eq!(go["Count"], json!(-3));
    assert_eq!(go["Ratio"], json!(1.5));
    assert_eq!(go["Flag"], json!(true));
    assert_eq!(go["Tags"], json!(["a", "b"]));
    // (Go's JSON writes the float64 2.0 as 2.)
    assert_eq!(go["Child"], json!({"Label": "c", "Score": 2}));
    assert_eq!(go["Kids"], json!([{"Label": "k", "Score": 0}, {"Label": "", "Score": 1.5}]));
    assert_eq!(go["Ptr"], json!(9));

    // What JSON cannot say, Go refuses: a JSON array is a slice, and Go's
    // [3]int32 field wants an array; an integer does not fit a float64.
    for (field, value) in [("Grid", json!([1, 2, 3])), ("Ratio", json!(2))] {
        let mut out = Vec::new();
        Encoder::new().encode_json("Nested", &json!({ field: value }), &mut out).unwrap();
        let err = run_go(&["decode", "nested"], &hex_encode(&out)).unwrap_err();
        assert!(err.contains("wrong type") && err.contains(field), "{err}");
    }
}

/// One Rust struct, sent with values that reveal different fields: each
/// shape is its own type id with the same name, and Go takes them all.
#[test]
fn go_accepts_one_struct_defined_under_several_type_ids() {
    let mut enc = Encoder::new();
    let values = [zeros(), nested(), zeros(), Nested { tags: vec!["t".into()], ..zeros() }];
    let ours = encode_each(&mut enc, &values);
    let definitions = count_struct_definitions(&ours, "Nested");
    assert_eq!(definitions, 3, "zeros, nested and the one with tags are three shapes");

    let go = go_decode("nested", &ours);
    let go_zeros = go_decode("nested", &fixture("zeros")).remove(0);
    let go_nested = go_decode("nested", &fixture("nested")).remove(0);
    let mut with_tags = go_zeros.clone();
    with_tags["Tags"] = json!(["t"]);
    assert_eq!(go, [go_zeros.clone(), go_nested, go_zeros, with_tags]);
    // And we read our own stream back.
    assert_eq!(decode_all::<Nested>(&ours), values);
}

/// A struct whose every field is None has a type with no fields at all; Go
/// decodes it into a struct that has fields (they stay zero).
#[test]
fn go_accepts_a_struct_type_with_no_fields() {
    #[derive(Serialize)]
    struct MaybeArgs {
        #[serde(rename = "A")]
        a: Option<i64>,
        #[serde(rename = "B")]
        b: Option<i64>,
    }
    let ours = encode_each(
        &mut Encoder::new(),
        &[MaybeArgs { a: None, b: None }, MaybeArgs { a: None, b: Some(8) }, MaybeArgs { a: Some(7), b: Some(8) }],
    );
    assert_eq!(count_struct_definitions(&ours, "MaybeArgs"), 3);
    assert_eq!(go_decode("args", &ours), [json!({"A": 0, "B": 0}), json!({"A": 0, "B": 8}), json!({"A": 7, "B": 8})]);
}

#[test]
fn empty_top_level_values_need_a_sample() {
    let empty: Vec<i64> = Vec::new();
    let err = Encoder::new().encode(&empty, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, GobError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("encode_with_sample"), "{err}");
    let mut out = Vec::new();
    Encoder::new().encode_with_sample(&empty, &vec![0], &mut out).unwrap();
    assert_eq!(decode_all::<Vec<i64>>(&out), [Vec::<i64>::new()]);
    // Go's decoder leaves a received empty slice nil: JSON null.
    assert_eq!(go_decode("slice", &out), [json!(null)]);
}

/// The messages of a stream whose type id is negative and which define a
/// struct with this name: counted by decoding each definition's name.
fn count_struct_definitions(stream: &[u8], name: &str) -> usize {
    let dec = Decoder::new();
    let mut at = 0;
    let mut count = 0;
    while let Some((header, len)) = dec.message_len(&stream[at..]).expect("framing") {
        let body = &stream[at + header..at + header + len];
        // A definition starts with a negative id; its struct name follows
        // the StructT/CommonType/Name deltas (03 01 01) as a counted string.
        let needle: Vec<u8> = [&[0x03, 0x01, 0x01, name.len() as u8][..], name.as_bytes()].concat();
        if body.first().is_some_and(|b| b & 1 == 1 || *b >= 0x80) && body.windows(needle.len()).any(|w| w == needle) {
            count += 1;
        }
        at += header + len;
    }
    count
}

// --- (d) standalone payloads: values cut loose from streams, and back -------

/// Every value of `stream` cut loose (`Decoder::to_standalone`).
fn cut_loose(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut dec = Decoder::new();
    let mut at = 0;
    let mut out = Vec::new();
    while at < stream.len() {
        let (body, used) = dec.next_value(&stream[at..]).expect("framing").expect("a whole value");
        out.push(dec.to_standalone(body).expect("to_standalone"));
        at += used;
    }
    out
}

/// What a fresh Go process writes for value `i` of fixture `name` alone.
fn go_single(name: &str, i: usize) -> Vec<u8> {
    hex_decode(&run_go(&["single", name, &i.to_string()], "").unwrap_or_else(|e| panic!("single {name} {i}: {e}")))
}

/// Each value of Go's streams, cut loose, is byte for byte what Go writes
/// for that value alone (same types, same ids, same order, same omitted
/// fields), and decodes into the Rust type.
#[test]
fn go_stream_values_cut_loose_are_what_go_writes_alone() {
    for (name, count) in [("args_stream", 3), ("call", 4), ("reply", 4), ("nested", 1), ("zeros", 1), ("mixed", 7)] {
        let cut = cut_loose(&fixture(name));
        assert_eq!(cut.len(), count, "{name}");
        for (i, alone) in cut.iter().enumerate() {
            // Go names a type after where it first meets it: in the mixed
            // stream, []Node was first a field ("[]main.Node") and Inner
            // first a struct field type ("Inner"), alone they are a
            // top-level slice and a map element (unnamed). The cut keeps
            // the stream's names; Go reads both the same.
            match (name, i) {
                ("mixed", 4) => {
                    assert!(alone.windows(11).any(|w| w == b"[]main.Node"));
                    assert_eq!(go_decode("nodes", alone), go_decode("nodes", &go_single(name, i)));
                }
                ("mixed", 5) => {
                    assert!(alone.windows(5).any(|w| w == b"Inner"));
                    assert_eq!(go_decode("innermap", alone), go_decode("innermap", &go_single(name, i)));
                }
                _ => assert_eq!(hex_encode(alone), hex_encode(&go_single(name, i)), "value {i} of {name}"),
            }
        }
    }

    // And each decodes on its own into the Rust type, as Codec::Gob.
    let call = cut_loose(&fixture("call"));
    assert_eq!(RpcRequest::decode(Codec::Gob, &call[2]).unwrap(), request(1));
    assert_eq!(Args::decode(Codec::Gob, &call[3]).unwrap(), Args { a: 0, b: 9 });
    let reply = cut_loose(&fixture("reply"));
    assert_eq!(i64::decode(Codec::Gob, &reply[1]).unwrap(), 56);
    assert_eq!(RpcResponse::decode(Codec::Gob, &reply[2]).unwrap().error, "divide by zero");
    <()>::decode(Codec::Gob, &reply[3]).unwrap();
    let m = cut_loose(&fixture("mixed"));
    assert_eq!(RpcRequest::decode(Codec::Gob, &m[0]).unwrap().service_method, "Svc.Mixed");
    assert_eq!(Mixed::decode(Codec::Gob, &m[1]).unwrap(), mixed());
    assert_eq!(Args::decode(Codec::Gob, &m[2]).unwrap(), Args { a: 7, b: 8 });
    assert_eq!(Mixed::decode(Codec::Gob, &m[3]).unwrap(), Mixed { small: -1, ..Mixed::default() });
    assert_eq!(Vec::<Node>::decode(Codec::Gob, &m[4]).unwrap(), [node("x", vec![Node::default()])]);
    let inner = BTreeMap::from([("k".to_owned(), Inner { label: "v".into(), score: 1.0 })]);
    assert_eq!(BTreeMap::<String, Inner>::decode(Codec::Gob, &m[5]).unwrap(), inner);
    let inners = [Inner { label: "k".into(), score: 0.0 }, Inner::default()];
    assert_eq!(Vec::<Inner>::decode(Codec::Gob, &m[6]).unwrap(), inners);
    let alone = cut_loose(&fixture("nested")).remove(0);
    assert_eq!(Nested::decode(Codec::Gob, &alone).unwrap(), nested());
}

/// A net/rpc exchange as the connection layer will run it: each argument
/// cut loose and decoded by a handler with Codec::Gob, each reply encoded
/// with Codec::Gob and put on the outgoing stream after its header. The
/// streams are byte for byte Go's.
#[test]
fn handler_payloads_on_net_rpc_streams_are_what_go_writes() {
    let call = fixture("call");
    let args: Vec<Args> =
        cut_loose(&call)[1..].iter().step_by(2).map(|p| Args::decode(Codec::Gob, p).unwrap()).collect();
    assert_eq!(args, [Args { a: 7, b: 8 }, Args { a: 0, b: 9 }]);

    // The client side, with payloads: the same bytes as Go's client.
    let mut enc = Encoder::new();
    let mut ours = Vec::new();
    for (seq, a) in args.iter().enumerate() {
        enc.encode(&request(seq as u64), &mut ours).unwrap();
        enc.encode_standalone(&a.encode_bytes(Codec::Gob).unwrap(), &mut ours).unwrap();
    }
    assert_eq!(hex_encode(&ours), hex_encode(&call));

    // The server side: a product, then an error reply's empty body.
    let mut enc = Encoder::new();
    let mut reply = Vec::new();
    let ok = RpcResponse { service_method: "Arith.Multiply".into(), seq: 0, error: String::new() };
    enc.encode(&ok, &mut reply).unwrap();
    enc.encode_standalone(&(args[0].a * args[0].b).encode_bytes(Codec::Gob).unwrap(), &mut reply).unwrap();
    let failed = RpcResponse { service_method: "Arith.Divide".into(), seq: 1, error: "divide by zero".into() };
    enc.encode(&failed, &mut reply).unwrap();
    enc.encode_standalone(&().encode_bytes(Codec::Gob).unwrap(), &mut reply).unwrap();
    assert_eq!(hex_encode(&reply), hex_encode(&fixture("reply")));
    assert_eq!(go_decode("response,int,response,skip", &reply)[1], json!(56));
}

/// Payloads from Go's streams and from our codec, put on one of our
/// streams between values of its own, in an order unlike Go's: Go decodes
/// every value into its own types as it did the originals.
#[test]
fn go_decodes_standalone_payloads_put_on_our_stream() {
    let go_mixed = go_decode("request,mixed,args,mixed,nodes,innermap,inners", &fixture("mixed"));
    let m = cut_loose(&fixture("mixed"));
    let mut enc = Encoder::new();
    let mut stream = Vec::new();
    let mut kinds = Vec::new();
    let mut want = Vec::new();
    let mut add = |enc: &mut Encoder, stream: &mut Vec<u8>, payload: &[u8], kind: &str, value: &Value| {
        enc.encode_standalone(payload, stream).unwrap_or_else(|e| panic!("{kind}: {e}"));
        kinds.push(kind.to_owned());
        want.push(value.clone());
    };
    enc.encode(&request(5), &mut stream).unwrap();
    let (kinds0, want0) = (vec!["request".to_owned()], vec![json!({"ServiceMethod": "Arith.Multiply", "Seq": 5})]);
    add(&mut enc, &mut stream, &m[4], "nodes", &go_mixed[4]);
    add(&mut enc, &mut stream, &m[3], "mixed", &go_mixed[3]);
    add(&mut enc, &mut stream, &fixture("args"), "args", &json!({"A": 7, "B": 8}));
    add(&mut enc, &mut stream, &m[1], "mixed", &go_mixed[1]);
    add(&mut enc, &mut stream, &m[6], "inners", &go_mixed[6]);
    add(&mut enc, &mut stream, &m[5], "innermap", &go_mixed[5]);
    add(&mut enc, &mut stream, &m[4], "nodes", &go_mixed[4]);
    add(
        &mut enc,
        &mut stream,
        &Args { a: -1, b: 2 }.encode_bytes(Codec::Gob).unwrap(),
        "args",
        &json!({"A": -1, "B": 2}),
    );
    add(&mut enc, &mut stream, &fixture("nested"), "nested", &go_decode("nested", &fixture("nested"))[0]);
    add(
        &mut enc,
        &mut stream,
        &nested().encode_bytes(Codec::Gob).unwrap(),
        "nested",
        &go_decode("nested", &fixture("nested"))[0],
    );
    add(&mut enc, &mut stream, &m[2], "args", &json!({"A": 7, "B": 8}));
    let kinds: Vec<String> = kinds0.into_iter().chain(kinds).collect();
    let want: Vec<Value> = want0.into_iter().chain(want).collect();
    assert_eq!(go_decode(&kinds.join(","), &stream), want);

    // Types were reused: Args, Mixed and the recursive Node defined once.
    for name in ["Args", "Mixed", "Node"] {
        assert_eq!(count_struct_definitions(&stream, name), 1, "{name}");
    }
    // And we read our stream back as well.
    let mut dec = Decoder::new();
    let mut at = 0;
    let mut got = Vec::new();
    while at < stream.len() {
        let (body, used) = dec.next_value(&stream[at..]).unwrap().unwrap();
        got.push(dec.to_standalone(body).unwrap());
        at += used;
    }
    assert_eq!(Mixed::decode(Codec::Gob, &got[4]).unwrap(), mixed());
    assert_eq!(Nested::decode(Codec::Gob, &got[9]).unwrap(), nested());
}
