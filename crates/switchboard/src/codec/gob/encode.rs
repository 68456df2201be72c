//! [`Encoder`]: one sending side of a gob stream.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::Serialize;

use super::ser::{Val, ValSerializer};
use super::shape::{finalize, shape_of, unify, Shape};
use super::standalone::{split_standalone, Sent, Standalones, PREFIX_CACHE_BYTES, PREFIX_CACHE_ENTRIES};
use super::types::{put_wire_type, FieldType, TypeId, WireType, BOOL, BYTES, FLOAT, INT, STRING, UINT};
use super::wire::{put_bytes, put_float, put_int, put_message, put_uint, Reader};
use super::{GobError, Limits};

/// The sending side of one gob stream (one connection).
///
/// It remembers which types it has defined on the stream: the first value of
/// a type is preceded by its type definitions, later ones are not. Types are
/// inferred from the values (see the [module docs](super)), so one Rust type
/// can be defined more than once, with different fields, when its values
/// reveal different fields.
///
/// ```
/// use switchboard::codec::gob::{Decoder, Encoder};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Args { #[serde(rename = "A")] a: i64, #[serde(rename = "B")] b: i64 }
///
/// let mut enc = Encoder::new();
/// let mut stream = Vec::new();
/// enc.encode(&Args { a: 7, b: 8 }, &mut stream).unwrap();
/// let first = stream.len();
/// enc.encode(&Args { a: 0, b: 9 }, &mut stream).unwrap();
/// // The second value needs no type definition, and its zero field is left out.
/// assert_eq!(&stream[first..], [0x05, 0xff, 0x82, 0x02, 0x12, 0x00]);
///
/// let mut dec = Decoder::new();
/// let (args, used) = dec.decode::<Args>(&stream).unwrap().unwrap();
/// assert_eq!((args, used), (Args { a: 7, b: 8 }, first));
/// let (args, _) = dec.decode::<Args>(&stream[first..]).unwrap().unwrap();
/// assert_eq!(args, Args { a: 0, b: 9 });
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Every type defined on this stream, by shape.
    known: HashMap<Shape, TypeId>,
    /// Every type defined on this stream, by id and by outline: where
    /// [`encode_standalone`](Self::encode_standalone) finds types to reuse.
    pub(super) sent: Sent,
    pub(super) next_id: TypeId,
    package: String,
    pub(super) limits: Limits,
    /// What [`encode_standalone`](Self::encode_standalone) remembers.
    pub(super) standalones: Standalones,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

thread_local! {
    /// [`Encoder::encode_alone`]'s cache.
    static FRESH: RefCell<FreshTypes> = RefCell::default();
}

/// The definitions a fresh stream starts with for a value of each type
/// (finalized shape), and the value's type id.
#[derive(Default)]
struct FreshTypes {
    by_shape: HashMap<Shape, Rc<(Vec<u8>, TypeId)>>,
    bytes: usize,
}

impl FreshTypes {
    fn get(&self, shape: &Shape) -> Option<Rc<(Vec<u8>, TypeId)>> {
        self.by_shape.get(shape).cloned()
    }

    fn insert(&mut self, shape: Shape, entry: Rc<(Vec<u8>, TypeId)>) {
        if entry.0.len() > PREFIX_CACHE_BYTES {
            return;
        }
        if self.by_shape.len() >= PREFIX_CACHE_ENTRIES || self.bytes + entry.0.len() > PREFIX_CACHE_BYTES {
            self.by_shape.clear();
            self.bytes = 0;
        }
        self.bytes += entry.0.len();
        if let Some(old) = self.by_shape.insert(shape, entry) {
            self.bytes -= old.0.len();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_shape.len()
    }
}

/// How many types this thread's [`Encoder::encode_alone`] cache holds.
#[cfg(test)]
pub(super) fn fresh_cache_len() -> usize {
    FRESH.with(|fresh| fresh.borrow().len())
}

/// Where a type is first met; Go names composite types after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The value handed to `encode`.
    Top,
    /// A struct field: composite types get their Go spelling (`[]string`).
    Field,
    /// A slice element: structs keep their name, composites are unnamed.
    SliceElem,
    /// An array element, map key or map value: unnamed, even structs.
    Other,
}

/// The types one `encode` call defines, in id order, until it succeeds.
#[derive(Default)]
struct NewTypes {
    defs: HashMap<TypeId, WireType>,
    shapes: Vec<Shape>,
}

impl Encoder {
    /// An encoder for a new stream, with [`Limits::default`].
    pub fn new() -> Self {
        Encoder::with_limits(Limits::default())
    }

    /// An encoder that refuses to write a message bigger than
    /// `limits.max_message` (so a peer with the same limits can read it).
    pub fn with_limits(limits: Limits) -> Self {
        Encoder {
            known: HashMap::new(),
            sent: Sent::default(),
            next_id: 65,
            package: String::new(),
            limits,
            standalones: Standalones::default(),
        }
    }

    /// Sets the Go package name used in the names of composite types
    /// (`[]main.Inner` rather than `[]Inner`). Go's decoder ignores type
    /// names; this only makes the bytes identical to a Go program's.
    pub fn with_package(mut self, package: impl Into<String>) -> Self {
        self.package = package.into();
        self
    }

    /// Appends to `out` the type definitions `value` needs that this stream
    /// has not seen yet, then the value: each one framed message. A struct is
    /// sent as a gob struct, anything else as a gob "singleton". On error
    /// nothing is appended and the encoder is unchanged.
    pub fn encode<T: Serialize + ?Sized>(&mut self, value: &T, out: &mut Vec<u8>) -> Result<(), GobError> {
        let val = value.serialize(ValSerializer)?;
        let shape = shape_of(&val)?;
        self.encode_val(&val, shape, out)
    }

    /// Like [`encode`](Self::encode), with the types of empty sequences,
    /// empty maps and `None`s taken from `sample`, a value of the same type
    /// with those parts filled in. Needed when the value handed over is an
    /// empty sequence or map itself (a top-level value must be sent, so its
    /// type must be known), and useful to send Go's complete type for a
    /// struct.
    pub fn encode_with_sample<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        sample: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), GobError> {
        let val = value.serialize(ValSerializer)?;
        let sample = shape_of(&sample.serialize(ValSerializer)?)?;
        let shape = unify(shape_of(&val)?, sample, "the value and its sample")?;
        self.encode_val(&val, shape, out)
    }

    pub(crate) fn encode_val(&mut self, val: &Val, shape: Shape, out: &mut Vec<u8>) -> Result<(), GobError> {
        let shape = match finalize(shape)? {
            Shape::Unknown => {
                return Err(GobError::unsupported(
                    "cannot tell the gob type of an empty sequence, an empty map or None at the top level (give a \
                     sample value with Encoder::encode_with_sample)",
                ))
            }
            shape => shape,
        };
        let mut new = NewTypes::default();
        let result = self.write(val, &shape, &mut new, out);
        if result.is_err() {
            // Forget the types this call defined: they were never sent.
            for s in &new.shapes {
                self.known.remove(s);
            }
            self.next_id -= new.shapes.len() as TypeId;
        } else {
            for (id, wire) in new.defs {
                self.sent.insert(id, wire);
            }
        }
        result
    }

    fn write(&mut self, val: &Val, shape: &Shape, new: &mut NewTypes, out: &mut Vec<u8>) -> Result<(), GobError> {
        if let Some(&id) = self.known.get(shape) {
            // Defined on this stream already (with all its parts): just the value.
            let mut body = Vec::with_capacity(64);
            self.put_top(&mut body, id, val, shape)?;
            return put_message(out, &body, self.limits.max_message);
        }
        let id = self.register(shape, Place::Top, new)?;
        let mut msgs = Vec::new();
        let mut body = Vec::new();
        let mut sent = HashSet::new();
        self.define(shape, new, &mut sent, &mut body, &mut msgs)?;
        body.clear();
        self.put_top(&mut body, id, val, shape)?;
        put_message(&mut msgs, &body, self.limits.max_message)?;
        out.extend_from_slice(&msgs);
        Ok(())
    }

    /// The body of the message that sends `val`, of type `id`.
    fn put_top(&self, body: &mut Vec<u8>, id: TypeId, val: &Val, shape: &Shape) -> Result<(), GobError> {
        put_int(body, id);
        match (val, shape) {
            (Val::Struct(_, fields), Shape::Struct(_, sfields)) => self.put_struct(body, fields, sfields),
            _ => {
                put_uint(body, 0);
                self.put_value(body, val, shape)
            }
        }
    }

    /// What `Encoder::new().encode(value, out)` writes (a standalone
    /// payload: [`Codec::Gob`](crate::Codec::Gob)'s encoding), with the
    /// definitions a fresh stream starts with remembered per thread and per
    /// type, so the next value of the same type does not define its types
    /// again (at most 64 types and 256 KiB; the cache starts over when
    /// full). A fresh stream's definitions depend only on the type.
    pub(crate) fn encode_alone<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), GobError> {
        let val = value.serialize(ValSerializer)?;
        let shape = finalize(shape_of(&val)?)?;
        let enc = Encoder::new();
        let known = FRESH.with(|fresh| fresh.borrow().get(&shape));
        if let Some(known) = known {
            let (prefix, id) = &*known;
            let mut body = Vec::with_capacity(64);
            enc.put_top(&mut body, *id, &val, &shape)?;
            let start = out.len();
            out.reserve(prefix.len() + body.len() + 10);
            out.extend_from_slice(prefix);
            // Nothing appended on error.
            return put_message(out, &body, enc.limits.max_message).inspect_err(|_| out.truncate(start));
        }
        let mut enc = enc;
        let start = out.len();
        enc.encode_val(&val, shape.clone(), out)?;
        if let Some((prefix, body)) = out.get(start..).and_then(|alone| split_standalone(alone, enc.limits.max_message))
        {
            if let Ok(id) = Reader::new(body).int("a message's type id") {
                let entry = Rc::new((prefix.to_vec(), id));
                FRESH.with(|fresh| fresh.borrow_mut().insert(shape, entry));
            }
        }
        Ok(())
    }

    /// The type id of `shape`, allocating ids in Go's order for new types:
    /// a struct before its fields' types, a slice, array or map after its
    /// element types.
    fn register(&mut self, shape: &Shape, place: Place, new: &mut NewTypes) -> Result<TypeId, GobError> {
        let builtin = match shape {
            Shape::Bool => Some(BOOL),
            Shape::Int(_) => Some(INT),
            Shape::Uint(_) => Some(UINT),
            Shape::Float(_) => Some(FLOAT),
            Shape::Str => Some(STRING),
            Shape::Bytes => Some(BYTES),
            Shape::Unknown => {
                return Err(GobError::unsupported("internal: a value of unknown type reached the encoder"))
            }
            _ => None,
        };
        if let Some(id) = builtin.or_else(|| self.known.get(shape).copied()) {
            return Ok(id);
        }
        let name = match (place, shape) {
            (Place::Other, _) => String::new(),
            (_, Shape::Struct(name, _)) => name.clone(),
            (Place::Field, s) => s.go_string(&self.package),
            _ => String::new(),
        };
        let (id, wire) = match shape {
            Shape::Struct(_, fields) => {
                let id = self.allocate(shape, new)?;
                let mut wire_fields = Vec::with_capacity(fields.len());
                for (fname, fshape) in fields {
                    let fid = self.register(fshape, Place::Field, new)?;
                    wire_fields.push(FieldType { name: fname.clone(), id: fid });
                }
                (id, WireType::Struct { name, fields: wire_fields })
            }
            Shape::Slice(elem) => {
                let elem = self.register(elem, Place::SliceElem, new)?;
                (self.allocate(shape, new)?, WireType::Slice { name, elem })
            }
            Shape::Array(elem, len) => {
                let elem = self.register(elem, Place::Other, new)?;
                (self.allocate(shape, new)?, WireType::Array { name, elem, len: *len })
            }
            Shape::Map(key, elem) => {
                let key = self.register(key, Place::Other, new)?;
                let elem = self.register(elem, Place::Other, new)?;
                (self.allocate(shape, new)?, WireType::Map { name, key, elem })
            }
            _ => return Err(GobError::unsupported("internal: unexpected basic type")),
        };
        new.defs.insert(id, wire);
        Ok(id)
    }

    fn allocate(&mut self, shape: &Shape, new: &mut NewTypes) -> Result<TypeId, GobError> {
        let id = self.next_id;
        if id >= TypeId::from(i32::MAX) {
            return Err(GobError::unsupported("this stream has used up gob's type ids"));
        }
        self.next_id += 1;
        self.known.insert(shape.clone(), id);
        new.shapes.push(shape.clone());
        Ok(id)
    }

    /// Writes the definitions of the new types under `shape`, in the order
    /// Go sends them: a type, then the types of its parts.
    fn define(
        &self,
        shape: &Shape,
        new: &NewTypes,
        sent: &mut HashSet<TypeId>,
        body: &mut Vec<u8>,
        msgs: &mut Vec<u8>,
    ) -> Result<(), GobError> {
        let Some(&id) = self.known.get(shape) else { return Ok(()) };
        let Some(wire) = new.defs.get(&id) else { return Ok(()) };
        if !sent.insert(id) {
            return Ok(());
        }
        body.clear();
        put_int(body, -id);
        put_wire_type(body, id, wire);
        put_message(msgs, body, self.limits.max_message)?;
        match shape {
            Shape::Struct(_, fields) => {
                for (_, f) in fields {
                    self.define(f, new, sent, body, msgs)?;
                }
            }
            Shape::Slice(e) | Shape::Array(e, _) => self.define(e, new, sent, body, msgs)?,
            Shape::Map(k, v) => {
                self.define(k, new, sent, body, msgs)?;
                self.define(v, new, sent, body, msgs)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Writes a struct's non-zero fields, in field-number order, and the
    /// terminating zero delta.
    fn put_struct(
        &self,
        out: &mut Vec<u8>,
        fields: &[(String, Val)],
        shape: &[(String, Shape)],
    ) -> Result<(), GobError> {
        let mut present: Vec<(usize, &Val, &String)> = Vec::with_capacity(fields.len());
        let mut cursor = 0;
        for (name, v) in fields {
            if is_zero(v) {
                continue;
            }
            let at = match shape.get(cursor) {
                Some((n, _)) if n == name => Some(cursor),
                _ => shape.iter().position(|(n, _)| n == name),
            };
            let Some(at) = at else {
                return Err(GobError::unsupported(format!("internal: field {name} is missing from its type")));
            };
            present.push((at, v, name));
            cursor = at + 1;
        }
        present.sort_by_key(|(at, _, _)| *at);
        let mut last = -1i64;
        for (at, v, name) in present {
            let Some((_, fshape)) = shape.get(at) else { continue };
            put_uint(out, (at as i64 - last) as u64);
            last = at as i64;
            self.put_value(out, v, fshape).map_err(|e| e.in_field(name))?;
        }
        out.push(0);
        Ok(())
    }

    /// Writes one value of type `shape`, zero or not (inside sequences, maps
    /// and singletons every value is sent).
    fn put_value(&self, out: &mut Vec<u8>, v: &Val, shape: &Shape) -> Result<(), GobError> {
        match (v, shape) {
            (Val::Bool(b), Shape::Bool) => put_uint(out, u64::from(*b)),
            (Val::Int(i, _), Shape::Int(_)) => put_int(out, *i),
            (Val::Uint(u, _), Shape::Uint(_)) => put_uint(out, *u),
            (Val::Float(f, _), Shape::Float(_)) => put_float(out, *f),
            (Val::Str(s), Shape::Str) => put_bytes(out, s.as_bytes()),
            (Val::Bytes(b), Shape::Bytes) => put_bytes(out, b),
            (Val::Seq(items), Shape::Bytes) => {
                put_uint(out, items.len() as u64);
                for item in items {
                    match item {
                        Val::Uint(u, _) if *u <= 0xff => out.push(*u as u8),
                        _ => return Err(GobError::unsupported("a sequence of u8 holds something other than a byte")),
                    }
                }
            }
            (Val::Seq(items), Shape::Slice(elem)) | (Val::Array(items), Shape::Array(elem, _)) => {
                put_uint(out, items.len() as u64);
                for item in items {
                    self.put_elem(out, item, elem)?;
                }
            }
            (Val::Map(entries), Shape::Map(k, v)) => {
                put_uint(out, entries.len() as u64);
                for (key, value) in entries {
                    self.put_elem(out, key, k)?;
                    self.put_elem(out, value, v)?;
                }
            }
            (Val::Struct(_, fields), Shape::Struct(_, sfields)) => self.put_struct(out, fields, sfields)?,
            (Val::Nil, _) => return Err(nil_element()),
            (v, s) => {
                return Err(GobError::unsupported(format!(
                    "internal: value {v:?} does not have its inferred type {}",
                    s.go_string("")
                )))
            }
        }
        Ok(())
    }

    fn put_elem(&self, out: &mut Vec<u8>, v: &Val, shape: &Shape) -> Result<(), GobError> {
        if *v == Val::Nil {
            return Err(nil_element());
        }
        self.put_value(out, v, shape)
    }
}

fn nil_element() -> GobError {
    GobError::unsupported("None inside a sequence, array or map, or at the top level: gob cannot send nil pointers")
}

/// Whether gob leaves this value out of a struct. Structs and arrays are
/// always sent, as Go does; a float is zero if it equals 0.0 (so -0.0 too).
fn is_zero(v: &Val) -> bool {
    match v {
        Val::Nil => true,
        Val::Bool(b) => !b,
        Val::Int(i, _) => *i == 0,
        Val::Uint(u, _) => *u == 0,
        Val::Float(f, _) => *f == 0.0,
        Val::Str(s) => s.is_empty(),
        Val::Bytes(b) => b.is_empty(),
        Val::Seq(items) => items.is_empty(),
        Val::Map(entries) => entries.is_empty(),
        Val::Array(_) | Val::Struct(..) => false,
    }
}
