//! Type ids and type definitions (gob's `wireType`), read and written.
//!
//! A type definition is itself a gob struct value of the predefined type
//! `wireType`, whose fields are pointers to `arrayType`, `sliceType`,
//! `structType`, `mapType` or one of three "encoder" types; exactly one is
//! set. Each of those starts with an embedded `CommonType{Name, Id}`.

use super::wire::{put_bytes, put_int, put_uint, Reader};
use super::GobError;

/// A gob type id as it appears on the wire (Go's `typeId` is an `int32`, sent
/// as a signed integer).
pub(crate) type TypeId = i64;

pub(crate) const BOOL: TypeId = 1;
pub(crate) const INT: TypeId = 2;
pub(crate) const UINT: TypeId = 3;
pub(crate) const FLOAT: TypeId = 4;
pub(crate) const BYTES: TypeId = 5;
pub(crate) const STRING: TypeId = 6;
pub(crate) const COMPLEX: TypeId = 7;
pub(crate) const INTERFACE: TypeId = 8;
/// The lowest id a stream may define (Go's `firstUserId`). Go's own encoder
/// starts at 65.
pub(crate) const FIRST_USER_ID: TypeId = 64;

/// One field of a struct type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FieldType {
    pub(crate) name: String,
    pub(crate) id: TypeId,
}

/// Which method a Go type used to encode itself as opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Marshaler {
    /// `GobEncoder`
    Gob,
    /// `encoding.BinaryMarshaler`
    Binary,
    /// `encoding.TextMarshaler`
    Text,
}

/// A received or sent type definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum WireType {
    Array {
        name: String,
        elem: TypeId,
        len: usize,
    },
    Slice {
        name: String,
        elem: TypeId,
    },
    Struct {
        name: String,
        fields: Vec<FieldType>,
    },
    Map {
        name: String,
        key: TypeId,
        elem: TypeId,
    },
    /// A type that encoded itself (`time.Time`, `big.Int`, ...): its value is
    /// a byte count and opaque bytes.
    Marshaled {
        name: String,
        how: Marshaler,
    },
}

impl WireType {
    pub(crate) fn name(&self) -> &str {
        match self {
            WireType::Array { name, .. }
            | WireType::Slice { name, .. }
            | WireType::Struct { name, .. }
            | WireType::Map { name, .. }
            | WireType::Marshaled { name, .. } => name,
        }
    }
}

/// The name of a predefined type id, if it is one.
pub(crate) fn builtin_name(id: TypeId) -> Option<&'static str> {
    Some(match id {
        BOOL => "bool",
        INT => "int",
        UINT => "uint",
        FLOAT => "float",
        BYTES => "[]byte",
        STRING => "string",
        COMPLEX => "complex",
        INTERFACE => "interface",
        _ => return None,
    })
}

/// Walks the fields of a gob struct value: calls `f` with each field number
/// present, in order, until the terminating zero delta. Field numbers above
/// `last_field` are an error.
fn read_fields<'de>(
    r: &mut Reader<'de>,
    what: &'static str,
    last_field: i64,
    mut f: impl FnMut(&mut Reader<'de>, i64) -> Result<(), GobError>,
) -> Result<(), GobError> {
    let mut field: i64 = -1;
    loop {
        let delta = r.uint(what)?;
        if delta == 0 {
            return Ok(());
        }
        field = i64::try_from(delta).ok().and_then(|d| field.checked_add(d)).unwrap_or(i64::MAX);
        if field > last_field {
            return Err(GobError::BadTypeDef(format!("{what} has no field number {field}")));
        }
        f(r, field)?;
    }
}

fn read_name(r: &mut Reader<'_>) -> Result<String, GobError> {
    Ok(String::from_utf8_lossy(r.bytes("a type name")?).into_owned())
}

fn read_type_id(r: &mut Reader<'_>, what: &'static str) -> Result<TypeId, GobError> {
    let id = r.int(what)?;
    if id <= 0 || id > i64::from(i32::MAX) {
        return Err(GobError::BadTypeDef(format!("{what} is {id}, not a type id")));
    }
    Ok(id)
}

/// Reads `CommonType{Name string; Id typeId}` and returns the name.
fn read_common(r: &mut Reader<'_>) -> Result<String, GobError> {
    let mut name = String::new();
    read_fields(r, "CommonType", 1, |r, field| {
        match field {
            0 => name = read_name(r)?,
            _ => {
                // The id is repeated inside the type; like Go, the id of the
                // definition message is the one that counts.
                r.int("CommonType.Id")?;
            }
        }
        Ok(())
    })?;
    Ok(name)
}

/// Reads one encoded `wireType` value (the body of a type definition message
/// after the negative type id).
pub(crate) fn read_wire_type(r: &mut Reader<'_>) -> Result<WireType, GobError> {
    let mut found: Option<WireType> = None;
    read_fields(r, "wireType", 6, |r, field| {
        let t = match field {
            0 => read_array(r)?,
            1 => read_slice(r)?,
            2 => read_struct(r)?,
            3 => read_map(r)?,
            n => {
                let how = match n {
                    4 => Marshaler::Gob,
                    5 => Marshaler::Binary,
                    _ => Marshaler::Text,
                };
                let mut name = String::new();
                read_fields(r, "gobEncoderType", 0, |r, _| {
                    name = read_common(r)?;
                    Ok(())
                })?;
                WireType::Marshaled { name, how }
            }
        };
        if found.replace(t).is_some() {
            return Err(GobError::BadTypeDef("wireType describes more than one kind of type".into()));
        }
        Ok(())
    })?;
    found.ok_or_else(|| GobError::BadTypeDef("wireType describes no type".into()))
}

fn read_array(r: &mut Reader<'_>) -> Result<WireType, GobError> {
    let (mut name, mut elem, mut len) = (String::new(), None, 0i64);
    read_fields(r, "arrayType", 2, |r, field| {
        match field {
            0 => name = read_common(r)?,
            1 => elem = Some(read_type_id(r, "arrayType.Elem")?),
            _ => len = r.int("arrayType.Len")?,
        }
        Ok(())
    })?;
    let elem = elem.ok_or_else(|| GobError::BadTypeDef(format!("array type {name:?} has no element type")))?;
    let len =
        usize::try_from(len).map_err(|_| GobError::BadTypeDef(format!("array type {name:?} has length {len}")))?;
    Ok(WireType::Array { name, elem, len })
}

fn read_slice(r: &mut Reader<'_>) -> Result<WireType, GobError> {
    let (mut name, mut elem) = (String::new(), None);
    read_fields(r, "sliceType", 1, |r, field| {
        match field {
            0 => name = read_common(r)?,
            _ => elem = Some(read_type_id(r, "sliceType.Elem")?),
        }
        Ok(())
    })?;
    let elem = elem.ok_or_else(|| GobError::BadTypeDef(format!("slice type {name:?} has no element type")))?;
    Ok(WireType::Slice { name, elem })
}

fn read_map(r: &mut Reader<'_>) -> Result<WireType, GobError> {
    let (mut name, mut key, mut elem) = (String::new(), None, None);
    read_fields(r, "mapType", 2, |r, field| {
        match field {
            0 => name = read_common(r)?,
            1 => key = Some(read_type_id(r, "mapType.Key")?),
            _ => elem = Some(read_type_id(r, "mapType.Elem")?),
        }
        Ok(())
    })?;
    match (key, elem) {
        (Some(key), Some(elem)) => Ok(WireType::Map { name, key, elem }),
        _ => Err(GobError::BadTypeDef(format!("map type {name:?} lacks its key or element type"))),
    }
}

fn read_struct(r: &mut Reader<'_>) -> Result<WireType, GobError> {
    let (mut name, mut fields) = (String::new(), Vec::new());
    read_fields(r, "structType", 1, |r, field| {
        match field {
            0 => name = read_common(r)?,
            _ => {
                // Every fieldType takes at least its terminating byte.
                let n = r.count("structType.Field count", 1)?;
                fields = Vec::with_capacity(n);
                for _ in 0..n {
                    let (mut fname, mut id) = (String::new(), None);
                    read_fields(r, "fieldType", 1, |r, field| {
                        match field {
                            0 => fname = read_name(r)?,
                            _ => id = Some(read_type_id(r, "fieldType.Id")?),
                        }
                        Ok(())
                    })?;
                    let id = id.ok_or_else(|| GobError::BadTypeDef(format!("field {fname:?} has no type")))?;
                    fields.push(FieldType { name: fname, id });
                }
            }
        }
        Ok(())
    })?;
    Ok(WireType::Struct { name, fields })
}

/// Writes the fields of a gob struct value with delta-encoded field numbers.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    last: i64,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Fields { out, last: -1 }
    }

    fn field(&mut self, n: i64) -> &mut Vec<u8> {
        put_uint(self.out, (n - self.last) as u64);
        self.last = n;
        self.out
    }

    fn end(self) {
        self.out.push(0);
    }
}

/// Writes `CommonType{Name, Id}` as field 0 of the enclosing struct; like Go,
/// an empty name is a zero field and is left out.
fn put_common(f: &mut Fields<'_>, name: &str, id: TypeId) {
    let mut common = Fields::new(f.field(0));
    if !name.is_empty() {
        put_bytes(common.field(0), name.as_bytes());
    }
    put_int(common.field(1), id);
    common.end();
}

/// Appends the encoded `wireType` value describing `t` (type id `id`),
/// byte for byte as Go's encoder writes it.
pub(crate) fn put_wire_type(out: &mut Vec<u8>, id: TypeId, t: &WireType) {
    let mut wire = Fields::new(out);
    match t {
        WireType::Array { name, elem, len } => {
            let mut a = Fields::new(wire.field(0));
            put_common(&mut a, name, id);
            put_int(a.field(1), *elem);
            if *len != 0 {
                put_int(a.field(2), *len as i64);
            }
            a.end();
        }
        WireType::Slice { name, elem } => {
            let mut s = Fields::new(wire.field(1));
            put_common(&mut s, name, id);
            put_int(s.field(1), *elem);
            s.end();
        }
        WireType::Struct { name, fields } => {
            let mut s = Fields::new(wire.field(2));
            put_common(&mut s, name, id);
            if !fields.is_empty() {
                let out = s.field(1);
                put_uint(out, fields.len() as u64);
                for field in fields {
                    let mut ft = Fields::new(out);
                    if !field.name.is_empty() {
                        put_bytes(ft.field(0), field.name.as_bytes());
                    }
                    put_int(ft.field(1), field.id);
                    ft.end();
                }
            }
            s.end();
        }
        WireType::Map { name, key, elem } => {
            let mut m = Fields::new(wire.field(3));
            put_common(&mut m, name, id);
            put_int(m.field(1), *key);
            put_int(m.field(2), *elem);
            m.end();
        }
        WireType::Marshaled { name, how } => {
            let n = match how {
                Marshaler::Gob => 4,
                Marshaler::Binary => 5,
                Marshaler::Text => 6,
            };
            let mut g = Fields::new(wire.field(n));
            put_common(&mut g, name, id);
            g.end();
        }
    }
    wire.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Point` definition worked through in the encoding/gob sources.
    #[test]
    fn point_definition_matches_go() {
        let point = WireType::Struct {
            name: "Point".into(),
            fields: vec![FieldType { name: "X".into(), id: INT }, FieldType { name: "Y".into(), id: INT }],
        };
        let mut out = Vec::new();
        put_wire_type(&mut out, 65, &point);
        let go = [
            0x03, 0x01, 0x01, 0x05, 0x50, 0x6f, 0x69, 0x6e, 0x74, 0x01, 0xff, 0x82, 0x00, 0x01, 0x02, 0x01, 0x01, 0x58,
            0x01, 0x04, 0x00, 0x01, 0x01, 0x59, 0x01, 0x04, 0x00, 0x00, 0x00,
        ];
        assert_eq!(out, go);
        assert_eq!(read_wire_type(&mut Reader::new(&go)), Ok(point));
    }

    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            WireType::Array { name: "[3]int32".into(), elem: INT, len: 3 },
            WireType::Array { name: String::new(), elem: 70, len: 0 },
            WireType::Slice { name: "[]string".into(), elem: STRING },
            WireType::Struct { name: String::new(), fields: Vec::new() },
            WireType::Map { name: "map[string]int64".into(), key: STRING, elem: INT },
            WireType::Marshaled { name: "Time".into(), how: Marshaler::Binary },
        ];
        for t in kinds {
            let mut out = Vec::new();
            put_wire_type(&mut out, 66, &t);
            let mut r = Reader::new(&out);
            assert_eq!(read_wire_type(&mut r), Ok(t));
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn malformed_definitions_are_errors() {
        // No kind at all; two kinds; an unknown wireType field; a negative length.
        let cases: [&[u8]; 4] = [
            &[0x00],
            &[0x02, 0x02, 0x04, 0x00, 0x01, 0x00, 0x00],
            &[0x08, 0x00],
            &[0x01, 0x02, 0x04, 0x01, 0x03, 0x00, 0x00],
        ];
        for bytes in cases {
            assert!(read_wire_type(&mut Reader::new(bytes)).is_err(), "{bytes:02x?}");
        }
    }
}
