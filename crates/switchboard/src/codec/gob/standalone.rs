//! Standalone payloads: one value of a gob stream, cut loose from it.
//!
//! # Why
//!
//! On a Go `net/rpc` connection every message travels on **one** gob stream
//! per direction: a type is defined once per connection, and later values
//! refer to it by an id only that connection knows. Switchboard's router, on
//! the other hand, hands a handler a `Request { codec, payload }` whose
//! payload must decode on its own, and takes back a `Response` encoded the
//! same way. So the connection layer converts, in both directions:
//!
//! - **in**: a value on the connection's stream (a message body, as
//!   [`Decoder::next_value`] returns it) becomes a **standalone payload**
//!   with [`Decoder::to_standalone`]: a complete gob stream as a fresh
//!   encoder would write it for exactly that one value (the definitions of
//!   the types it needs, then the value). That is the payload of
//!   [`Codec::Gob`](crate::Codec::Gob), which the handler decodes like any
//!   other codec's payload.
//! - **out**: the handler's reply, a standalone payload, is put on the
//!   connection's outgoing stream with [`Encoder::encode_standalone`], which
//!   defines on that stream whatever types the payload needs and the stream
//!   has not seen (reusing the ids of identical types it has).
//!
//! Neither direction goes through serde. Decoding presents a struct as a
//! map and every signed integer as an `i64`, so re-encoding a decoded value
//! would turn Go's `Args` struct into a `map[string]int` that Go's `Args`
//! cannot be decoded from. Instead the received type definitions are walked
//! and renumbered, and the value's bytes are copied as they are (a gob value
//! holds no type ids, only its message's first integer does). What Go can
//! tell apart survives: struct or map, `[]byte` or `[]int`,
//! signed or unsigned, float or int, field names and order, type names,
//! arrays and their lengths, self-marshaled types (`time.Time`), recursive
//! types; zero fields the sender left out stay out. The value is checked
//! first (decoded into [`IgnoredAny`] with the stream's [`Limits`](super::Limits)),
//! so a malformed one is an error here, not at the far end. Non-nil
//! `interface{}` values are refused, as everywhere in this module.
//!
//! Types are numbered from 65 and sent in the order Go's own encoder uses (a
//! struct's id before its fields' types, a slice's, array's or map's after
//! its elements'; each definition before those of its parts), so a value
//! cut loose from a Go stream is byte for byte what a fresh Go process
//! writes for that value alone (`tests/go_gob.rs` checks this against Go).
//! The one difference: type names are kept as the stream sent them, and Go
//! names a composite type after where its process first met it (`[]main.Node`
//! as a struct field, unnamed at the top level). Go's decoder ignores names.
//!
//! On the way out, a type the stream has defined is matched by its whole
//! definition: kind, names, field names and order, array length, and parts
//! matched in turn; types that contain themselves are compared as the
//! infinite trees they unroll to (the usual check for recursive types), so
//! a reply type is defined once per connection, not once per reply.
//!
//! The example in the [parent module's docs](super#standalone-payloads) shows
//! both directions.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::types::{put_wire_type, FieldType, TypeId, WireType, BOOL, INTERFACE};
use super::wire::{message_len, put_int, put_message, Reader};
use super::{Decoder, Encoder, GobError, Limits};

/// The first id a fresh stream defines (Go's encoder, and ours).
const FIRST_ID: TypeId = 65;

impl Decoder {
    /// The standalone payload of a value of this decoder's stream: given the
    /// body of a value message (as [`next_value`](Self::next_value) returns
    /// it), the complete gob stream a fresh encoder would write for that one
    /// value, with exactly the same wire types (see [standalone payloads](super#standalone-payloads)).
    ///
    /// Errors if the body is not a well-formed value of a type this stream
    /// defined (the same checks as [`decode_value`](Self::decode_value)), if
    /// it holds a non-nil `interface{}` value, or if its types nest deeper
    /// than [`Limits::max_depth`](super::Limits::max_depth).
    pub fn to_standalone(&self, body: &[u8]) -> Result<Vec<u8>, GobError> {
        self.decode_value::<IgnoredAny>(body)?;
        let mut r = Reader::new(body);
        let root = r.int("a message's type id")?;
        let (prefix, new_root) = self.standalone_prefix(root)?;
        self.with_prefix(&prefix, new_root, r.rest())
    }

    /// [`to_standalone`](Self::to_standalone), remembering per type the
    /// definitions it puts before the value: the same bytes, without
    /// walking the type graph again for the next value of that type. A
    /// stream never redefines a type id, so what a type id needs never
    /// changes. At most 64 types and 256 KiB of definitions are remembered
    /// (the cache starts over when full).
    pub fn to_standalone_cached(&mut self, body: &[u8]) -> Result<Vec<u8>, GobError> {
        self.decode_value::<IgnoredAny>(body)?;
        let mut r = Reader::new(body);
        let root = r.int("a message's type id")?;
        if let Some((prefix, new_root)) = self.prefixes.get(root) {
            return self.with_prefix(prefix, new_root, r.rest());
        }
        let (prefix, new_root) = self.standalone_prefix(root)?;
        let out = self.with_prefix(&prefix, new_root, r.rest())?;
        self.prefixes.insert(root, prefix, new_root);
        Ok(out)
    }

    /// The definitions a standalone payload of a value of type `root`
    /// starts with (framed messages), and the id `root` has there.
    fn standalone_prefix(&self, root: TypeId) -> Result<(Vec<u8>, TypeId), GobError> {
        let order = Order::of(&self.types, root, self.limits().max_depth)?;
        let ids: HashMap<TypeId, TypeId> = order.numbering.iter().copied().zip(FIRST_ID..).collect();
        let new_id = |id: TypeId| ids.get(&id).copied().unwrap_or(id);
        let mut out = Vec::new();
        let mut msg = Vec::new();
        for old in &order.sending {
            let Some(wire) = self.types.get(old) else { return Err(GobError::UnknownType(*old)) };
            let id = new_id(*old);
            msg.clear();
            put_int(&mut msg, -id);
            put_wire_type(&mut msg, id, &renumber(wire, new_id));
            put_message(&mut out, &msg, self.limits().max_message)?;
        }
        Ok((out, new_id(root)))
    }

    /// `prefix`, then the value message of type `root` whose bytes after
    /// the type id are `value`.
    fn with_prefix(&self, prefix: &[u8], root: TypeId, value: &[u8]) -> Result<Vec<u8>, GobError> {
        let mut msg = Vec::with_capacity(value.len() + 10);
        put_int(&mut msg, root);
        msg.extend_from_slice(value);
        let mut out = Vec::with_capacity(prefix.len() + msg.len() + 10);
        out.extend_from_slice(prefix);
        put_message(&mut out, &msg, self.limits().max_message)?;
        Ok(out)
    }

    /// Decodes a standalone payload (the payload of [`Codec::Gob`](crate::Codec::Gob)):
    /// `payload` must be exactly one value and the definitions of its types;
    /// a payload that ends early, or has bytes after its value, is an error.
    /// Call it on a fresh decoder (it is consumed): the payload's type ids
    /// are its own.
    ///
    /// ```
    /// use switchboard::codec::gob::{Decoder, Encoder};
    ///
    /// let mut payload = Vec::new();
    /// Encoder::new().encode(&vec![1i64, -2], &mut payload).unwrap();
    /// assert_eq!(Decoder::new().decode_standalone::<Vec<i64>>(&payload).unwrap(), [1, -2]);
    /// assert!(Decoder::new().decode_standalone::<Vec<i64>>(&payload[..payload.len() - 1]).is_err());
    /// payload.push(0);
    /// assert!(Decoder::new().decode_standalone::<Vec<i64>>(&payload).is_err());
    /// ```
    pub fn decode_standalone<'de, T: Deserialize<'de>>(mut self, payload: &'de [u8]) -> Result<T, GobError> {
        let body = self.standalone_value(payload)?;
        self.decode_value(body)
    }

    /// What `Decoder::new().decode_standalone(payload)` returns
    /// ([`Codec::Gob`](crate::Codec::Gob)'s decoding), with the payload's
    /// definitions read once per thread for each distinct definition bytes
    /// (at most 64 of them and 256 KiB; the cache starts over when full):
    /// the same bytes define the same types.
    pub(crate) fn decode_alone<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, GobError> {
        let Some((prefix, body)) = split_standalone(payload, Limits::default().max_message) else {
            return Decoder::new().decode_standalone(payload);
        };
        if let Some(dec) = DEFINITIONS.with(|defs| defs.borrow().get(prefix)) {
            return dec.decode_value(body);
        }
        let mut dec = Decoder::new();
        let body = dec.standalone_value(payload)?;
        let dec = Rc::new(dec);
        DEFINITIONS.with(|defs| defs.borrow_mut().insert(prefix, Rc::clone(&dec)));
        dec.decode_value(body)
    }

    /// Takes in the definitions of a standalone payload and returns the body
    /// of its value message, which must end the payload.
    fn standalone_value<'p>(&mut self, payload: &'p [u8]) -> Result<&'p [u8], GobError> {
        let (body, used) = self.next_value(payload)?.ok_or(GobError::Truncated("a standalone gob payload"))?;
        match payload.get(used..).map_or(0, <[u8]>::len) {
            0 => Ok(body),
            n => Err(GobError::Corrupt(format!(
                "{n} bytes after the value of a standalone gob payload (it holds exactly one value)"
            ))),
        }
    }
}

impl Encoder {
    /// Appends to this encoder's stream the value a standalone payload holds
    /// (as [`Decoder::to_standalone`] or a fresh [`Encoder`] writes it; the
    /// payload of [`Codec::Gob`](crate::Codec::Gob)), with the same wire
    /// types. Types this stream has already defined identically (same kind,
    /// names, fields, and parts) are referred to by their ids; the others
    /// are defined first, under new ids. The value's bytes are copied.
    ///
    /// The payload is checked as [`Decoder::decode_standalone`] checks it,
    /// under this encoder's limits; on error nothing is appended and the
    /// encoder is unchanged.
    ///
    /// Types that contain themselves (`type Node struct{ Kids []Node }`) are
    /// matched too (as the same infinite tree of definitions). But
    /// [`encode`](Self::encode) does not reuse types defined here (it knows
    /// types by their Rust shape): a type met both ways is defined twice,
    /// under two ids, which Go accepts.
    pub fn encode_standalone(&mut self, standalone: &[u8], out: &mut Vec<u8>) -> Result<(), GobError> {
        if let Some((prefix, body)) = split_standalone(standalone, self.limits.max_message) {
            let mut r = Reader::new(body);
            if let (Ok(root), Some(known)) = (r.int("a message's type id"), self.standalones.get(prefix)) {
                if let Some(ours) = known.id_of(root) {
                    known.payload.decode_value::<IgnoredAny>(body)?;
                    let mut msg = Vec::with_capacity(r.rest().len() + 10);
                    put_int(&mut msg, ours);
                    msg.extend_from_slice(r.rest());
                    return put_message(out, &msg, self.limits.max_message);
                }
            }
        }
        self.encode_standalone_uncached(standalone, out)
    }

    /// [`encode_standalone`](Self::encode_standalone) without its cache:
    /// compares the payload's types with the stream's, and remembers the
    /// result for the payload's definition bytes.
    pub(super) fn encode_standalone_uncached(&mut self, standalone: &[u8], out: &mut Vec<u8>) -> Result<(), GobError> {
        let mut dec = Decoder::with_limits(self.limits);
        let body = dec.standalone_value(standalone)?;
        dec.decode_value::<IgnoredAny>(body)?;
        let mut r = Reader::new(body);
        let root = r.int("a message's type id")?;
        let order = Order::of(&dec.types, root, self.limits.max_depth)?;

        // The payload's types this stream has, then new ids for the others.
        let mut reuse = Reuse::new(&dec.types, &self.sent, self.limits.max_depth);
        let mut ids = HashMap::new();
        let mut fresh = Vec::new();
        for &id in &order.numbering {
            match reuse.find(id) {
                Some(ours) => {
                    ids.insert(id, ours);
                }
                None => fresh.push(id),
            }
        }
        let fresh_count = TypeId::try_from(fresh.len()).unwrap_or(TypeId::MAX);
        if self.next_id.saturating_add(fresh_count) > TypeId::from(i32::MAX) {
            return Err(GobError::unsupported("this stream has used up gob's type ids"));
        }
        let fresh: HashSet<TypeId> = fresh
            .into_iter()
            .zip(self.next_id..)
            .map(|(id, ours)| {
                ids.insert(id, ours);
                id
            })
            .collect();
        let new_id = |id: TypeId| ids.get(&id).copied().unwrap_or(id);

        let mut msgs = Vec::new();
        let mut msg = Vec::new();
        let mut defined = Vec::with_capacity(fresh.len());
        for old in order.sending.iter().filter(|id| fresh.contains(id)) {
            let Some(wire) = dec.types.get(old) else { return Err(GobError::UnknownType(*old)) };
            let (id, wire) = (new_id(*old), renumber(wire, new_id));
            msg.clear();
            put_int(&mut msg, -id);
            put_wire_type(&mut msg, id, &wire);
            put_message(&mut msgs, &msg, self.limits.max_message)?;
            defined.push((wire, id));
        }
        msg.clear();
        let ours = new_id(root);
        put_int(&mut msg, ours);
        msg.extend_from_slice(r.rest());
        put_message(&mut msgs, &msg, self.limits.max_message)?;

        out.extend_from_slice(&msgs);
        self.next_id += fresh_count;
        for (wire, id) in defined {
            self.sent.insert(id, wire);
        }
        if let Some((prefix, _)) = split_standalone(standalone, self.limits.max_message) {
            self.standalones.insert(prefix, dec, root, ours);
        }
        Ok(())
    }
}

/// A standalone payload's definitions (the bytes before its value
/// message) and its value message's body; `None` unless the payload is
/// framed as definitions then exactly one value message that ends it (the
/// definitions themselves are not checked).
pub(super) fn split_standalone(payload: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let mut at = 0;
    loop {
        let rest = payload.get(at..)?;
        let (header, len) = message_len(rest, max).ok()??;
        let body = rest.get(header..header.checked_add(len)?)?;
        let end = at + header + len;
        if Reader::new(body).int("a message's type id").ok()? >= 0 {
            return if end == payload.len() { Some((payload.get(..at)?, body)) } else { None };
        }
        at = end;
    }
}

/// Most types a decoder remembers standalone prefixes for.
pub(super) const PREFIX_CACHE_ENTRIES: usize = 64;
/// Most bytes of standalone prefixes a decoder remembers; also the most
/// bytes of payload definitions an encoder remembers.
pub(super) const PREFIX_CACHE_BYTES: usize = 256 << 10;

thread_local! {
    /// [`Decoder::decode_alone`]'s cache.
    static DEFINITIONS: RefCell<Definitions> = RefCell::default();
}

/// Standalone payloads' definitions, read, by their bytes.
#[derive(Default)]
struct Definitions {
    by_prefix: HashMap<Vec<u8>, Rc<Decoder>>,
    bytes: usize,
}

impl Definitions {
    fn get(&self, prefix: &[u8]) -> Option<Rc<Decoder>> {
        self.by_prefix.get(prefix).cloned()
    }

    fn insert(&mut self, prefix: &[u8], dec: Rc<Decoder>) {
        if prefix.len() > PREFIX_CACHE_BYTES {
            return;
        }
        if self.by_prefix.len() >= PREFIX_CACHE_ENTRIES || self.bytes + prefix.len() > PREFIX_CACHE_BYTES {
            self.by_prefix.clear();
            self.bytes = 0;
        }
        if self.by_prefix.insert(prefix.to_vec(), dec).is_none() {
            self.bytes += prefix.len();
        }
    }
}

/// How many definition prefixes this thread's [`Decoder::decode_alone`]
/// cache holds.
#[cfg(test)]
pub(super) fn definitions_cache_len() -> usize {
    DEFINITIONS.with(|defs| defs.borrow().by_prefix.len())
}

/// A decoder's standalone prefixes, by the stream's type id of the value.
#[derive(Debug, Clone, Default)]
pub(super) struct Prefixes {
    by_root: HashMap<TypeId, (Vec<u8>, TypeId)>,
    bytes: usize,
}

impl Prefixes {
    fn get(&self, root: TypeId) -> Option<(&[u8], TypeId)> {
        self.by_root.get(&root).map(|(prefix, id)| (prefix.as_slice(), *id))
    }

    fn insert(&mut self, root: TypeId, prefix: Vec<u8>, id: TypeId) {
        if prefix.len() > PREFIX_CACHE_BYTES {
            return;
        }
        if self.by_root.len() >= PREFIX_CACHE_ENTRIES || self.bytes + prefix.len() > PREFIX_CACHE_BYTES {
            self.by_root.clear();
            self.bytes = 0;
        }
        self.bytes += prefix.len();
        if let Some((old, _)) = self.by_root.insert(root, (prefix, id)) {
            self.bytes -= old.len();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_root.len()
    }
}

/// An encoder's memory of the standalone payloads it has put on its
/// stream, by their definition bytes: the same definitions mean the same
/// types, which the stream has from then on under the same ids.
#[derive(Debug, Clone, Default)]
pub(super) struct Standalones {
    by_prefix: HashMap<Vec<u8>, Known>,
    bytes: usize,
}

/// What one payload's definitions became on the stream.
#[derive(Debug, Clone)]
struct Known {
    /// The definitions, read (to check values with).
    payload: Decoder,
    /// Value type ids of the payload's, and the stream's ids for them.
    roots: Vec<(TypeId, TypeId)>,
}

impl Known {
    fn id_of(&self, root: TypeId) -> Option<TypeId> {
        self.roots.iter().find(|(theirs, _)| *theirs == root).map(|(_, ours)| *ours)
    }
}

impl Standalones {
    fn get(&self, prefix: &[u8]) -> Option<&Known> {
        self.by_prefix.get(prefix)
    }

    fn insert(&mut self, prefix: &[u8], payload: Decoder, root: TypeId, ours: TypeId) {
        if let Some(known) = self.by_prefix.get_mut(prefix) {
            if known.id_of(root).is_none() && known.roots.len() < PREFIX_CACHE_ENTRIES {
                known.roots.push((root, ours));
            }
            return;
        }
        if prefix.len() > PREFIX_CACHE_BYTES {
            return;
        }
        if self.by_prefix.len() >= PREFIX_CACHE_ENTRIES || self.bytes + prefix.len() > PREFIX_CACHE_BYTES {
            self.by_prefix.clear();
            self.bytes = 0;
        }
        self.bytes += prefix.len();
        self.by_prefix.insert(prefix.to_vec(), Known { payload, roots: vec![(root, ours)] });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_prefix.len()
    }
}

/// Ids 1 to 8: bool, int, uint, float, `[]byte`, string, complex and
/// interface, which no stream defines.
fn is_builtin(id: TypeId) -> bool {
    (BOOL..=INTERFACE).contains(&id)
}

/// The type ids a definition refers to, in the order Go visits them.
fn parts(wire: &WireType) -> Vec<TypeId> {
    match wire {
        WireType::Array { elem, .. } | WireType::Slice { elem, .. } => vec![*elem],
        WireType::Map { key, elem, .. } => vec![*key, *elem],
        WireType::Struct { fields, .. } => fields.iter().map(|f| f.id).collect(),
        WireType::Marshaled { .. } => Vec::new(),
    }
}

/// The definition with every type id it refers to mapped by `id`.
fn renumber(wire: &WireType, id: impl Fn(TypeId) -> TypeId) -> WireType {
    match wire {
        WireType::Array { name, elem, len } => WireType::Array { name: name.clone(), elem: id(*elem), len: *len },
        WireType::Slice { name, elem } => WireType::Slice { name: name.clone(), elem: id(*elem) },
        WireType::Map { name, key, elem } => WireType::Map { name: name.clone(), key: id(*key), elem: id(*elem) },
        WireType::Struct { name, fields } => WireType::Struct {
            name: name.clone(),
            fields: fields.iter().map(|f| FieldType { name: f.name.clone(), id: id(f.id) }).collect(),
        },
        WireType::Marshaled { name, how } => WireType::Marshaled { name: name.clone(), how: *how },
    }
}

/// The defined types a value of type `root` needs, in the two orders Go's
/// encoder uses for a fresh stream.
struct Order {
    /// The order of their ids: a struct is numbered before its fields'
    /// types, a slice, array or map after its parts (unless it contains
    /// itself: then when it is first met again).
    numbering: Vec<TypeId>,
    /// The order of their definitions: each type, then its parts, depth
    /// first.
    sending: Vec<TypeId>,
}

impl Order {
    fn of(types: &HashMap<TypeId, WireType>, root: TypeId, max_depth: usize) -> Result<Order, GobError> {
        let mut numbering =
            Numbering { types, max_depth, numbered: HashSet::new(), started: HashSet::new(), order: Vec::new() };
        numbering.number(root, 0)?;
        let mut sending = Vec::with_capacity(numbering.order.len());
        send(types, root, 0, max_depth, &mut HashSet::new(), &mut sending)?;
        Ok(Order { numbering: numbering.order, sending })
    }
}

struct Numbering<'a> {
    types: &'a HashMap<TypeId, WireType>,
    max_depth: usize,
    numbered: HashSet<TypeId>,
    /// Slices, arrays and maps whose parts are being numbered.
    started: HashSet<TypeId>,
    order: Vec<TypeId>,
}

impl Numbering<'_> {
    fn number(&mut self, id: TypeId, depth: usize) -> Result<(), GobError> {
        if is_builtin(id) || self.numbered.contains(&id) {
            return Ok(());
        }
        let wire = self.types.get(&id).ok_or(GobError::UnknownType(id))?;
        if depth >= self.max_depth {
            return Err(GobError::TooDeep(self.max_depth));
        }
        match wire {
            WireType::Struct { fields, .. } => {
                self.assign(id);
                for f in fields {
                    self.number(f.id, depth + 1)?;
                }
            }
            WireType::Marshaled { .. } => self.assign(id),
            _ if !self.started.insert(id) => self.assign(id),
            _ => {
                for part in parts(wire) {
                    self.number(part, depth + 1)?;
                }
                if !self.numbered.contains(&id) {
                    self.assign(id);
                }
            }
        }
        Ok(())
    }

    fn assign(&mut self, id: TypeId) {
        if self.numbered.insert(id) {
            self.order.push(id);
        }
    }
}

fn send(
    types: &HashMap<TypeId, WireType>,
    id: TypeId,
    depth: usize,
    max_depth: usize,
    sent: &mut HashSet<TypeId>,
    order: &mut Vec<TypeId>,
) -> Result<(), GobError> {
    if is_builtin(id) || sent.contains(&id) {
        return Ok(());
    }
    let wire = types.get(&id).ok_or(GobError::UnknownType(id))?;
    if depth >= max_depth {
        return Err(GobError::TooDeep(max_depth));
    }
    sent.insert(id);
    order.push(id);
    for part in parts(wire) {
        send(types, part, depth + 1, max_depth, sent, order)?;
    }
    Ok(())
}

/// The types an encoder has defined on its stream.
#[derive(Debug, Clone, Default)]
pub(super) struct Sent {
    defs: HashMap<TypeId, WireType>,
    /// Ids by [`outline`]: the candidates for a match.
    by_outline: HashMap<WireType, Vec<TypeId>>,
}

impl Sent {
    pub(super) fn insert(&mut self, id: TypeId, wire: WireType) {
        self.by_outline.entry(outline(&wire)).or_default().push(id);
        self.defs.insert(id, wire);
    }
}

/// A definition with the ids of its defined parts blanked out (the
/// predefined ones kept): what two identical types have in common before
/// their parts are compared.
fn outline(wire: &WireType) -> WireType {
    renumber(wire, |id| if is_builtin(id) { id } else { 0 })
}

/// Finds the payload's types among those a stream has defined.
struct Reuse<'a> {
    /// The payload's types.
    types: &'a HashMap<TypeId, WireType>,
    /// The stream's.
    sent: &'a Sent,
    max_depth: usize,
    /// Answers so far.
    found: HashMap<TypeId, Option<TypeId>>,
    /// Pairs of types left to compare: once spent, the remaining types are
    /// defined anew (correct, only longer), so no stream of definitions can
    /// make matching slow.
    budget: Cell<usize>,
}

/// How many pairs of types one payload may compare against the stream's.
const MATCH_BUDGET: usize = 1 << 20;

impl<'a> Reuse<'a> {
    fn new(types: &'a HashMap<TypeId, WireType>, sent: &'a Sent, max_depth: usize) -> Self {
        Reuse { types, sent, max_depth, found: HashMap::new(), budget: Cell::new(MATCH_BUDGET) }
    }

    /// The id of a type the stream has defined that is identical to the
    /// payload's type `id`: the same definition, and parts that are
    /// identical in turn (recursive types included: they are the same
    /// infinite tree of definitions).
    fn find(&mut self, id: TypeId) -> Option<TypeId> {
        if is_builtin(id) {
            return Some(id);
        }
        if let Some(found) = self.found.get(&id) {
            return *found;
        }
        let found = self.types.get(&id).and_then(|wire| {
            let candidates = self.sent.by_outline.get(&outline(wire))?;
            candidates.iter().copied().find(|&ours| self.same(id, ours, 0, &mut HashSet::new()))
        });
        self.found.insert(id, found);
        found
    }

    /// Whether the payload's type `theirs` and the stream's type `ours` are
    /// identical, assuming the pairs in `assumed` are (the usual check for
    /// recursive types: a pair met again while being compared is taken as
    /// identical; any difference anywhere fails the whole comparison).
    /// Comparisons deeper than `max_depth` fail, so a type is defined anew
    /// rather than the stack overflowing.
    fn same(&self, theirs: TypeId, ours: TypeId, depth: usize, assumed: &mut HashSet<(TypeId, TypeId)>) -> bool {
        if is_builtin(theirs) || is_builtin(ours) {
            return theirs == ours;
        }
        if !assumed.insert((theirs, ours)) {
            return true;
        }
        let Some(budget) = self.budget.get().checked_sub(1) else { return false };
        self.budget.set(budget);
        if depth >= self.max_depth {
            return false;
        }
        let (Some(t), Some(o)) = (self.types.get(&theirs), self.sent.defs.get(&ours)) else { return false };
        outline(t) == outline(o) && parts(t).into_iter().zip(parts(o)).all(|(t, o)| self.same(t, o, depth + 1, assumed))
    }
}
