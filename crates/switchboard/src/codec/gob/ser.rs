//! Step one of encoding: a serde `Serializer` that turns any `Serialize`
//! value into a [`Val`] tree. Gob sends a value's type before the value, and
//! serde only reveals types by serializing values, so the encoder needs the
//! whole value in hand before it writes a byte.

use serde::ser::{self, Serialize};

use super::GobError;

/// A value about to be encoded, with the Go type names of its numbers (they
/// name composite types such as `[]int32`; gob itself sends every signed
/// integer as "int").
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    /// `None` (a nil pointer in Go): no value and no type. Left out of
    /// structs; an error where gob needs a value.
    Nil,
    Bool(bool),
    Int(i64, &'static str),
    Uint(u64, &'static str),
    Float(f64, &'static str),
    Str(String),
    Bytes(Vec<u8>),
    /// A slice: any length.
    Seq(Vec<Val>),
    /// A tuple or fixed-size array: a gob array, its length part of its type.
    Array(Vec<Val>),
    Map(Vec<(Val, Val)>),
    /// A struct: its name and its fields in declaration order.
    Struct(String, Vec<(String, Val)>),
}

/// Serializes into a [`Val`].
pub(crate) struct ValSerializer;

/// Most containers announce their length; trust it only so far when
/// reserving.
fn capacity(len: Option<usize>) -> usize {
    len.unwrap_or(0).min(4096)
}

fn no_sum_types(name: &str, variant: &str) -> GobError {
    GobError::unsupported(format!(
        "enum variant {name}::{variant} carries data, and gob has no sum types (only unit variants are \
         supported, sent as their name)"
    ))
}

impl ser::Serializer for ValSerializer {
    /// Gob is a binary format: `[]byte` travels as bytes, not as text
    /// (see [`crate::codec::gob::bytes`]).
    fn is_human_readable(&self) -> bool {
        false
    }

    type Ok = Val;
    type Error = GobError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = ser::Impossible<Val, GobError>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = ser::Impossible<Val, GobError>;

    fn serialize_bool(self, v: bool) -> Result<Val, GobError> {
        Ok(Val::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Val, GobError> {
        Ok(Val::Int(v.into(), "int8"))
    }
    fn serialize_i16(self, v: i16) -> Result<Val, GobError> {
        Ok(Val::Int(v.into(), "int16"))
    }
    fn serialize_i32(self, v: i32) -> Result<Val, GobError> {
        Ok(Val::Int(v.into(), "int32"))
    }
    fn serialize_i64(self, v: i64) -> Result<Val, GobError> {
        Ok(Val::Int(v, "int64"))
    }
    fn serialize_i128(self, v: i128) -> Result<Val, GobError> {
        let v =
            i64::try_from(v).map_err(|_| GobError::unsupported(format!("{v} does not fit in a gob int (64 bits)")))?;
        Ok(Val::Int(v, "int64"))
    }
    fn serialize_u8(self, v: u8) -> Result<Val, GobError> {
        Ok(Val::Uint(v.into(), "uint8"))
    }
    fn serialize_u16(self, v: u16) -> Result<Val, GobError> {
        Ok(Val::Uint(v.into(), "uint16"))
    }
    fn serialize_u32(self, v: u32) -> Result<Val, GobError> {
        Ok(Val::Uint(v.into(), "uint32"))
    }
    fn serialize_u64(self, v: u64) -> Result<Val, GobError> {
        Ok(Val::Uint(v, "uint64"))
    }
    fn serialize_u128(self, v: u128) -> Result<Val, GobError> {
        let v =
            u64::try_from(v).map_err(|_| GobError::unsupported(format!("{v} does not fit in a gob uint (64 bits)")))?;
        Ok(Val::Uint(v, "uint64"))
    }
    fn serialize_f32(self, v: f32) -> Result<Val, GobError> {
        Ok(Val::Float(v.into(), "float32"))
    }
    fn serialize_f64(self, v: f64) -> Result<Val, GobError> {
        Ok(Val::Float(v, "float64"))
    }
    fn serialize_char(self, v: char) -> Result<Val, GobError> {
        Ok(Val::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Val, GobError> {
        Ok(Val::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Val, GobError> {
        Ok(Val::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Val, GobError> {
        Ok(Val::Nil)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Val, GobError> {
        // Gob flattens pointers: Some(x) is sent as x.
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Val, GobError> {
        // Go's struct{}: what net/rpc itself sends as the body of an error reply.
        Ok(Val::Struct(String::new(), Vec::new()))
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Val, GobError> {
        Ok(Val::Struct(name.to_owned(), Vec::new()))
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result<Val, GobError> {
        Ok(Val::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<Val, GobError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<Val, GobError> {
        Err(no_sum_types(name, variant))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, GobError> {
        Ok(SeqBuilder { items: Vec::with_capacity(capacity(len)), array: false })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, GobError> {
        Ok(SeqBuilder { items: Vec::with_capacity(capacity(Some(len))), array: true })
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqBuilder, GobError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, GobError> {
        Err(no_sum_types(name, variant))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, GobError> {
        Ok(MapBuilder { entries: Vec::with_capacity(capacity(len)), key: None })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructBuilder, GobError> {
        Ok(StructBuilder { name, fields: Vec::with_capacity(capacity(Some(len))) })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, GobError> {
        Err(no_sum_types(name, variant))
    }
}

pub(crate) struct SeqBuilder {
    items: Vec<Val>,
    array: bool,
}

impl SeqBuilder {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), GobError> {
        self.items.push(value.serialize(ValSerializer)?);
        Ok(())
    }
    fn finish(self) -> Val {
        if self.array {
            Val::Array(self.items)
        } else {
            Val::Seq(self.items)
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Val;
    type Error = GobError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Val, GobError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Val;
    type Error = GobError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Val, GobError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Val;
    type Error = GobError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Val, GobError> {
        Ok(self.finish())
    }
}

pub(crate) struct MapBuilder {
    entries: Vec<(Val, Val)>,
    key: Option<Val>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Val;
    type Error = GobError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), GobError> {
        self.key = Some(key.serialize(ValSerializer)?);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), GobError> {
        let key = self.key.take().ok_or_else(|| GobError::Custom("map value serialized before its key".into()))?;
        self.entries.push((key, value.serialize(ValSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Val, GobError> {
        Ok(Val::Map(self.entries))
    }
}

pub(crate) struct StructBuilder {
    name: &'static str,
    fields: Vec<(String, Val)>,
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Val;
    type Error = GobError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), GobError> {
        let value = value.serialize(ValSerializer).map_err(|e| e.in_field(key))?;
        self.fields.push((key.to_owned(), value));
        Ok(())
    }
    fn end(self) -> Result<Val, GobError> {
        Ok(Val::Struct(self.name.to_owned(), self.fields))
    }
}
