//! The untyped bridge: JSON values in and out of gob, for callers that have
//! no Rust type for a Go method's argument or reply (the CLI's
//! `switchboard call --protocol go-gob Arith.Multiply '{"A":7,"B":8}'`).
//!
//! A JSON object handed to [`Encoder::encode`] is a serde map, which gob
//! sends as a Go map; a Go method taking a struct cannot decode a map. So an
//! untyped caller must say "struct": [`Encoder::encode_json`] sends every
//! JSON object as a gob struct.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::ser::Val;
use super::shape::shape_of;
use super::{Decoder, Encoder, GobError};

impl Encoder {
    /// Encodes a JSON value as the Go value it describes: objects become
    /// structs (the top-level one named `name`, nested ones after their
    /// key), integral numbers `int64` (above `i64::MAX`, `uint64`), other
    /// numbers `float64` (an array mixing both is all `float64`), arrays
    /// slices of one element type, strings, bools; `null` is a zero field,
    /// left out. Go matches struct fields by name and ignores fields it does
    /// not have, so `{"A":7,"B":8}` can be decoded into Go's `Args{A, B int}`.
    ///
    /// JSON cannot say everything a Go type can, and Go's decoder refuses a
    /// field of the wrong kind (it does not convert): write `2.0`, not `2`,
    /// for a `float64` field; a Go array (`[3]int`) or map field cannot be
    /// filled from JSON (arrays become slices, objects structs); nor can an
    /// unsigned field from a number below 2^63. Callers with a Rust type use
    /// [`Encoder::encode`] instead.
    ///
    /// ```
    /// use switchboard::codec::gob::{Decoder, Encoder};
    ///
    /// let mut out = Vec::new();
    /// Encoder::new().encode_json("Args", &serde_json::json!({"A": 7, "B": 8}), &mut out).unwrap();
    /// // Byte for byte what Go's encoder writes for Args{A: 7, B: 8}.
    /// assert_eq!(out.len(), 39);
    /// let (back, _) = Decoder::new().decode::<serde_json::Value>(&out).unwrap().unwrap();
    /// assert_eq!(back, serde_json::json!({"A": 7, "B": 8}));
    /// ```
    pub fn encode_json(&mut self, name: &str, value: &Value, out: &mut Vec<u8>) -> Result<(), GobError> {
        let val = json_to_val(name, value, false);
        let shape = shape_of(&val)?;
        self.encode_val(&val, shape, out)
    }

    /// [`encode_json`](Self::encode_json) for a JSON object: always a struct.
    pub fn encode_json_as_struct(
        &mut self,
        name: &str,
        fields: &Map<String, Value>,
        out: &mut Vec<u8>,
    ) -> Result<(), GobError> {
        let val = object_to_val(name, fields);
        let shape = shape_of(&val)?;
        self.encode_val(&val, shape, out)
    }
}

fn object_to_val(name: &str, fields: &Map<String, Value>) -> Val {
    Val::Struct(name.to_owned(), fields.iter().map(|(k, v)| (k.clone(), json_to_val(k, v, false))).collect())
}

fn json_to_val(name: &str, value: &Value, as_float: bool) -> Val {
    match value {
        Value::Null => Val::Nil,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => number_to_val(n, as_float),
        Value::String(s) => Val::Str(s.clone()),
        Value::Array(items) => {
            let floats = items.iter().any(|v| matches!(v, Value::Number(n) if n.is_f64()));
            Val::Seq(items.iter().map(|v| json_to_val(name, v, floats)).collect())
        }
        Value::Object(fields) => object_to_val(name, fields),
    }
}

fn number_to_val(n: &Number, as_float: bool) -> Val {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if !as_float => Val::Int(i, "int64"),
        (None, Some(u)) if !as_float => Val::Uint(u, "uint64"),
        _ => Val::Float(n.as_f64().unwrap_or(f64::NAN), "float64"),
    }
}

impl Decoder {
    /// [`decode`](Self::decode) into a JSON value, converting what JSON
    /// cannot hold the way Go's `encoding/json` does: map keys that are not
    /// strings become strings (`map[int]string{1: "a"}` is `{"1":"a"}`).
    /// Structs are objects with every field of their type (omitted ones as
    /// zero values), `[]byte` an array of numbers, a nil interface `null`.
    pub fn decode_json(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, GobError> {
        Ok(self.decode::<GoJson>(buf)?.map(|(v, used)| (v.0, used)))
    }
}

/// A JSON value deserialized with Go's key rules.
struct GoJson(Value);

impl<'de> Deserialize<'de> for GoJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GoJsonVisitor).map(GoJson)
    }
}

struct GoJsonVisitor;

impl<'de> Visitor<'de> for GoJsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a gob value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // NaN and the infinities have no JSON form: null, as serde_json does.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(v.iter().map(|&b| b.into()).collect()))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(GoJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(KeyString(k)) = map.next_key()? {
            let GoJson(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// A map key as Go's `encoding/json` writes it: strings as they are,
/// numbers and bools in decimal.
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(GoJsonVisitor)? {
            Value::String(s) => Ok(KeyString(s)),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok(KeyString(v.to_string())),
            other => Err(de::Error::custom(format!("a map key JSON cannot hold: {other}"))),
        }
    }
}
