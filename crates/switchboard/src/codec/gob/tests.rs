//! Round trips, streams in pieces, and hostile input. (Interop with real Go
//! is in `tests/go_gob.rs`.)

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::types::{put_wire_type, FieldType, WireType, INT, STRING};
use super::wire::{put_int, put_uint};
use super::{Decoder, Encoder, GobError, Limits, Next};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub(super) enum Color {
    #[default]
    Red,
    Green,
    Blue,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Leaf {
    i: i64,
    u: u64,
    f: f64,
    s: String,
    #[serde(with = "serde_bytes")]
    b: Vec<u8>,
    o: Option<i32>,
    flag: bool,
    small: i8,
    color: Color,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Tree {
    name: String,
    leaves: Vec<Leaf>,
    by_name: BTreeMap<String, Leaf>,
    ints: BTreeMap<i32, Vec<u16>>,
    nested: Vec<Vec<i16>>,
    inner: Leaf,
    raw: Vec<u8>,
    arr: [u8; 4],
    pair: (i64, i64),
    maybe: Option<Leaf>,
    unit: (),
}

pub(super) fn arb_leaf() -> impl Strategy<Value = Leaf> {
    (
        (any::<i64>(), any::<u64>(), any::<f64>().prop_filter("finite", |f| f.is_finite()), ".{0,12}"),
        (
            vec(any::<u8>(), 0..16),
            // Some(0) is a pointer to zero, which gob leaves out: it comes
            // back as None (see `some_zero_comes_back_as_none`).
            prop::option::of(any::<i32>().prop_filter("non-zero", |i| *i != 0)),
            any::<bool>(),
            any::<i8>(),
            prop::sample::select(vec![Color::Red, Color::Green, Color::Blue]),
        ),
    )
        .prop_map(|((i, u, f, s), (b, o, flag, small, color))| Leaf { i, u, f, s, b, o, flag, small, color })
}

pub(super) fn arb_tree() -> impl Strategy<Value = Tree> {
    (
        (".{0,8}", vec(arb_leaf(), 0..4), btree_map(".{0,4}", arb_leaf(), 0..3)),
        // Inner sequences are never all empty: then their element type is
        // unknowable (see `unknowable_element_types_are_errors`).
        (btree_map(any::<i32>(), vec(any::<u16>(), 1..3), 0..3), vec(vec(any::<i16>(), 1..4), 0..3)),
        (arb_leaf(), vec(any::<u8>(), 0..8), any::<[u8; 4]>(), any::<(i64, i64)>(), prop::option::of(arb_leaf())),
    )
        .prop_map(|((name, leaves, by_name), (ints, nested), (inner, raw, arr, pair, maybe))| Tree {
            name,
            leaves,
            by_name,
            ints,
            nested,
            inner,
            raw,
            arr,
            pair,
            maybe,
            unit: (),
        })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new().encode(value, &mut out).expect("encode");
    out
}

fn decode<T: serde::de::DeserializeOwned>(stream: &[u8]) -> Result<T, GobError> {
    match Decoder::new().decode::<T>(stream)? {
        Some((value, used)) if used == stream.len() => Ok(value),
        Some((_, used)) => panic!("used {used} of {} bytes", stream.len()),
        None => panic!("incomplete stream"),
    }
}

/// Splits a stream into its message bodies.
pub(super) fn bodies(stream: &[u8]) -> Vec<&[u8]> {
    let dec = Decoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((header, len)) = dec.message_len(&stream[at..]).expect("framing") {
        out.push(&stream[at + header..at + header + len]);
        at += header + len;
    }
    assert_eq!(at, stream.len());
    out
}

/// Frames a message body.
pub(super) fn msg(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_uint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// A type definition message.
pub(super) fn define(id: i64, t: &WireType) -> Vec<u8> {
    let mut body = Vec::new();
    put_int(&mut body, -id);
    put_wire_type(&mut body, id, t);
    msg(&body)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn trees_round_trip(tree in arb_tree()) {
        let stream = encode(&tree);
        prop_assert_eq!(decode::<Tree>(&stream)?, tree);
        // Self-describing: the generic targets take it too.
        decode::<IgnoredAny>(&stream)?;
        prop_assert!(Decoder::new().decode_json(&stream)?.is_some());
    }

    /// Many values on one stream, arriving in arbitrary pieces: types are
    /// defined once per shape, values decode as soon as they are complete.
    #[test]
    fn streams_round_trip_in_pieces(trees in vec(arb_tree(), 1..5), cuts in vec(1usize..64, 1..200)) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for t in &trees {
            enc.encode(t, &mut stream)?;
        }
        let mut dec = Decoder::new();
        let (mut buf, mut fed, mut got) = (Vec::new(), 0, Vec::new());
        let mut cuts = cuts.into_iter().cycle();
        while got.len() < trees.len() {
            let n = cuts.next().unwrap_or(1).min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            while let Some((tree, used)) = dec.decode::<Tree>(&buf)? {
                got.push(tree);
                buf.drain(..used);
            }
            prop_assert!(n > 0 || got.len() == trees.len(), "stream ended with values missing");
        }
        prop_assert_eq!(got, trees);
        prop_assert!(buf.is_empty());
    }

    /// The same, read with `take_value`: definitions are taken as they
    /// arrive, so all that stays buffered is one message not yet whole.
    #[test]
    fn streams_taken_in_pieces_buffer_one_message_at_most(
        trees in vec(arb_tree(), 1..5),
        cuts in vec(1usize..64, 1..200),
    ) {
        let mut enc = Encoder::new();
        let mut stream = Vec::new();
        for t in &trees {
            enc.encode(t, &mut stream)?;
        }
        let mut dec = Decoder::new();
        let (mut buf, mut fed, mut got) = (Vec::new(), 0, Vec::new());
        let mut cuts = cuts.into_iter().cycle();
        while got.len() < trees.len() {
            let n = cuts.next().unwrap_or(1).min(stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            loop {
                match dec.take_value(&buf)? {
                    Next::Value { body, used } => {
                        got.push(dec.decode_value::<Tree>(body)?);
                        buf.drain(..used);
                    }
                    Next::Incomplete { taken, need } => {
                        buf.drain(..taken);
                        match need {
                            Some(need) => prop_assert!(buf.len() < need, "{} of {need}", buf.len()),
                            None => prop_assert!(buf.len() < 9, "{} bytes, no message count", buf.len()),
                        }
                        break;
                    }
                }
            }
            prop_assert!(n > 0 || got.len() == trees.len(), "stream ended with values missing");
        }
        prop_assert_eq!(got, trees);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn scalars_round_trip(i in any::<i64>(), u in any::<u64>(), f in any::<f64>(), s in ".*", b in vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(decode::<i64>(&encode(&i))?, i);
        prop_assert_eq!(decode::<u64>(&encode(&u))?, u);
        let back = decode::<f64>(&encode(&f))?;
        prop_assert!(back == f || (back.is_nan() && f.is_nan()));
        prop_assert_eq!(decode::<String>(&encode(&s))?, s);
        prop_assert_eq!(decode::<serde_bytes::ByteBuf>(&encode(&serde_bytes::Bytes::new(&b)))?.into_vec(), b.clone());
        // Vec<u8> is gob's []byte too, with or without serde_bytes (but
        // an empty Vec<u8> shows no element type: see
        // `unknowable_element_types_are_errors`).
        if !b.is_empty() {
            prop_assert_eq!(encode(&b), encode(&serde_bytes::Bytes::new(&b)));
        }
    }

    /// Arbitrary bytes: never a panic, whatever the target.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let limits = Limits { max_zero_fill: 10_000, ..Limits::default() };
        let _ = Decoder::with_limits(limits).decode::<serde_json::Value>(&bytes);
        let _ = Decoder::with_limits(limits).decode::<Tree>(&bytes);
        let _ = Decoder::with_limits(limits).decode::<IgnoredAny>(&bytes);
        let _ = Decoder::with_limits(limits).take_value(&bytes);
        let _ = Decoder::with_limits(limits).decode_json(&bytes);
        let mut dec = Decoder::with_limits(limits);
        let _ = dec.decode_message::<serde_json::Value>(&bytes);
        let _ = dec.decode_message::<Tree>(&bytes);
    }

    /// Valid streams with a few bytes changed: never a panic.
    #[test]
    fn corrupted_streams_never_panic(tree in arb_tree(), edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut stream = encode(&tree);
        for (at, byte) in edits {
            let i = at.index(stream.len());
            stream[i] = byte;
        }
        let limits = Limits { max_zero_fill: 10_000, ..Limits::default() };
        let _ = Decoder::with_limits(limits).decode::<Tree>(&stream);
        let _ = Decoder::with_limits(limits).decode_json(&stream);
        let _ = Decoder::with_limits(limits).decode::<IgnoredAny>(&stream);
    }
}

proptest! {
    // Quadratic in the stream length: fewer cases.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every strict prefix of a message body is an error (gob values are
    /// self-delimiting), and every strict prefix of a stream is "need more".
    #[test]
    fn truncations_are_errors_or_need_more(tree in arb_tree()) {
        let stream = encode(&tree);
        let bodies = bodies(&stream);
        let mut defined = Decoder::new();
        for (i, body) in bodies.iter().enumerate() {
            if i > 0 {
                // The definitions before this message.
                defined.decode_message::<IgnoredAny>(bodies[i - 1])?;
            }
            for cut in 0..body.len() {
                let mut dec = defined.clone();
                prop_assert!(dec.decode_message::<Tree>(&body[..cut]).is_err(), "prefix {} of {:02x?}", cut, body);
            }
        }
        let step = (stream.len() / 64).max(1);
        for cut in (0..stream.len()).step_by(step).chain([stream.len() - 1]) {
            prop_assert!(Decoder::new().decode::<Tree>(&stream[..cut])?.is_none());
        }
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

#[test]
fn some_zero_comes_back_as_none() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct P {
        x: Option<i64>,
        y: i64,
    }
    // Gob flattens pointers and leaves zero fields out: *int pointing at 0
    // is not sent, so the receiver sees a nil pointer.
    assert_eq!(decode::<P>(&encode(&P { x: Some(0), y: 1 })).unwrap(), P { x: None, y: 1 });
    assert_eq!(decode::<P>(&encode(&P { x: Some(5), y: 0 })).unwrap(), P { x: Some(5), y: 0 });
}

#[test]
fn fields_the_senders_type_lacks_decode_as_zero() {
    #[derive(Serialize)]
    struct Small {
        #[serde(rename = "A")]
        a: i64,
    }
    #[derive(Deserialize, Debug, PartialEq, Default)]
    struct Big {
        #[serde(rename = "A")]
        a: i64,
        tags: Vec<String>,
        inner: Args,
        maybe: Option<u8>,
        pair: (i32, String),
        text: String,
        on: bool,
        ratio: f32,
        map: BTreeMap<String, i64>,
    }
    assert_eq!(decode::<Big>(&encode(&Small { a: 3 })).unwrap(), Big { a: 3, ..Big::default() });
}

#[test]
fn untyped_targets_see_every_declared_field() {
    let stream = encode(&Args { a: 0, b: 9 });
    assert_eq!(decode::<serde_json::Value>(&stream).unwrap(), serde_json::json!({"A": 0, "B": 9}));
}

#[test]
fn unit_variants_are_strings_and_data_variants_are_errors() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum E {
        Plain,
        Data(i32),
    }
    assert_eq!(encode(&E::Plain), encode(&"Plain"));
    assert_eq!(decode::<E>(&encode(&E::Plain)).unwrap(), E::Plain);
    let err = Encoder::new().encode(&E::Data(1), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("E::Data carries data"), "{err}");
}

#[test]
fn unknowable_element_types_are_errors() {
    let mut out = Vec::new();
    let err = Encoder::new().encode(&vec![Vec::<i32>::new()], &mut out).unwrap_err();
    assert!(err.to_string().contains("empty or None"), "{err}");
    let err = Encoder::new().encode(&None::<i32>, &mut out).unwrap_err();
    assert!(err.to_string().contains("top level"), "{err}");
    let err = Encoder::new().encode(&vec![Some(1), None], &mut out).unwrap_err();
    assert!(err.to_string().contains("nil pointers"), "{err}");
    let err = Encoder::new().encode(&(1i32, "x"), &mut out).unwrap_err();
    assert!(err.to_string().contains("different gob types"), "{err}");
    assert!(out.is_empty(), "a failed encode appends nothing");
}

#[test]
fn a_failed_encode_leaves_the_encoder_as_it_was() {
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    assert!(enc.encode(&vec![Some(1i64), None], &mut out).is_err());
    enc.encode(&vec![Some(1i64)], &mut out).unwrap();
    assert_eq!(out, encode(&vec![1i64]), "the slice type is defined again, as id 65");
}

#[test]
fn go_structs_with_no_fields_decode_into_unit() {
    let stream = encode(&());
    decode::<()>(&stream).unwrap();
    // Anything can be skipped.
    decode::<IgnoredAny>(&encode(&Args { a: 1, b: 2 })).unwrap();
}

#[test]
fn announced_lengths_beyond_the_data_are_refused() {
    // A message claiming 1 TiB.
    let huge = [0xFB, 0x01, 0x00, 0x00, 0x00, 0x00];
    assert!(matches!(Decoder::new().decode::<IgnoredAny>(&huge), Err(GobError::MessageTooBig { .. })));
    // A string, a byte slice, a slice and a map claiming 2^60 elements.
    for id in [STRING, super::types::BYTES] {
        let mut body = Vec::new();
        put_int(&mut body, id);
        body.extend_from_slice(&[0x00, 0xF8, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(decode::<IgnoredAny>(&msg(&body)), Err(GobError::Truncated(_))));
    }
    let slice = define(65, &WireType::Slice { name: String::new(), elem: INT });
    let map = define(66, &WireType::Map { name: String::new(), key: INT, elem: INT });
    for id in [65, 66] {
        let mut body = Vec::new();
        put_int(&mut body, id);
        body.extend_from_slice(&[0x00, 0xF8, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let stream = [slice.clone(), map.clone(), msg(&body)].concat();
        let mut dec = Decoder::new();
        let err = dec.decode::<Vec<i64>>(&stream).unwrap_err();
        assert!(matches!(err, GobError::Corrupt(_)), "{err}");
    }
}

#[test]
fn hostile_types_hit_the_limits() {
    // A struct whose omitted field is an array of 2^40 ints: filling in its
    // zero value would never end.
    let big_array = define(65, &WireType::Array { name: String::new(), elem: INT, len: 1 << 40 });
    let holder =
        define(66, &WireType::Struct { name: "H".into(), fields: vec![FieldType { name: "X".into(), id: 65 }] });
    let value = msg(&[0xff, 0x84, 0x00]); // type 66, no fields
    let stream = [big_array, holder, value].concat();
    let err = Decoder::new().decode::<serde_json::Value>(&stream).unwrap_err();
    assert!(
        matches!(err, GobError::InField { ref source, .. } if matches!(**source, GobError::ZeroFillBudget(_))),
        "{err}"
    );

    // A struct that contains itself by value: its zero value is infinite.
    let selfish =
        define(65, &WireType::Struct { name: "S".into(), fields: vec![FieldType { name: "Me".into(), id: 65 }] });
    let stream = [selfish, msg(&[0xff, 0x82, 0x00])].concat();
    let err = Decoder::new().decode::<serde_json::Value>(&stream).unwrap_err();
    assert!(err.to_string().contains("nested deeper than"), "{err}");

    // A slice of itself, nested 10,000 deep on the wire.
    let mut body = vec![0xff, 0x82, 0x00];
    body.extend(std::iter::repeat_n(0x01, 10_000));
    body.push(0x00);
    let stream = [define(65, &WireType::Slice { name: String::new(), elem: 65 }), msg(&body)].concat();
    let err = Decoder::new().decode::<serde_json::Value>(&stream).unwrap_err();
    assert!(matches!(err, GobError::TooDeep(100)), "{err}");

    // Too many definitions.
    let limits = Limits { max_types: 2, ..Limits::default() };
    let t = |id| define(id, &WireType::Slice { name: String::new(), elem: INT });
    let stream = [t(65), t(66), t(67), msg(&[0x04, 0x00, 0x02])].concat();
    assert_eq!(Decoder::with_limits(limits).decode::<i64>(&stream).unwrap_err(), GobError::TooManyTypes(2));
}

#[test]
fn malformed_streams_are_clear_errors() {
    let slice = || define(65, &WireType::Slice { name: String::new(), elem: INT });
    let cases: Vec<(Vec<u8>, &str)> = vec![
        ([slice(), slice(), msg(&[0xff, 0x82, 0x00, 0x00])].concat(), "duplicate"),
        (
            [define(10, &WireType::Slice { name: String::new(), elem: INT }), msg(&[0x04, 0x00, 0x02])].concat(),
            "reserved",
        ),
        (msg(&[0xff, 0x82, 0x00, 0x00]), "not defined"),
        (msg(&[0x04, 0x02, 0x02]), "delta 2 before a singleton"),
        (msg(&[0x04, 0x00, 0x02, 0x07]), "unexpected bytes"),
        (msg(&[0x00, 0x00]), "type id 0"),
        (msg(&[0x10, 0x00, 0x02]), "input ended inside an interface value's type name"),
        // Field number 5 of a 1-field struct.
        (
            [
                define(
                    65,
                    &WireType::Struct { name: "S".into(), fields: vec![FieldType { name: "A".into(), id: INT }] },
                ),
                msg(&[0xff, 0x82, 0x06, 0x02, 0x00]),
            ]
            .concat(),
            "runs past the 1 fields of struct S",
        ),
    ];
    for (stream, want) in cases {
        let err = Decoder::new().decode::<serde_json::Value>(&stream).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?} ({stream:02x?})");
    }
    // Id 8 is interface: a nil one decodes as null; a non-nil one is refused.
    assert_eq!(decode::<serde_json::Value>(&msg(&[0x10, 0x00, 0x00])).unwrap(), serde_json::Value::Null);
    let err = decode::<serde_json::Value>(&msg(&[0x10, 0x00, 0x03, b'f', b'o', b'o'])).unwrap_err();
    assert!(err.to_string().contains("interface values are not supported"), "{err}");
}

#[test]
fn errors_name_the_field() {
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Wrong {
        #[serde(rename = "A")]
        a: String,
    }
    let err = decode::<Wrong>(&encode(&Args { a: 7, b: 8 })).unwrap_err();
    assert!(err.to_string().starts_with("field A: invalid type: integer `7`"), "{err}");
}

#[test]
fn a_value_that_does_not_fit_leaves_the_stream_usable() {
    let mut enc = Encoder::new();
    let mut stream = Vec::new();
    enc.encode(&Args { a: 1, b: 2 }, &mut stream).unwrap();
    enc.encode(&Args { a: 3, b: 4 }, &mut stream).unwrap();
    let mut dec = Decoder::new();
    let (body, used) = dec.next_value(&stream).unwrap().unwrap();
    assert!(dec.decode_value::<String>(body).is_err(), "a struct is not a string");
    assert!(matches!(dec.decode_value::<Args>(&stream[1..31]), Err(GobError::Corrupt(_))), "a definition is no value");
    let (args, rest) = dec.decode::<Args>(&stream[used..]).unwrap().unwrap();
    assert_eq!((args, used + rest), (Args { a: 3, b: 4 }, stream.len()));
}

#[test]
fn type_definitions_are_held_to_the_limits_from_their_first_bytes() {
    let huge = 16usize << 20;
    let head = |id: i64| {
        let mut out = Vec::new();
        put_uint(&mut out, huge as u64);
        put_int(&mut out, id);
        out
    };
    // A definition announcing 16 MiB (the limit for all of a stream's is
    // 4 MiB) is refused from its byte count and type id alone.
    let err = Decoder::new().take_value(&head(-65)).unwrap_err();
    assert!(err.to_string().contains("would pass the limit of 4194304 bytes"), "{err}");
    let err = Decoder::new().next_value(&head(-65)).unwrap_err();
    assert!(err.to_string().contains("would pass the limit of 4194304 bytes"), "{err}");
    // A value that large is within the message limit: it may come.
    let value = head(65);
    assert_eq!(
        Decoder::new().take_value(&value),
        Ok(Next::Incomplete { taken: 0, need: Some(value.len() - 2 + huge) })
    );
    // The byte count alone does not say what the message is.
    let count = &value[..value.len() - 2];
    assert_eq!(Decoder::new().take_value(count), Ok(Next::Incomplete { taken: 0, need: Some(count.len() + huge) }));

    // One type more than the limit: refused at its header; the whole
    // definitions before it were taken.
    let limits = Limits { max_types: 2, ..Limits::default() };
    let t = |id| define(id, &WireType::Slice { name: String::new(), elem: INT });
    let mut dec = Decoder::with_limits(limits);
    let two = [t(65), t(66)].concat();
    assert_eq!(dec.take_value(&two), Ok(Next::Incomplete { taken: two.len(), need: None }));
    let third = t(67);
    assert_eq!(dec.take_value(&third[..3]), Err(GobError::TooManyTypes(2)));
    // next_value, which takes nothing until the value is there, counts the
    // definitions it has buffered.
    let stream = [t(65), t(66), third[..3].to_vec()].concat();
    assert_eq!(Decoder::with_limits(limits).next_value(&stream), Err(GobError::TooManyTypes(2)));
}

#[test]
fn take_value_gives_what_next_value_gives() {
    let mut enc = Encoder::new();
    let mut stream = Vec::new();
    enc.encode(&Args { a: 1, b: 2 }, &mut stream).unwrap();
    enc.encode(&Args { a: 3, b: 4 }, &mut stream).unwrap();
    let (mut taken, mut next) = (Decoder::new(), Decoder::new());
    let (body, used) = next.next_value(&stream).unwrap().unwrap();
    assert_eq!(taken.take_value(&stream), Ok(Next::Value { body, used }));
    let (body, rest) = next.next_value(&stream[used..]).unwrap().unwrap();
    assert_eq!(taken.take_value(&stream[used..]), Ok(Next::Value { body, used: rest }));
    assert_eq!(taken.decode_value::<Args>(body).unwrap(), Args { a: 3, b: 4 });
}
