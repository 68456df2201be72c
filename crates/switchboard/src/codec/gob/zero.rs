//! Zero values, for what the message does not hold.
//!
//! Gob leaves zero-valued fields out of a struct value, and a sender's type
//! may lack fields the receiver's type has; a Go receiver simply leaves those
//! fields zero. serde targets need a value for every field, so:
//!
//! - [`ZeroDe`] gives the zero value of a wire type, for fields the wire type
//!   declares but the message left out;
//! - [`MissingDe`] gives a zero value shaped by what the target asks for, for
//!   target fields the wire type does not declare at all.
//!
//! Both draw on the decode's zero-fill budget, so a hostile type (an array
//! type of length 2^40, say) cannot make the decoder produce values forever.

use serde::de::value::{MapDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, Visitor};
use serde::forward_to_deserialize_any;

use super::de::{describe, not_all_read, not_on_wire, visit_byte_seq, Ctx, Kind};
use super::types::{FieldType, Marshaler, TypeId};
use super::GobError;

fn empty_map<'de, V: Visitor<'de>>(visitor: V) -> Result<V::Value, GobError> {
    let mut map = MapDeserializer::<_, GobError>::new(std::iter::empty::<(u8, u8)>());
    let value = visitor.visit_map(&mut map)?;
    map.end()?;
    Ok(value)
}

/// Deserializes the zero value of a type: what a field the message left out
/// holds. `Option` targets get `None`.
pub(super) struct ZeroDe<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) id: TypeId,
    pub(super) depth: usize,
}

impl<'de> de::Deserializer<'de> for ZeroDe<'_> {
    /// Gob is a binary format: `[]byte` travels as bytes, not as text
    /// (see [`crate::codec::gob::bytes`]).
    fn is_human_readable(&self) -> bool {
        false
    }

    type Error = GobError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        match self.ctx.kind(self.id)? {
            Kind::Bool => visitor.visit_bool(false),
            Kind::Int => visitor.visit_i64(0),
            Kind::Uint => visitor.visit_u64(0),
            Kind::Float => visitor.visit_f64(0.0),
            Kind::Str | Kind::Marshaled(Marshaler::Text) => visitor.visit_str(""),
            Kind::Marshaled(_) => visitor.visit_bytes(&[]),
            Kind::Bytes | Kind::Slice(_) => visit_byte_seq(&[], visitor),
            Kind::Complex => {
                let mut seq = SeqDeserializer::<_, GobError>::new([0.0f64, 0.0].into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Kind::Interface => visitor.visit_none(),
            Kind::Map(..) => empty_map(visitor),
            Kind::Array(elem, len) => {
                let depth = self.ctx.enter(self.depth)?;
                let mut access = ZeroSeq { ctx: self.ctx, elem, left: len, depth };
                let value = visitor.visit_seq(&mut access)?;
                if access.left > 0 {
                    return Err(not_all_read("array elements", len, access.left));
                }
                Ok(value)
            }
            Kind::Struct(_, fields) => {
                let depth = self.ctx.enter(self.depth)?;
                visitor.visit_map(ZeroStruct { ctx: self.ctx, fields, next: 0, extra: Vec::new(), depth })
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        target: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Struct(_, fields) => {
                self.ctx.charge_zero()?;
                let depth = self.ctx.enter(self.depth)?;
                let extra = not_on_wire(target, fields);
                visitor.visit_map(ZeroStruct { ctx: self.ctx, fields, next: 0, extra, depth })
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_none()
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Bytes | Kind::Str | Kind::Marshaled(_) => visitor.visit_bytes(&[]),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        match self.ctx.kind(self.id)? {
            Kind::Bytes | Kind::Marshaled(_) => visitor.visit_str(""),
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
            Kind::Str => visitor.visit_enum(StrDeserializer::<GobError>::new("")),
            _ => Err(GobError::unsupported(format!(
                "enum {name} is sent as a string holding the name of a unit variant; got a gob {}",
                describe(self.ctx, self.id)
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        seq tuple tuple_struct map identifier
    }
}

struct ZeroSeq<'a> {
    ctx: &'a Ctx<'a>,
    elem: TypeId,
    left: usize,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for ZeroSeq<'_> {
    type Error = GobError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(ZeroDe { ctx: self.ctx, id: self.elem, depth: self.depth }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(4096))
    }
}

/// The zero value of a struct type: every wire field zero, then the
/// target's fields the wire type lacks.
struct ZeroStruct<'a> {
    ctx: &'a Ctx<'a>,
    fields: &'a [FieldType],
    next: usize,
    extra: Vec<&'static str>,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for ZeroStruct<'_> {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        match self.fields.get(self.next) {
            Some(field) => seed.deserialize(StrDeserializer::<GobError>::new(&field.name)).map(Some),
            None => match self.extra.get(self.next - self.fields.len()) {
                Some(name) => seed.deserialize(StrDeserializer::<GobError>::new(name)).map(Some),
                None => Ok(None),
            },
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        let Some(field) = self.fields.get(self.next) else {
            let name = self.extra.get(self.next - self.fields.len()).copied().unwrap_or_default();
            self.next += 1;
            return seed.deserialize(MissingDe { ctx: self.ctx, depth: self.depth }).map_err(|e| e.in_field(name));
        };
        self.next += 1;
        seed.deserialize(ZeroDe { ctx: self.ctx, id: field.id, depth: self.depth }).map_err(|e| e.in_field(&field.name))
    }
}

/// The zero value of a target field the wire type does not declare: its
/// type is known only from what the target asks for (`deserialize_i64` gets
/// 0, `deserialize_struct` a struct of zero fields, `deserialize_option`
/// `None`, ...). A target that asks for "anything" gets unit (JSON null).
pub(super) struct MissingDe<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) depth: usize,
}

impl<'de> de::Deserializer<'de> for MissingDe<'_> {
    /// Gob is a binary format: `[]byte` travels as bytes, not as text
    /// (see [`crate::codec::gob::bytes`]).
    fn is_human_readable(&self) -> bool {
        false
    }

    type Error = GobError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_unit()
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_bool(false)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_i64(0)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_i64(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_u64(0)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_f64(0.0)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_char('\0')
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visitor.visit_bytes(&[])
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_none()
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        visit_byte_seq(&[], visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        let depth = self.ctx.enter(self.depth)?;
        let mut access = MissingSeq { ctx: self.ctx, left: len, depth };
        let value = visitor.visit_seq(&mut access)?;
        if access.left > 0 {
            return Err(not_all_read("tuple elements", len, access.left));
        }
        Ok(value)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        empty_map(visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        self.ctx.charge_zero()?;
        let depth = self.ctx.enter(self.depth)?;
        visitor.visit_map(ZeroStruct { ctx: self.ctx, fields: &[], next: 0, extra: fields.to_vec(), depth })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, GobError> {
        Err(GobError::Custom(format!(
            "the sender's type has no such field, and enum {name} has no zero value to fill in"
        )))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }
}

struct MissingSeq<'a> {
    ctx: &'a Ctx<'a>,
    left: usize,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for MissingSeq<'_> {
    type Error = GobError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(MissingDe { ctx: self.ctx, depth: self.depth }).map(Some)
    }
}
