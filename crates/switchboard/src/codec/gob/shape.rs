//! Step two of encoding: infer the gob type ([`Shape`]) of a [`Val`].
//!
//! A value shows the type of everything it holds except its empty parts: an
//! empty sequence or map and a `None` reveal nothing. Those are zero values,
//! which gob leaves out of a struct anyway, so a struct field whose type is
//! unknown is left out of the struct's type as well. Elements of one
//! sequence (or keys, or values of one map) must agree; their shapes are
//! merged, so `[S{a: None, b: 1}, S{a: Some("x"), b: 0}]` is a slice of
//! `S{a string; b int}`.

use super::ser::Val;
use super::GobError;

/// A gob type as inferred from a value. The names are Go's (`int32`,
/// struct names); they matter only for naming composite types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    /// Nothing is known: the value was empty or `None`.
    Unknown,
    Bool,
    Int(&'static str),
    Uint(&'static str),
    Float(&'static str),
    Str,
    Bytes,
    Slice(Box<Shape>),
    Array(Box<Shape>, usize),
    Map(Box<Shape>, Box<Shape>),
    Struct(String, Vec<(String, Shape)>),
}

impl Shape {
    /// Go's spelling of the type (`reflect.Type.String()`), with struct names
    /// qualified by `package` if it is not empty.
    pub(crate) fn go_string(&self, package: &str) -> String {
        match self {
            Shape::Unknown => "?".into(),
            Shape::Bool => "bool".into(),
            Shape::Int(n) | Shape::Uint(n) | Shape::Float(n) => (*n).into(),
            Shape::Str => "string".into(),
            Shape::Bytes => "[]uint8".into(),
            Shape::Slice(e) => format!("[]{}", e.go_string(package)),
            Shape::Array(e, n) => format!("[{n}]{}", e.go_string(package)),
            Shape::Map(k, v) => format!("map[{}]{}", k.go_string(package), v.go_string(package)),
            Shape::Struct(name, _) if name.is_empty() => "struct {}".into(),
            Shape::Struct(name, _) if package.is_empty() => name.clone(),
            Shape::Struct(name, _) => format!("{package}.{name}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Shape::Struct(name, _) if !name.is_empty() => format!("struct {name}"),
            other => other.go_string(""),
        }
    }
}

/// The shape of `v`, possibly with unknown parts (see [`finalize`]).
pub(crate) fn shape_of(v: &Val) -> Result<Shape, GobError> {
    Ok(match v {
        Val::Nil => Shape::Unknown,
        Val::Bool(_) => Shape::Bool,
        Val::Int(_, n) => Shape::Int(n),
        Val::Uint(_, n) => Shape::Uint(n),
        Val::Float(_, n) => Shape::Float(n),
        Val::Str(_) => Shape::Str,
        Val::Bytes(_) => Shape::Bytes,
        Val::Seq(items) if items.is_empty() => Shape::Unknown,
        Val::Seq(items) => match unify_all(items.iter(), "elements of a sequence")? {
            // Go's []uint8 is []byte: sent as a byte string, not a slice.
            Shape::Uint("uint8") => Shape::Bytes,
            elem => Shape::Slice(Box::new(elem)),
        },
        Val::Array(items) => {
            Shape::Array(Box::new(unify_all(items.iter(), "elements of a tuple or array")?), items.len())
        }
        Val::Map(entries) if entries.is_empty() => Shape::Unknown,
        Val::Map(entries) => Shape::Map(
            Box::new(unify_all(entries.iter().map(|(k, _)| k), "keys of a map")?),
            Box::new(unify_all(entries.iter().map(|(_, v)| v), "values of a map")?),
        ),
        Val::Struct(name, fields) => {
            let mut shapes: Vec<(String, Shape)> = Vec::with_capacity(fields.len());
            for (fname, fv) in fields {
                if shapes.iter().any(|(n, _)| n == fname) {
                    return Err(GobError::unsupported(format!("struct {name} has two fields named {fname:?}")));
                }
                shapes.push((fname.clone(), shape_of(fv).map_err(|e| e.in_field(fname))?));
            }
            Shape::Struct(name.clone(), shapes)
        }
    })
}

fn unify_all<'a>(vals: impl Iterator<Item = &'a Val>, what: &str) -> Result<Shape, GobError> {
    let mut shape = Shape::Unknown;
    for v in vals {
        shape = unify(shape, shape_of(v)?, what)?;
    }
    Ok(shape)
}

/// Merges two shapes of values that must have one gob type.
pub(crate) fn unify(a: Shape, b: Shape, what: &str) -> Result<Shape, GobError> {
    Ok(match (a, b) {
        (Shape::Unknown, x) | (x, Shape::Unknown) => x,
        (Shape::Bool, Shape::Bool) => Shape::Bool,
        (Shape::Int(n), Shape::Int(_)) => Shape::Int(n),
        (Shape::Uint(n), Shape::Uint(_)) => Shape::Uint(n),
        (Shape::Float(n), Shape::Float(_)) => Shape::Float(n),
        (Shape::Str, Shape::Str) => Shape::Str,
        (Shape::Bytes, Shape::Bytes) => Shape::Bytes,
        (Shape::Slice(a), Shape::Slice(b)) => Shape::Slice(Box::new(unify(*a, *b, what)?)),
        (Shape::Array(a, n), Shape::Array(b, m)) if n == m => Shape::Array(Box::new(unify(*a, *b, what)?), n),
        (Shape::Map(ka, va), Shape::Map(kb, vb)) => {
            Shape::Map(Box::new(unify(*ka, *kb, what)?), Box::new(unify(*va, *vb, what)?))
        }
        (Shape::Struct(na, fa), Shape::Struct(nb, fb)) if na == nb => Shape::Struct(na, merge_fields(fa, fb, what)?),
        (a, b) => {
            return Err(GobError::unsupported(format!(
                "{what} have different gob types ({} and {}); gob would need interface{{}} values, which are not \
                 supported",
                a.describe(),
                b.describe()
            )))
        }
    })
}

/// The union of two field lists, keeping declaration order: fields only `b`
/// has go right before the next field both have (or at the end).
fn merge_fields(
    mut out: Vec<(String, Shape)>,
    b: Vec<(String, Shape)>,
    what: &str,
) -> Result<Vec<(String, Shape)>, GobError> {
    let mut at = 0;
    let mut only_b = Vec::new();
    for (name, shape) in b {
        let found = match out.get(at) {
            Some((n, _)) if *n == name => Some(at),
            _ => out.iter().position(|(n, _)| *n == name),
        };
        let Some(i) = found else {
            only_b.push((name, shape));
            continue;
        };
        let i = i + only_b.len();
        out.splice(i - only_b.len()..i - only_b.len(), only_b.drain(..));
        if let Some(slot) = out.get_mut(i) {
            let merged =
                unify(std::mem::replace(&mut slot.1, Shape::Unknown), shape, what).map_err(|e| e.in_field(&name))?;
            slot.1 = merged;
        }
        at = i + 1;
    }
    out.append(&mut only_b);
    Ok(out)
}

/// Makes a shape sendable: struct fields of unknown type are dropped (their
/// values are all zero, so gob omits them), and an unknown type anywhere a
/// value must be sent is an error naming where.
pub(crate) fn finalize(shape: Shape) -> Result<Shape, GobError> {
    let need = |s: Shape, what: &str| -> Result<Shape, GobError> {
        match s {
            Shape::Unknown => Err(GobError::unsupported(format!(
                "cannot tell the gob type of {what}: every one is empty or None (give a sample value with \
                 Encoder::encode_with_sample)"
            ))),
            s => finalize(s),
        }
    };
    Ok(match shape {
        Shape::Slice(e) => Shape::Slice(Box::new(need(*e, "the elements of a sequence")?)),
        Shape::Array(e, n) => Shape::Array(Box::new(need(*e, "the elements of an array")?), n),
        Shape::Map(k, v) => {
            Shape::Map(Box::new(need(*k, "the keys of a map")?), Box::new(need(*v, "the values of a map")?))
        }
        Shape::Struct(name, fields) => {
            let mut known = Vec::with_capacity(fields.len());
            for (fname, fshape) in fields {
                if fshape != Shape::Unknown {
                    let fshape = finalize(fshape).map_err(|e| e.in_field(&fname))?;
                    known.push((fname, fshape));
                }
            }
            Shape::Struct(name, known)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, fields: Vec<(&str, Val)>) -> Val {
        Val::Struct(name.into(), fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
    }

    #[test]
    fn elements_merge_their_known_fields_in_order() {
        let items = Val::Seq(vec![
            s("S", vec![("a", Val::Nil), ("b", Val::Int(1, "int64")), ("c", Val::Seq(vec![]))]),
            s("S", vec![("a", Val::Str("x".into())), ("b", Val::Int(0, "int64")), ("c", Val::Nil)]),
        ]);
        let shape = finalize(shape_of(&items).unwrap()).unwrap();
        let want = Shape::Slice(Box::new(Shape::Struct(
            "S".into(),
            vec![("a".into(), Shape::Str), ("b".into(), Shape::Int("int64"))],
        )));
        assert_eq!(shape, want);
    }

    #[test]
    fn a_field_only_the_second_value_has_lands_in_declaration_order() {
        let a = Shape::Struct("S".into(), vec![("a".into(), Shape::Bool), ("c".into(), Shape::Bool)]);
        let b = Shape::Struct("S".into(), vec![("b".into(), Shape::Str), ("c".into(), Shape::Bool)]);
        let Shape::Struct(_, fields) = unify(a, b, "t").unwrap() else { panic!() };
        let names: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn byte_sequences_are_gob_bytes() {
        let v = Val::Seq(vec![Val::Uint(1, "uint8"), Val::Uint(2, "uint8")]);
        assert_eq!(shape_of(&v).unwrap(), Shape::Bytes);
    }

    #[test]
    fn conflicts_and_unknowable_elements_are_errors() {
        let mixed = Val::Seq(vec![Val::Int(1, "int64"), Val::Str("x".into())]);
        assert!(shape_of(&mixed).is_err());
        let empties = Val::Seq(vec![Val::Seq(vec![]), Val::Seq(vec![])]);
        let err = finalize(shape_of(&empties).unwrap()).unwrap_err();
        assert!(err.to_string().contains("every one is empty"), "{err}");
        let in_field = s("S", vec![("L", empties)]);
        let err = finalize(shape_of(&in_field).unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("field L:"), "{err}");
    }
}
