//! Status codes and the [`Status`] a call ends with.
//!
//! Every response on the wire carries a [`Code`] in its frame header and, when
//! the code is not [`Code::Ok`], a message (and optional opaque details) in its
//! metadata. The code set and numbering follow gRPC, so people who know gRPC
//! can read our errors without a table, and a gRPC bridge is a straight map.
//!
//! A handler returns `Err(Status)` for an application error; the caller gets
//! the same code, message and details back as
//! [`Error::Status`](crate::Error::Status), never flattened into a string.
//!
//! ```
//! use switchboard::{Code, Status};
//!
//! let status = Status::invalid_argument("B must not be zero");
//! assert_eq!(status.code(), Code::InvalidArgument);
//! assert_eq!(status.to_string(), "InvalidArgument: B must not be zero");
//! ```

use std::fmt;

use bytes::Bytes;

/// The outcome class of a call. Numbering matches gRPC's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The call succeeded.
    Ok = 0,
    /// The call was cancelled, usually by the caller.
    Cancelled = 1,
    /// An error with no better code (also: a code this version does not know).
    Unknown = 2,
    /// The caller sent arguments the handler rejects.
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// The service, method or entity does not exist.
    NotFound = 5,
    /// The entity the caller tried to create exists already.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A quota or limit was reached (rate limit, connection limit, frame size).
    ResourceExhausted = 8,
    /// The system is not in a state the operation needs.
    FailedPrecondition = 9,
    /// The operation was aborted, e.g. by a concurrency conflict.
    Aborted = 10,
    /// An argument was outside the valid range.
    OutOfRange = 11,
    /// The method is not implemented (or a codec is not supported).
    Unimplemented = 12,
    /// An invariant broke inside the server.
    Internal = 13,
    /// The service is not available right now; retrying may help.
    Unavailable = 14,
    /// Data was lost or corrupted.
    DataLoss = 15,
    /// The caller did not prove who it is.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a wire value; values this version does not know map to
    /// [`Code::Unknown`] rather than failing the whole response.
    pub fn from_u16(value: u16) -> Code {
        match value {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The wire value of this code.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code's name, as printed in errors and logs (`NotFound`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "Ok",
            Code::Cancelled => "Cancelled",
            Code::Unknown => "Unknown",
            Code::InvalidArgument => "InvalidArgument",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::PermissionDenied => "PermissionDenied",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::FailedPrecondition => "FailedPrecondition",
            Code::Aborted => "Aborted",
            Code::OutOfRange => "OutOfRange",
            Code::Unimplemented => "Unimplemented",
            Code::Internal => "Internal",
            Code::Unavailable => "Unavailable",
            Code::DataLoss => "DataLoss",
            Code::Unauthenticated => "Unauthenticated",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status code with a human-readable message and optional opaque details.
///
/// This is what a handler returns for an application error and what the
/// caller receives, unchanged, across the wire.
///
/// ## Whose failure it is: forwarded statuses
///
/// A status also says whether the answering server *produced* it or is
/// passing on the failure of a call it made itself (say, `Orders` answering
/// `Unavailable` because `Inventory` died under it). A forwarded status
/// keeps the downstream's code and message for the caller, but travels
/// with a flag (`FLAG_FORWARDED`, docs/PROTOCOL.md) so that the caller's
/// balancer does not hold it against the healthy instance that answered:
/// no breaker failure, no ejection, no latency sample, and no retry (the
/// hop that saw the failure had its own chance to retry; retrying at every
/// hop multiplies the load). `?` on a downstream call in a handler does
/// this: `From<Error> for Status` marks the status forwarded.
///
/// ```
/// use switchboard::{Code, Error, Status};
///
/// // In a handler: `let n = inventory.call(...).await?;`
/// let downstream: Error = Error::Status(Status::unavailable("no stock service"));
/// let answered: Status = downstream.into();
/// assert!(answered.is_forwarded());
/// assert_eq!(answered.code(), Code::Unavailable);
/// assert_eq!(answered.message(), "no stock service");
/// assert!(!Status::unavailable("overloaded").is_forwarded());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    details: Bytes,
    forwarded: bool,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), details: Bytes::new(), forwarded: false }
    }

    /// This status, marked as passed on from a downstream call rather than
    /// produced by the server that answers with it (see [the type's
    /// docs](Status#whose-failure-it-is-forwarded-statuses)).
    /// `From<Error> for Status` sets it; a handler that builds its own
    /// status from a downstream failure can too.
    pub fn forwarded(mut self) -> Status {
        self.forwarded = true;
        self
    }

    /// Whether the answering server passed this status on from a call of
    /// its own instead of producing it.
    pub fn is_forwarded(&self) -> bool {
        self.forwarded
    }

    /// Attach opaque, application-defined details (e.g. an encoded error
    /// struct). They travel with the status and reach the caller unchanged.
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Status {
        self.details = details.into();
        self
    }

    constructors! {
        /// [`Code::Cancelled`].
        cancelled => Cancelled,
        /// [`Code::Unknown`].
        unknown => Unknown,
        /// [`Code::InvalidArgument`].
        invalid_argument => InvalidArgument,
        /// [`Code::DeadlineExceeded`].
        deadline_exceeded => DeadlineExceeded,
        /// [`Code::NotFound`].
        not_found => NotFound,
        /// [`Code::AlreadyExists`].
        already_exists => AlreadyExists,
        /// [`Code::PermissionDenied`].
        permission_denied => PermissionDenied,
        /// [`Code::ResourceExhausted`].
        resource_exhausted => ResourceExhausted,
        /// [`Code::FailedPrecondition`].
        failed_precondition => FailedPrecondition,
        /// [`Code::Aborted`].
        aborted => Aborted,
        /// [`Code::OutOfRange`].
        out_of_range => OutOfRange,
        /// [`Code::Unimplemented`].
        unimplemented => Unimplemented,
        /// [`Code::Internal`].
        internal => Internal,
        /// [`Code::Unavailable`].
        unavailable => Unavailable,
        /// [`Code::DataLoss`].
        data_loss => DataLoss,
        /// [`Code::Unauthenticated`].
        unauthenticated => Unauthenticated,
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The opaque details, empty if none were attached.
    pub fn details(&self) -> &Bytes {
        &self.details
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Status");
        s.field("code", &self.code).field("message", &self.message);
        if self.forwarded {
            s.field("forwarded", &true);
        }
        if !self.details.is_empty() {
            s.field("details", &self.details.len());
        }
        s.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_value() {
        for value in 0..=16u16 {
            assert_eq!(Code::from_u16(value).as_u16(), value);
        }
        assert_eq!(Code::from_u16(999), Code::Unknown);
    }
}
