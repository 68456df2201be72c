//! [`GobError`]: everything that can go wrong encoding or decoding gob.

use std::fmt::Display;

/// An error encoding or decoding gob. Bad input is always one of these,
/// never a panic; the message names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GobError {
    /// A message's byte count is over the configured limit (checked before
    /// anything is allocated for it).
    #[error("gob message of {len} bytes is larger than the limit of {max} bytes")]
    MessageTooBig {
        /// The byte count the message announced (or would have).
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The data ended in the middle of something.
    #[error("truncated gob data: input ended inside {0}")]
    Truncated(&'static str),
    /// An unsigned integer whose length byte is not 1..=8 bytes.
    #[error("invalid gob unsigned integer: length byte {0:#04x}")]
    BadUint(u8),
    /// A value refers to a type id that was never defined on this stream.
    #[error("gob type id {0} is not defined on this stream")]
    UnknownType(i64),
    /// A type id was defined twice, or a definition used a reserved id.
    #[error("gob type id {0} cannot be defined here (duplicate or reserved)")]
    DuplicateType(i64),
    /// A type definition that does not describe a type.
    #[error("invalid gob type definition: {0}")]
    BadTypeDef(String),
    /// Malformed value data (a bad field number, a wrong array length, ...).
    #[error("corrupt gob data: {0}")]
    Corrupt(String),
    /// The value ended before its message did.
    #[error("{0} unexpected bytes after the gob value in its message")]
    TrailingBytes(usize),
    /// Values or types nested deeper than the configured limit.
    #[error("gob data nested deeper than {0} levels")]
    TooDeep(usize),
    /// The peer defined more types than the configured limit.
    #[error("too many gob type definitions on this stream (limit {0})")]
    TooManyTypes(usize),
    /// Filling in omitted zero-valued fields would take more than the
    /// configured number of values (a type definition built to blow up).
    #[error("filling in omitted zero values would produce more than {0} values")]
    ZeroFillBudget(usize),
    /// A Rust value with no gob representation, or a gob value the target
    /// type cannot hold.
    #[error("gob: {0}")]
    Unsupported(String),
    /// An error inside a struct field, with the path of field names to it.
    #[error("field {path}: {source}")]
    InField {
        /// Dotted field names from the outermost struct, e.g. `Child.Score`.
        path: String,
        /// What went wrong there.
        source: Box<GobError>,
    },
    /// An error raised by a `Serialize` or `Deserialize` implementation
    /// (for example "missing field" or "invalid type").
    #[error("{0}")]
    Custom(String),
}

impl GobError {
    /// Wraps the error with the name of the struct field it happened in.
    pub(crate) fn in_field(self, field: &str) -> GobError {
        match self {
            GobError::InField { path, source } => GobError::InField { path: format!("{field}.{path}"), source },
            other => GobError::InField { path: field.to_owned(), source: Box::new(other) },
        }
    }

    pub(crate) fn unsupported(msg: impl Into<String>) -> GobError {
        GobError::Unsupported(msg.into())
    }
}

impl serde::ser::Error for GobError {
    fn custom<T: Display>(msg: T) -> Self {
        GobError::Custom(msg.to_string())
    }
}

impl serde::de::Error for GobError {
    fn custom<T: Display>(msg: T) -> Self {
        GobError::Custom(msg.to_string())
    }
}
