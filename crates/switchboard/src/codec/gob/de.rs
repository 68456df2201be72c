//! Decoding: serde `Deserializer`s driven by the received type definitions.
//!
//! [`ValueDe`] reads one value of a known type id from a message. Because the
//! wire type is known, it is self-describing (`deserialize_any` works, so
//! `serde_json::Value` is a fine target). Structs are presented as maps keyed
//! by field name, and every field the wire type declares is presented: the
//! ones the message left out (gob omits zero values) come from [`ZeroDe`], so
//! `#[derive(Deserialize)]` structs need no `#[serde(default)]`.

use std::cell::Cell;
use std::collections::HashMap;

use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, Visitor};
use serde::{forward_to_deserialize_any, Deserialize};

use super::types::{FieldType, Marshaler, TypeId, WireType, BOOL, BYTES, COMPLEX, FLOAT, INT, INTERFACE, STRING, UINT};
use super::wire::Reader;
use super::zero::{MissingDe, ZeroDe};
use super::{GobError, Limits};

/// What one decode needs besides the bytes: the stream's types and limits.
pub(crate) struct Ctx<'a> {
    pub(super) types: &'a HashMap<TypeId, WireType>,
    max_depth: usize,
    max_zero: usize,
    zero_left: Cell<usize>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(types: &'a HashMap<TypeId, WireType>, limits: &Limits) -> Self {
        Ctx {
            types,
            max_depth: limits.max_depth,
            max_zero: limits.max_zero_fill,
            zero_left: Cell::new(limits.max_zero_fill),
        }
    }

    pub(crate) fn is_struct(&self, id: TypeId) -> bool {
        matches!(self.types.get(&id), Some(WireType::Struct { .. }))
    }

    pub(super) fn kind(&self, id: TypeId) -> Result<Kind<'a>, GobError> {
        Ok(match id {
            BOOL => Kind::Bool,
            INT => Kind::Int,
            UINT => Kind::Uint,
            FLOAT => Kind::Float,
            BYTES => Kind::Bytes,
            STRING => Kind::Str,
            COMPLEX => Kind::Complex,
            INTERFACE => Kind::Interface,
            _ => match self.types.get(&id) {
                None => return Err(GobError::UnknownType(id)),
                Some(WireType::Array { elem, len, .. }) => Kind::Array(*elem, *len),
                Some(WireType::Slice { elem, .. }) => Kind::Slice(*elem),
                Some(WireType::Map { key, elem, .. }) => Kind::Map(*key, *elem),
                Some(WireType::Struct { name, fields }) => Kind::Struct(name, fields),
                Some(WireType::Marshaled { how, .. }) => Kind::Marshaled(*how),
            },
        })
    }

    pub(super) fn enter(&self, depth: usize) -> Result<usize, GobError> {
        if depth >= self.max_depth {
            return Err(GobError::TooDeep(self.max_depth));
        }
        Ok(depth + 1)
    }

    pub(super) fn charge_zero(&self) -> Result<(), GobError> {
        let left = self.zero_left.get();
        if left == 0 {
            return Err(GobError::ZeroFillBudget(self.max_zero));
        }
        self.zero_left.set(left - 1);
        Ok(())
    }
}

pub(super) enum Kind<'a> {
    Bool,
    Int,
    Uint,
    Float,
    Bytes,
    Str,
    Complex,
    Interface,
    Array(TypeId, usize),
    Slice(TypeId),
    Map(TypeId, TypeId),
    Struct(&'a str, &'a [FieldType]),
    Marshaled(Marshaler),
}

/// Presents `[]byte` as a sequence of `u8` (what `Vec<u8>` and generic
/// targets like `serde_json::Value` accept); targets that ask for bytes get
/// bytes instead.
pub(super) fn visit_byte_seq<'de, V: Visitor<'de>>(bytes: &[u8], visitor: V) -> Result<V::Value, GobError> {
    let mut seq = SeqDeserializer::<_, GobError>::new(bytes.iter().copied());
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

pub(super) fn not_all_read(what: &str, n: usize, left: usize) -> GobError {
    GobError::Custom(format!("the target type read {} of the {n} {what}", n - left))
}

/// Deserializes one value of type `id` from the reader.
pub(crate) struct ValueDe<'a, 'r, 'de> {
    pub(crate) r: &'r mut Reader<'de>,
    pub(crate) ctx: &'a Ctx<'a>,
    pub(crate) id: TypeId,
    pub(crate) depth: usize,
}

impl<'a, 'de> ValueDe<'a, '_, 'de> {
    fn seq<V: Visitor<'de>>(self, elem: TypeId, n: usize, visitor: V) -> Result<V::Value, GobError> {
        let depth = self.ctx.enter(self.depth)?;
        let mut access = SeqAccess { r: self.r, ctx: self.ctx, elem, left: n, depth };
        let value = visitor.visit_seq(&mut access)?;
        if access.left > 0 {
            return Err(not_all_read("elements", n, access.left));
        }
        Ok(value)
    }

    fn struct_value<V: Visitor<'de>>(
        self,
        name: &'a str,
        fields: &'a [FieldType],
        extra: Vec<&'static str>,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        let depth = self.ctx.enter(self.depth)?;
        let mut access = StructAccess {
            r: self.r,
            ctx: self.ctx,
            name,
            fields,
            extra,
            depth,
            next: 0,
            last: None,
            pending: None,
            done: false,
            current: None,
        };
        let value = visitor.visit_map(&mut access)?;
        access.finish()?;
        Ok(value)
    }

    fn interface<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let name = self.r.bytes("an interface value's type name")?;
        if name.is_empty() {
            return visitor.visit_none();
        }
        Err(GobError::unsupported(format!(
            "interface values are not supported (got one holding the registered type {:?})",
            String::from_utf8_lossy(name)
        )))
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'_, '_, 'de> {
    /// Gob is a binary format: `[]byte` travels as bytes, not as text
    /// (see [`crate::codec::gob::bytes`]).
    fn is_human_readable(&self) -> bool {
        false
    }

    type Error = GobError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Bool => visitor.visit_bool(self.r.uint("a bool")? != 0),
            Kind::Int => visitor.visit_i64(self.r.int("an int")?),
            Kind::Uint => visitor.visit_u64(self.r.uint("a uint")?),
            Kind::Float => visitor.visit_f64(self.r.float("a float")?),
            Kind::Str => {
                let b = self.r.bytes("a string")?;
                match std::str::from_utf8(b) {
                    Ok(s) => visitor.visit_borrowed_str(s),
                    Err(_) => visitor.visit_borrowed_bytes(b),
                }
            }
            Kind::Bytes => visit_byte_seq(self.r.bytes("a byte slice")?, visitor),
            Kind::Marshaled(how) => {
                let b = self.r.bytes("a self-marshaled value")?;
                match (how, std::str::from_utf8(b)) {
                    (Marshaler::Text, Ok(s)) => visitor.visit_borrowed_str(s),
                    _ => visitor.visit_borrowed_bytes(b),
                }
            }
            Kind::Complex => {
                let (re, im) = (self.r.float("a complex")?, self.r.float("a complex")?);
                let mut seq = SeqDeserializer::<_, GobError>::new([re, im].into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Kind::Interface => self.interface(visitor),
            Kind::Array(elem, len) => {
                let n = self.r.count("an array length", 1)?;
                if n != len {
                    return Err(GobError::Corrupt(format!("an array of {n} elements for a type of length {len}")));
                }
                self.seq(elem, n, visitor)
            }
            Kind::Slice(elem) => {
                let n = self.r.count("a slice length", 1)?;
                self.seq(elem, n, visitor)
            }
            Kind::Map(key, elem) => {
                let depth = self.ctx.enter(self.depth)?;
                let n = self.r.count("a map length", 2)?;
                let mut access = MapAccess { r: self.r, ctx: self.ctx, key, elem, left: n, depth };
                let value = visitor.visit_map(&mut access)?;
                if access.left > 0 {
                    return Err(not_all_read("map entries", n, access.left));
                }
                Ok(value)
            }
            Kind::Struct(name, fields) => self.struct_value(name, fields, Vec::new(), visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        target: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Struct(name, fields) => self.struct_value(name, fields, not_on_wire(target, fields), visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Interface => self.interface(visitor),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            // Go's struct{} (net/rpc's body of an error reply), or any struct.
            Kind::Struct(..) => {
                self.deserialize_ignored_any(IgnoredAny)?;
                visitor.visit_unit()
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Bytes | Kind::Str | Kind::Marshaled(_) => visitor.visit_borrowed_bytes(self.r.bytes("a byte slice")?),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Bytes | Kind::Marshaled(_) => {
                let b = self.r.bytes("a byte slice")?;
                match std::str::from_utf8(b) {
                    Ok(s) => visitor.visit_borrowed_str(s),
                    Err(_) => visitor.visit_borrowed_bytes(b),
                }
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Str => {
                let b = self.r.bytes("a string")?;
                let s = std::str::from_utf8(b)
                    .map_err(|_| GobError::Custom(format!("the variant name of enum {name} is not UTF-8")))?;
                visitor.visit_enum(BorrowedStrDeserializer::<GobError>::new(s))
            }
            _ => Err(GobError::unsupported(format!(
                "enum {name} is sent as a string holding the name of a unit variant; got a gob {}",
                describe(self.ctx, self.id)
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        if matches!(self.ctx.kind(self.id)?, Kind::Bytes) {
            // Skipped whole, not presented byte by byte (a payload check
            // walks every value it copies).
            self.r.bytes("a byte slice")?;
        } else {
            self.deserialize_any(IgnoredAny)?;
        }
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        tuple tuple_struct map identifier
    }
}

/// The fields of a target struct that its wire type does not have: the
/// sender's type may lack them (a Go decoder leaves such fields zero; so do
/// we, see [`MissingDe`]).
pub(super) fn not_on_wire(target: &'static [&'static str], wire: &[FieldType]) -> Vec<&'static str> {
    target.iter().copied().filter(|t| !wire.iter().any(|f| f.name == *t)).collect()
}

/// A short description of a type id for error messages.
pub(super) fn describe(ctx: &Ctx<'_>, id: TypeId) -> String {
    match super::types::builtin_name(id) {
        Some(name) => name.to_owned(),
        None => match ctx.types.get(&id) {
            Some(WireType::Struct { name, .. }) => format!("struct {name}"),
            Some(t) if !t.name().is_empty() => t.name().to_owned(),
            Some(WireType::Slice { .. }) => "slice".into(),
            Some(WireType::Array { .. }) => "array".into(),
            Some(WireType::Map { .. }) => "map".into(),
            _ => format!("type {id}"),
        },
    }
}

struct SeqAccess<'a, 'r, 'de> {
    r: &'r mut Reader<'de>,
    ctx: &'a Ctx<'a>,
    elem: TypeId,
    left: usize,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_, 'de> {
    type Error = GobError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(ValueDe { r: &mut *self.r, ctx: self.ctx, id: self.elem, depth: self.depth }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct MapAccess<'a, 'r, 'de> {
    r: &'r mut Reader<'de>,
    ctx: &'a Ctx<'a>,
    key: TypeId,
    elem: TypeId,
    left: usize,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_, 'de> {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(ValueDe { r: &mut *self.r, ctx: self.ctx, id: self.key, depth: self.depth }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        seed.deserialize(ValueDe { r: &mut *self.r, ctx: self.ctx, id: self.elem, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// Presents a struct value as a map over every field of its wire type, in
/// order (fields present in the message are read from it, the others are
/// zero values), then over the target's fields the wire type lacks.
struct StructAccess<'a, 'r, 'de> {
    r: &'r mut Reader<'de>,
    ctx: &'a Ctx<'a>,
    name: &'a str,
    fields: &'a [FieldType],
    /// Target fields not in the wire type, presented last, as zero values.
    extra: Vec<&'static str>,
    depth: usize,
    /// The next field to present.
    next: usize,
    /// The last field number read from the message.
    last: Option<usize>,
    /// A field number read from the message and not presented yet.
    pending: Option<usize>,
    /// The terminating zero delta has been read.
    done: bool,
    /// The field whose key was presented last.
    current: Option<Current>,
}

#[derive(Clone, Copy)]
enum Current {
    /// Wire field `index`, and whether the message holds it.
    Wire(usize, bool),
    /// A target field the wire type lacks.
    Extra(&'static str),
}

impl StructAccess<'_, '_, '_> {
    /// Reads the next field number, unless one is pending or the end is read.
    fn read_delta(&mut self) -> Result<(), GobError> {
        if self.pending.is_some() || self.done {
            return Ok(());
        }
        let delta = self.r.uint("a struct field number")?;
        if delta == 0 {
            self.done = true;
            return Ok(());
        }
        // Field numbers start at -1 (`last == None`); deltas are at least 1.
        let field = usize::try_from(delta).ok().and_then(|d| match self.last {
            None => Some(d - 1),
            Some(last) => last.checked_add(d),
        });
        match field.filter(|&f| f < self.fields.len()) {
            Some(f) => {
                self.last = Some(f);
                self.pending = Some(f);
                Ok(())
            }
            None => Err(GobError::Corrupt(format!(
                "field number delta {delta} runs past the {} fields of struct {}",
                self.fields.len(),
                self.name
            ))),
        }
    }

    fn finish(&mut self) -> Result<(), GobError> {
        if self.next < self.fields.len() || self.current.is_some() {
            return Err(GobError::Custom(format!(
                "the target type stopped reading struct {} at field {} of {}",
                self.name,
                self.next,
                self.fields.len()
            )));
        }
        self.read_delta()?;
        if !self.done {
            return Err(GobError::Corrupt(format!("struct {} has more fields than its type", self.name)));
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for StructAccess<'_, '_, 'de> {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        self.read_delta()?;
        let i = self.next;
        let Some(field) = self.fields.get(i) else {
            if !self.done {
                return Err(GobError::Corrupt(format!("struct {} has more fields than its type", self.name)));
            }
            if self.extra.is_empty() {
                return Ok(None);
            }
            let name = self.extra.remove(0);
            self.current = Some(Current::Extra(name));
            return seed.deserialize(StrDeserializer::<GobError>::new(name)).map(Some);
        };
        self.next += 1;
        let present = self.pending == Some(i);
        if present {
            self.pending = None;
        }
        self.current = Some(Current::Wire(i, present));
        seed.deserialize(StrDeserializer::<GobError>::new(&field.name)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        let current = self.current.take().ok_or_else(|| GobError::Custom("value asked for before its key".into()))?;
        let (i, present) = match current {
            Current::Wire(i, present) => (i, present),
            Current::Extra(name) => {
                return seed.deserialize(MissingDe { ctx: self.ctx, depth: self.depth }).map_err(|e| e.in_field(name))
            }
        };
        let Some(field) = self.fields.get(i) else { return Err(GobError::Custom("no such field".into())) };
        let result = if present {
            seed.deserialize(ValueDe { r: &mut *self.r, ctx: self.ctx, id: field.id, depth: self.depth })
        } else {
            seed.deserialize(ZeroDe { ctx: self.ctx, id: field.id, depth: self.depth })
        };
        result.map_err(|e| e.in_field(&field.name))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next.min(self.fields.len()) + self.extra.len())
    }
}

/// Deserializes a top-level value of type `id` from `r`: a struct as is, any
/// other type as a singleton (a zero field delta, then the value).
pub(crate) fn top_level<'de, T: Deserialize<'de>>(
    ctx: &Ctx<'_>,
    id: TypeId,
    r: &mut Reader<'de>,
) -> Result<T, GobError> {
    if !ctx.is_struct(id) {
        let delta = r.uint("a singleton's field delta")?;
        if delta != 0 {
            return Err(GobError::Corrupt(format!("field delta {delta} before a singleton value (must be 0)")));
        }
    }
    T::deserialize(ValueDe { r, ctx, id, depth: 0 })
}
