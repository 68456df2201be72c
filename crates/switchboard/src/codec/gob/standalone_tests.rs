//! Standalone payloads: values cut loose from a stream, and put onto one.
//! (Against real Go: `tests/go_gob.rs`.)

use proptest::collection::vec;
use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::tests::{arb_tree, bodies, define, encode, msg, Tree};
use super::types::{FieldType, Marshaler, WireType, INT, INTERFACE, STRING};
use super::wire::{put_int, Reader};
use super::{Decoder, Encoder, GobError, Limits};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

/// Every value of `stream`, each cut loose, with the values' bodies.
fn cut_loose(stream: &[u8]) -> Result<Vec<Vec<u8>>, GobError> {
    let mut dec = Decoder::new();
    let mut at = 0;
    let mut out = Vec::new();
    while at < stream.len() {
        let (body, used) = dec.next_value(&stream[at..])?.expect("a whole value");
        out.push(dec.to_standalone(body)?);
        at += used;
    }
    Ok(out)
}

/// How many type definitions `stream` holds.
fn definitions(stream: &[u8]) -> usize {
    bodies(stream).iter().filter(|b| Reader::new(b).int("id").is_ok_and(|id| id < 0)).count()
}

fn limits() -> Limits {
    Limits { max_zero_fill: 10_000, ..Limits::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any value, sent after others on one stream, cut loose: it decodes on
    /// its own into the original, and it is what a fresh encoder writes
    /// (here the stream's types have the same definitions as a fresh one's).
    #[test]
    fn stream_values_cut_loose_decode_alone(before in vec(arb_tree(), 0..3), tree in arb_tree(), args in any::<(i64, i64)>()) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for t in &before {
            enc.encode(t, &mut stream)?;
            enc.encode(&Args { a: args.0, b: args.1 }, &mut stream)?;
        }
        enc.encode(&tree, &mut stream)?;
        let payloads = cut_loose(&stream)?;
        let last = payloads.last().expect("one value at least");
        prop_assert_eq!(Decoder::new().decode_standalone::<Tree>(last)?, tree.clone());
        if before.is_empty() {
            prop_assert_eq!(last, &stream);
        }
        for (i, t) in before.iter().enumerate() {
            prop_assert_eq!(&Decoder::new().decode_standalone::<Tree>(&payloads[2 * i])?, t);
            prop_assert_eq!(&payloads[2 * i + 1], &encode(&Args { a: args.0, b: args.1 }));
        }
        // A standalone payload cut loose again is itself.
        let mut dec = Decoder::new();
        let (body, _) = dec.next_value(last)?.expect("whole");
        prop_assert_eq!(&dec.to_standalone(body)?, last);
    }

    /// Standalone payloads put onto a stream that has types of its own:
    /// the stream decodes to the original values, cutting them loose again
    /// gives back the payloads, and a type is defined only once.
    #[test]
    fn standalone_payloads_join_any_stream(before in vec(arb_tree(), 0..3), trees in vec(arb_tree(), 1..4)) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for t in &before {
            enc.encode(t, &mut stream)?;
        }
        let payloads: Vec<Vec<u8>> = trees.iter().map(encode).collect();
        for p in &payloads {
            enc.encode_standalone(p, &mut stream)?;
            enc.encode(&Args { a: 1, b: 2 }, &mut stream)?;
            // Again: no new definitions.
            let len = stream.len();
            enc.encode_standalone(p, &mut stream)?;
            prop_assert_eq!(definitions(&stream[len..]), 0);
        }
        let cut = cut_loose(&stream)?;
        let mut dec = Decoder::new();
        let mut at = 0;
        for t in &before {
            let (v, used) = dec.decode::<Tree>(&stream[at..])?.expect("whole");
            prop_assert_eq!(&v, t);
            at += used;
        }
        for (i, (t, p)) in trees.iter().zip(&payloads).enumerate() {
            let (v, used) = dec.decode::<Tree>(&stream[at..])?.expect("whole");
            prop_assert_eq!(&v, t);
            at += used;
            let (v, used) = dec.decode::<Args>(&stream[at..])?.expect("whole");
            prop_assert_eq!(v, Args { a: 1, b: 2 });
            at += used;
            let (v, used) = dec.decode::<Tree>(&stream[at..])?.expect("whole");
            prop_assert_eq!(&v, t);
            at += used;
            let k = before.len() + 3 * i;
            prop_assert_eq!(&cut[k], p);
            prop_assert_eq!(&cut[k + 2], p);
        }
        prop_assert_eq!(at, stream.len());
        // On a fresh stream a payload is copied as it is.
        let mut fresh = Vec::new();
        Encoder::new().encode_standalone(&payloads[0], &mut fresh)?;
        prop_assert_eq!(&fresh, &payloads[0]);
    }

    /// Arbitrary bytes as a payload: an error or a value our decoder reads
    /// back, never a panic; a failure leaves the encoder as it was.
    #[test]
    fn arbitrary_payloads_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let mut enc = Encoder::with_limits(limits());
        let mut out = Vec::new();
        enc.encode(&Args { a: 1, b: 2 }, &mut out)?;
        let before = out.clone();
        match enc.encode_standalone(&bytes, &mut out) {
            Ok(()) => {
                let mut dec = Decoder::with_limits(limits());
                let (_, used) = dec.decode::<IgnoredAny>(&out)?.expect("whole");
                prop_assert!(dec.decode::<IgnoredAny>(&out[used..])?.is_some());
            }
            Err(_) => prop_assert_eq!(&out, &before),
        }
        enc.encode(&Args { a: 3, b: 4 }, &mut out)?;
        let _ = Decoder::with_limits(limits()).decode_standalone::<serde_json::Value>(&bytes);
    }

    /// Valid payloads with a few bytes changed, both ways: never a panic,
    /// and whatever is accepted decodes.
    #[test]
    fn corrupted_payloads_never_panic(tree in arb_tree(), edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut payload = encode(&tree);
        for (at, byte) in &edits {
            let i = at.index(payload.len());
            payload[i] = *byte;
        }
        let mut out = Vec::new();
        if Encoder::with_limits(limits()).encode_standalone(&payload, &mut out).is_ok() {
            Decoder::with_limits(limits()).decode_standalone::<IgnoredAny>(&out)?;
        }
        // The same edits applied to a value's body on a stream with types.
        let mut stream = encode(&tree);
        let mut dec = Decoder::with_limits(limits());
        let Some((body, _)) = dec.next_value(&stream)? else { return Err(TestCaseError::fail("incomplete")) };
        let body_len = body.len();
        let start = stream.len() - body_len;
        for (at, byte) in &edits {
            let i = start + at.index(body_len);
            stream[i] = *byte;
        }
        if let Ok(alone) = dec.to_standalone(&stream[start..]) {
            Decoder::with_limits(limits()).decode_standalone::<IgnoredAny>(&alone)?;
        }
    }
}

#[test]
fn a_payload_reuses_the_streams_types_and_defines_the_rest() {
    #[derive(Serialize)]
    struct Pair {
        #[serde(rename = "X")]
        x: Args,
        #[serde(rename = "Y")]
        y: Vec<String>,
    }
    let mut enc = Encoder::new();
    let mut stream = Vec::new();
    enc.encode(&Args { a: 1, b: 2 }, &mut stream).unwrap();
    let at = stream.len();
    enc.encode_standalone(&encode(&Args { a: 3, b: 4 }), &mut stream).unwrap();
    // Args is type 65 here already: just the value.
    assert_eq!(stream[at..], [0x07, 0xff, 0x82, 0x01, 0x06, 0x01, 0x08, 0x00]);

    // Pair's Args is named "Args" too (a struct keeps its name as a field):
    // reused; Pair and []string are new.
    let at = stream.len();
    enc.encode_standalone(&encode(&Pair { x: Args { a: 5, b: 6 }, y: vec!["y".into()] }), &mut stream).unwrap();
    assert_eq!(definitions(&stream[at..]), 2);
    let got: Vec<serde_json::Value> = {
        let mut dec = Decoder::new();
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((v, used)) = dec.decode(&stream[at..]).unwrap() {
            got.push(v);
            at += used;
        }
        got
    };
    assert_eq!(
        got,
        [
            serde_json::json!({"A": 1, "B": 2}),
            serde_json::json!({"A": 3, "B": 4}),
            serde_json::json!({"X": {"A": 5, "B": 6}, "Y": ["y"]}),
        ]
    );
    // Builtin singletons need no definitions at all.
    let at = stream.len();
    enc.encode_standalone(&encode(&"text"), &mut stream).unwrap();
    assert_eq!(stream[at..], encode(&"text")[..]);
}

/// `type Node struct { Name string; Kids []Node }`, defined as types
/// `node` and `kids`, and the value `Node{"a", [{"b", nil}]}`.
fn node_stream(node: i64, kids: i64) -> Vec<u8> {
    let n = WireType::Struct {
        name: "Node".into(),
        fields: vec![FieldType { name: "Name".into(), id: STRING }, FieldType { name: "Kids".into(), id: kids }],
    };
    let k = WireType::Slice { name: "[]main.Node".into(), elem: node };
    let mut value = Vec::new();
    put_int(&mut value, node);
    // Name "a", Kids: one Node with Name "b".
    value.extend_from_slice(&[0x01, 0x01, b'a', 0x01, 0x01, 0x01, 0x01, b'b', 0x00, 0x00]);
    [define(node, &n), define(kids, &k), msg(&value)].concat()
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Node {
    name: String,
    kids: Vec<Node>,
}

#[test]
fn recursive_types_are_renumbered_and_reused() {
    // After another type, the recursive pair has ids 66 and 67.
    let stream = [encode(&Args { a: 1, b: 2 }), node_stream(66, 67)].concat();
    let alone = cut_loose(&stream).unwrap().remove(1);
    // Numbered as Go numbers them: the struct, then its slice.
    assert_eq!(alone, node_stream(65, 66));
    let want = Node { name: "a".into(), kids: vec![Node { name: "b".into(), kids: vec![] }] };
    assert_eq!(Decoder::new().decode_standalone::<Node>(&alone).unwrap(), want);

    // A type that contains itself is matched too: the second payload
    // reuses both definitions.
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode(&Args::default(), &mut out).unwrap();
    enc.encode_standalone(&alone, &mut out).unwrap();
    let at = out.len();
    enc.encode_standalone(&alone, &mut out).unwrap();
    assert_eq!(definitions(&out), 3);
    assert_eq!(out[at..], msg(&[&[0xff, 0x84][..], &alone[alone.len() - 10..]].concat())[..]);
    let mut dec = Decoder::new();
    let (_, mut at) = dec.decode::<Args>(&out).unwrap().unwrap();
    for _ in 0..2 {
        let (node, used) = dec.decode::<Node>(&out[at..]).unwrap().unwrap();
        assert_eq!(node, want);
        at += used;
    }
    assert_eq!(at, out.len());

    // `type T []T`, a cycle with no struct: numbered when met again.
    let t = define(70, &WireType::Slice { name: "T".into(), elem: 70 });
    let stream = [t, msg(&[0xff, 0x8c, 0x00, 0x02, 0x00, 0x01, 0x00])].concat();
    let alone = cut_loose(&stream).unwrap().remove(0);
    let want =
        [define(65, &WireType::Slice { name: "T".into(), elem: 65 }), msg(&[0xff, 0x82, 0x00, 0x02, 0x00, 0x01, 0x00])]
            .concat();
    assert_eq!(alone, want);
    let value: serde_json::Value = Decoder::new().decode_standalone(&alone).unwrap();
    assert_eq!(value, serde_json::json!([[], [[]]]));
}

#[test]
fn self_marshaled_values_and_nil_interfaces_pass_through() {
    let time = WireType::Marshaled { name: "Time".into(), how: Marshaler::Gob };
    let holder = WireType::Struct {
        name: "H".into(),
        fields: vec![FieldType { name: "When".into(), id: 70 }, FieldType { name: "Any".into(), id: INTERFACE }],
    };
    // Another type first, so the ids move.
    let stream =
        [encode(&7i64), define(70, &time), define(71, &holder), msg(&[0xff, 0x8e, 0x01, 0x03, 0x01, 0x02, 0x03, 0x00])]
            .concat();
    let alone = cut_loose(&stream).unwrap().remove(1);
    let holder = WireType::Struct {
        name: "H".into(),
        fields: vec![FieldType { name: "When".into(), id: 66 }, FieldType { name: "Any".into(), id: INTERFACE }],
    };
    let want =
        [define(65, &holder), define(66, &time), msg(&[0xff, 0x82, 0x01, 0x03, 0x01, 0x02, 0x03, 0x00])].concat();
    assert_eq!(alone, want);

    // A non-nil interface value is refused: it would carry type ids.
    let stream = [
        define(65, &WireType::Slice { name: String::new(), elem: INTERFACE }),
        msg(&[0xff, 0x82, 0x00, 0x01, 0x01, b'x']),
    ]
    .concat();
    let mut dec = Decoder::new();
    let (body, _) = dec.next_value(&stream).unwrap().unwrap();
    let err = dec.to_standalone(body).unwrap_err();
    assert!(err.to_string().contains("interface values are not supported"), "{err}");
}

#[test]
fn bad_bodies_and_payloads_are_clear_errors() {
    let stream = encode(&Args { a: 1, b: 2 });
    let mut dec = Decoder::new();
    let (body, _) = dec.next_value(&stream).unwrap().unwrap();
    let cases: Vec<(&[u8], &str)> = vec![
        (&body[..body.len() - 1], "truncated"),
        (&[0xff, 0x84, 0x00], "not defined"),
        (&[0xff, 0x81, 0x00], "not a value"),
        (&[0xff, 0x82, 0x00, 0x00], "unexpected bytes"),
    ];
    for (body, want) in cases {
        let err = dec.to_standalone(body).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }

    let payload = encode(&Args { a: 1, b: 2 });
    let two = [payload.clone(), encode(&Args { a: 3, b: 4 })].concat();
    let cases: Vec<(&[u8], &str)> = vec![
        (&[], "input ended inside a standalone gob payload"),
        (&payload[..payload.len() - 1], "input ended inside a standalone gob payload"),
        (&payload[..31], "input ended inside a standalone gob payload"),
        (&two, "bytes after the value of a standalone gob payload"),
        (&[0x80], "invalid gob unsigned integer"),
    ];
    for (payload, want) in cases {
        let mut out = Vec::new();
        let err = Encoder::new().encode_standalone(payload, &mut out).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
        assert!(out.is_empty());
        let err = Decoder::new().decode_standalone::<Args>(payload).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}

#[test]
fn hostile_type_graphs_hit_the_limits() {
    // A struct whose (omitted) field's type was never defined.
    let s = WireType::Struct { name: "S".into(), fields: vec![FieldType { name: "X".into(), id: 99 }] };
    let stream = [define(65, &s), msg(&[0xff, 0x82, 0x00])].concat();
    let mut dec = Decoder::new();
    let (body, _) = dec.next_value(&stream).unwrap().unwrap();
    let err = dec.to_standalone(body).unwrap_err().to_string();
    assert!(err.contains("type id 99 is not defined"), "{err}");
    let err = Encoder::new().encode_standalone(&stream, &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("type id 99 is not defined"), "{err}");
    // The same, in a slice's element type: the (empty) value never gets to
    // it, the types do.
    let stream =
        [define(65, &WireType::Slice { name: String::new(), elem: 99 }), msg(&[0xff, 0x82, 0x00, 0x00])].concat();
    let mut dec = Decoder::new();
    let (body, _) = dec.next_value(&stream).unwrap().unwrap();
    assert_eq!(dec.to_standalone(body).unwrap_err(), GobError::UnknownType(99));
    assert_eq!(Encoder::new().encode_standalone(&stream, &mut Vec::new()).unwrap_err(), GobError::UnknownType(99));

    // A chain of 200 slice types, each the element of the next: deeper than
    // max_depth even though the value (an empty slice) is shallow.
    let mut stream = Vec::new();
    for id in 65..265 {
        let elem = if id == 65 { INT } else { id - 1 };
        stream.extend(define(id, &WireType::Slice { name: String::new(), elem }));
    }
    let mut value = Vec::new();
    put_int(&mut value, 264);
    value.extend_from_slice(&[0x00, 0x00]);
    stream.extend(msg(&value));
    let mut dec = Decoder::new();
    let (body, _) = dec.next_value(&stream).unwrap().unwrap();
    assert_eq!(dec.to_standalone(body).unwrap_err(), GobError::TooDeep(100));
    assert_eq!(Encoder::new().encode_standalone(&stream, &mut Vec::new()).unwrap_err(), GobError::TooDeep(100));

    // The encoder's limits bound the payload it reads.
    let limits = Limits { max_types: 10, ..Limits::default() };
    let err = Encoder::with_limits(limits).encode_standalone(&stream, &mut Vec::new()).unwrap_err();
    assert_eq!(err, GobError::TooManyTypes(10));
}

#[test]
fn a_failed_standalone_leaves_the_encoder_as_it_was() {
    #[derive(Serialize)]
    struct Text {
        #[serde(rename = "T")]
        t: String,
    }
    // A payload whose value message is exactly the limit: on a stream whose
    // ids have grown past 127, its type id takes a byte more, and it is
    // refused after its types were planned.
    let payload = encode(&Text { t: "x".repeat(100) });
    let value_len = bodies(&payload).last().map_or(0, |b| b.len());
    let mut enc = Encoder::with_limits(Limits { max_message: value_len, ..Limits::default() });
    for i in 0..64 {
        enc.encode_json(&format!("S{i}"), &serde_json::json!({"A": 1}), &mut Vec::new()).unwrap();
    }
    let snapshot = enc.clone();
    let mut out = Vec::new();
    let err = enc.encode_standalone(&payload, &mut out).unwrap_err();
    assert!(matches!(err, GobError::MessageTooBig { .. }), "{err}");
    assert!(out.is_empty());
    // Text was not taken as defined: both define it, under the same id.
    let small = encode(&Text { t: "y".into() });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    enc.encode_standalone(&small, &mut a).unwrap();
    snapshot.clone().encode_standalone(&small, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(definitions(&a), 1);
}

/// Two definitions that unroll to the same infinite type are that type:
/// `A = []B, B = []A` is `T = []T`.
#[test]
fn recursive_types_match_as_infinite_trees() {
    let t = define(65, &WireType::Slice { name: String::new(), elem: 65 });
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode_standalone(&[t, msg(&[0xff, 0x82, 0x00, 0x01, 0x00])].concat(), &mut out).unwrap();
    let pair = [
        define(65, &WireType::Slice { name: String::new(), elem: 66 }),
        define(66, &WireType::Slice { name: String::new(), elem: 65 }),
        msg(&[0xff, 0x82, 0x00, 0x02, 0x01, 0x00, 0x00]),
    ]
    .concat();
    let at = out.len();
    enc.encode_standalone(&pair, &mut out).unwrap();
    assert_eq!(out[at..], msg(&[0xff, 0x82, 0x00, 0x02, 0x01, 0x00, 0x00])[..]);
    // A named one is another type.
    let named = [define(65, &WireType::Slice { name: "N".into(), elem: 65 }), msg(&[0xff, 0x82, 0x00, 0x00])].concat();
    let at = out.len();
    enc.encode_standalone(&named, &mut out).unwrap();
    assert_eq!(definitions(&out[at..]), 1);
    let mut dec = Decoder::new();
    let mut at = 0;
    let mut got = Vec::new();
    while let Some((v, used)) = dec.decode::<serde_json::Value>(&out[at..]).unwrap() {
        got.push(v);
        at += used;
    }
    assert_eq!(got, [serde_json::json!([[]]), serde_json::json!([[[]], []]), serde_json::json!([])]);
}

/// A stream of `n` values of `n` different struct types (`{F<i>: i}`), and
/// a second value of each after all of them.
fn many_types(n: usize) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut stream = Vec::new();
    for round in 0..2 {
        for i in 0..n {
            let value = serde_json::json!({ format!("F{i}"): i + round });
            enc.encode_json(&format!("T{i}"), &value, &mut stream).expect("encodes");
        }
    }
    stream
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The cached conversions write exactly what the uncached ones do, in
    /// both directions, whatever the mix of types and repeats.
    #[test]
    fn cached_conversions_match_uncached(trees in vec(arb_tree(), 1..6), order in vec(0usize..6, 0..12)) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for i in order.iter().copied().chain(0..trees.len()) {
            let tree = &trees[i % trees.len()];
            enc.encode(tree, &mut stream)?;
            enc.encode(&Args { a: 1, b: 2 }, &mut stream)?;
        }
        let (mut cached, mut plain) = (Decoder::new(), Decoder::new());
        let (mut out_cached, mut out_plain) = (Encoder::new(), Encoder::new());
        let (mut bytes_cached, mut bytes_plain) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < stream.len() {
            let (body, used) = cached.next_value(&stream[at..])?.expect("whole");
            let alone = cached.to_standalone_cached(body)?;
            let (body, _) = plain.next_value(&stream[at..])?.expect("whole");
            prop_assert_eq!(&alone, &plain.to_standalone(body)?);
            out_cached.encode_standalone(&alone, &mut bytes_cached)?;
            out_plain.encode_standalone_uncached(&alone, &mut bytes_plain)?;
            prop_assert_eq!(&bytes_cached, &bytes_plain);
            at += used;
        }
        prop_assert_eq!(cut_loose(&bytes_cached)?, cut_loose(&stream)?);
    }
}

#[test]
fn cached_prefixes_belong_to_their_own_type() {
    // Two types on the stream, values alternating: each cut loose decodes
    // to its own value, from the cache as without it.
    let stream = many_types(2);
    let mut dec = Decoder::new();
    let mut at = 0;
    let mut got = Vec::new();
    while at < stream.len() {
        let (body, used) = dec.next_value(&stream[at..]).unwrap().unwrap();
        let alone = dec.to_standalone_cached(body).unwrap();
        assert_eq!(alone, dec.to_standalone(body).unwrap());
        got.push(Decoder::new().decode_standalone::<serde_json::Value>(&alone).unwrap());
        at += used;
    }
    assert_eq!(got, [json!({"F0": 0}), json!({"F1": 1}), json!({"F0": 1}), json!({"F1": 2})]);
    assert_eq!(dec.prefixes.len(), 2);

    // Two payloads whose value types share an id (65) but not a
    // definition: the stream gives them different ids, every time.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    Encoder::new().encode(&Args { a: 1, b: 2 }, &mut a).unwrap();
    Encoder::new().encode_json("Other", &json!({"C": 3}), &mut b).unwrap();
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    for _ in 0..3 {
        enc.encode_standalone(&a, &mut out).unwrap();
        enc.encode_standalone(&b, &mut out).unwrap();
    }
    assert_eq!(enc.standalones.len(), 2);
    assert_eq!(definitions(&out), 2);
    let mut dec = Decoder::new();
    let mut values = Vec::new();
    let mut at = 0;
    while let Some((value, used)) = dec.decode::<serde_json::Value>(&out[at..]).unwrap() {
        values.push(value);
        at += used;
    }
    let pair = [json!({"A": 1, "B": 2}), json!({"C": 3})];
    assert_eq!(values, pair.iter().cycle().take(6).cloned().collect::<Vec<_>>());
}

#[test]
fn cached_payloads_are_still_checked() {
    let mut payload = Vec::new();
    Encoder::new().encode(&Args { a: 1, b: 2 }, &mut payload).unwrap();
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode_standalone(&payload, &mut out).unwrap();
    let before = out.clone();
    // Same definitions, a value that is not an Args (field 5 does not
    // exist), then one with bytes after it: refused as without the cache,
    // nothing written.
    let mut bad = payload.clone();
    let len = bad.len();
    bad[len - 5..].copy_from_slice(&[0xff, 0x82, 0x05, 0x02, 0x00]);
    let uncached = enc.clone().encode_standalone_uncached(&bad, &mut Vec::new()).unwrap_err();
    assert_eq!(enc.encode_standalone(&bad, &mut out).unwrap_err(), uncached);
    let mut long = payload.clone();
    long.push(0);
    assert!(enc.encode_standalone(&long, &mut out).is_err());
    assert_eq!(out, before);

    // The decoder's cache too: a bad value of a cached type is an error.
    let stream = many_types(1);
    let mut dec = Decoder::new();
    let (body, used) = dec.next_value(&stream).unwrap().unwrap();
    dec.to_standalone_cached(body).unwrap();
    let (body, _) = dec.next_value(&stream[used..]).unwrap().unwrap();
    let mut body = body.to_vec();
    body.push(0);
    assert_eq!(dec.to_standalone_cached(&body).unwrap_err(), dec.to_standalone(&body).unwrap_err());
}

#[test]
fn caches_stay_bounded() {
    let n = 200;
    let stream = many_types(n);
    let mut dec = Decoder::new();
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let (body, used) = dec.next_value(&stream[at..]).unwrap().unwrap();
        let alone = dec.to_standalone_cached(body).unwrap();
        assert_eq!(alone, dec.to_standalone(body).unwrap());
        enc.encode_standalone(&alone, &mut out).unwrap();
        assert!(dec.prefixes.len() <= super::standalone::PREFIX_CACHE_ENTRIES);
        assert!(enc.standalones.len() <= super::standalone::PREFIX_CACHE_ENTRIES);
        at += used;
    }
    // Every type defined once on the way out, cache or not.
    assert_eq!(definitions(&out), n);
    assert_eq!(cut_loose(&out).unwrap(), cut_loose(&stream).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// `Encoder::encode_alone` (Codec::Gob's encoding, cached per type)
    /// writes what a fresh encoder writes, the first time and from the
    /// cache, and fails where it fails.
    #[test]
    fn encode_alone_is_a_fresh_encoders_output(trees in vec(arb_tree(), 1..4), args in any::<(i64, i64)>()) {
        for _ in 0..2 {
            for tree in &trees {
                let mut cached = vec![9];
                let mut fresh = vec![9];
                let got = Encoder::encode_alone(tree, &mut cached);
                prop_assert_eq!(&got, &Encoder::new().encode(tree, &mut fresh));
                prop_assert_eq!(&cached, &fresh);
            }
            let mut cached = Vec::new();
            Encoder::encode_alone(&Args { a: args.0, b: args.1 }, &mut cached)?;
            prop_assert_eq!(cached, encode(&Args { a: args.0, b: args.1 }));
        }
    }
}

#[test]
fn encode_alone_never_mixes_types_and_stays_bounded() {
    // Same Rust type, different gob types (what the value reveals), and
    // many types: each payload is exactly a fresh encoder's.
    let values = [json!({"A": 1}), json!({"A": "x"}), json!({"A": [1]}), json!({"B": 1}), json!([1, 2]), json!(1)];
    for _ in 0..2 {
        for v in &values {
            let mut cached = Vec::new();
            Encoder::encode_alone(v, &mut cached).unwrap();
            assert_eq!(cached, encode(v));
            assert_eq!(Decoder::new().decode_standalone::<serde_json::Value>(&cached).unwrap(), *v);
        }
    }
    for i in 0..200 {
        let v = json!({ format!("F{i}"): i });
        let mut cached = Vec::new();
        Encoder::encode_alone(&v, &mut cached).unwrap();
        assert_eq!(cached, encode(&v));
        assert!(super::encode::fresh_cache_len() <= super::standalone::PREFIX_CACHE_ENTRIES);
    }
    // Errors leave `out` alone, cached type or not.
    let mut out = vec![1, 2, 3];
    assert!(Encoder::encode_alone(&Vec::<i64>::new(), &mut out).is_err());
    assert!(Encoder::encode_alone(&vec![Some(1), None], &mut out).is_err());
    Encoder::encode_alone(&vec![Some(1)], &mut Vec::new()).unwrap();
    assert!(Encoder::encode_alone(&vec![Some(1), None], &mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// `Decoder::decode_alone` (Codec::Gob's decoding, definitions cached
    /// per thread) gives what a fresh decoder gives, values and errors,
    /// for well-formed payloads and damaged ones.
    #[test]
    fn decode_alone_is_a_fresh_decoders_result(trees in vec(arb_tree(), 1..4), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for _ in 0..2 {
            for tree in &trees {
                let payload = encode(tree);
                prop_assert_eq!(Decoder::decode_alone::<Tree>(&payload), Decoder::new().decode_standalone::<Tree>(&payload));
                let typed = Decoder::decode_alone::<serde_json::Value>(&payload);
                prop_assert_eq!(typed, Decoder::new().decode_standalone::<serde_json::Value>(&payload));
                // Damaged: a byte changed, or the end cut off, or one added.
                let mut bad = payload.clone();
                let at = cut.index(bad.len());
                bad[at] ^= byte | 1;
                prop_assert_eq!(Decoder::decode_alone::<Tree>(&bad), Decoder::new().decode_standalone::<Tree>(&bad));
                let short = &payload[..at];
                prop_assert_eq!(Decoder::decode_alone::<Tree>(short), Decoder::new().decode_standalone::<Tree>(short));
                let mut long = payload.clone();
                long.push(byte);
                prop_assert_eq!(Decoder::decode_alone::<Tree>(&long), Decoder::new().decode_standalone::<Tree>(&long));
            }
        }
        prop_assert!(super::standalone::definitions_cache_len() <= super::standalone::PREFIX_CACHE_ENTRIES);
    }
}

#[test]
fn decode_alone_stays_bounded() {
    for i in 0..200 {
        let v = json!({ format!("F{i}"): i });
        let payload = encode(&v);
        assert_eq!(Decoder::decode_alone::<serde_json::Value>(&payload).unwrap(), v);
        assert!(super::standalone::definitions_cache_len() <= super::standalone::PREFIX_CACHE_ENTRIES);
    }
}
