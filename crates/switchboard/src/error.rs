//! The error a call returns, and whether it may be retried.
//!
//! [`Error`] keeps apart what failed: the transport (could not connect, the
//! connection dropped), the protocol (the peer sent something we cannot read),
//! the deadline, the codec, and the application (the handler returned a
//! [`Status`], carried intact). Failover and retries decide on
//! [`Error::retry`], which says not just *whether* a retry can help but
//! whether it is safe: a request that never left this process may always be
//! retried; one that may have reached a handler only if the call is
//! idempotent.
//!
//! ```
//! use switchboard::{Code, Error, Retry, Status};
//!
//! let app = Error::Status(Status::invalid_argument("B is zero"));
//! assert_eq!(app.code(), Code::InvalidArgument);
//! assert_eq!(app.retry(), Retry::Never);
//!
//! let busy = Error::Status(Status::unavailable("overloaded"));
//! assert_eq!(busy.retry(), Retry::IfIdempotent);
//! ```

use std::io;
use std::time::Duration;

use crate::codec::CodecError;
use crate::frame::FrameError;
use crate::status::{Code, Status};

/// Whether a failed call may be tried again (on this or another instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Retry {
    /// Retrying cannot help or is not allowed (bad arguments, deadline spent).
    Never,
    /// The request may have reached a handler: retry only idempotent calls.
    IfIdempotent,
    /// The request provably did not reach a handler: always safe to retry.
    Always,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (a handler, middleware, or the server itself) answered
    /// with this status. Application errors arrive here with their code,
    /// message and details intact.
    #[error("{0}")]
    Status(Status),

    /// The server refused the request before any handler ran (it was
    /// shutting down or over a limit). Always safe to retry elsewhere.
    #[error("refused by {addr}: {status}")]
    Refused {
        /// The server's address.
        addr: String,
        /// What the server said.
        status: Status,
    },

    /// No connection could be made; the request was never sent.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },

    /// The connection was lost after the request was handed to it; the
    /// server may or may not have run it.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The server's address.
        addr: String,
        /// What ended the connection.
        reason: String,
    },

    /// The caller's deadline passed before an answer arrived.
    #[error("deadline of {0:?} exceeded")]
    DeadlineExceeded(Duration),

    /// The request could not be encoded or the response decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),

    /// The peer broke the protocol (bad frame, unknown codec in a response).
    #[error("protocol error from {addr}: {reason}")]
    Protocol {
        /// The peer's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },

    /// Discovery knows no instance of the service that could take the call
    /// (none registered, or every one was tried). Nothing was sent.
    #[error("no instance of {service} available: {reason}")]
    NoInstances {
        /// The service called.
        service: String,
        /// Why none could take it.
        reason: String,
    },

    /// The request is larger than the frame limit; it was not sent.
    #[error("request of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// The encoded request size.
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

impl Error {
    /// The status code that best describes this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Status(s) | Error::Refused { status: s, .. } => s.code(),
            Error::Connect { .. } | Error::ConnectionLost { .. } | Error::NoInstances { .. } => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Codec(_) => Code::InvalidArgument,
            Error::Protocol { .. } => Code::Internal,
            Error::TooLarge { .. } => Code::ResourceExhausted,
        }
    }

    /// Whether, and when, this call may be retried.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Refused { .. } | Error::Connect { .. } | Error::NoInstances { .. } => Retry::Always,
            Error::ConnectionLost { .. } => Retry::IfIdempotent,
            // Passed on from the server's own downstream call: that hop
            // had its chance to retry, and retrying at every hop
            // multiplies the load.
            Error::Status(s) if s.is_forwarded() => Retry::Never,
            Error::Status(s) => match s.code() {
                Code::Unavailable => Retry::IfIdempotent,
                _ => Retry::Never,
            },
            Error::DeadlineExceeded(_) | Error::Codec(_) | Error::Protocol { .. } | Error::TooLarge { .. } => {
                Retry::Never
            }
        }
    }

    /// Shorthand: may an idempotent call be retried after this error?
    pub fn is_retryable(&self) -> bool {
        self.retry() != Retry::Never
    }

    /// This error led by its code, once: `Unavailable: connection to
    /// 127.0.0.1:9000 lost: …`. A status already reads `Code: message`, so
    /// writing `{code}: {error}` by hand would print its code twice.
    ///
    /// ```
    /// use switchboard::{Error, Status};
    ///
    /// let app = Error::Status(Status::not_found("no such user"));
    /// assert_eq!(app.coded().to_string(), "NotFound: no such user");
    /// let busy = Error::Refused { addr: "10.0.0.7:9000".into(), status: Status::unavailable("draining") };
    /// assert_eq!(busy.coded().to_string(), "Unavailable: draining (refused by 10.0.0.7:9000)");
    /// let late = Error::DeadlineExceeded(std::time::Duration::from_secs(2));
    /// assert_eq!(late.coded().to_string(), "DeadlineExceeded: deadline of 2s exceeded");
    /// ```
    pub fn coded(&self) -> Coded<'_> {
        Coded(self)
    }

    /// The application status, if the server answered with one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(s) | Error::Refused { status: s, .. } => Some(s),
            _ => None,
        }
    }

    /// This error as a [`Status`] with the same code and message, not
    /// marked forwarded. A handler passing on a failed downstream call
    /// should use `?` or `Status::from` instead, which mark it
    /// ([`Status::is_forwarded`]) so that its caller does not count the
    /// failure against the healthy instance that answered.
    pub fn to_status(&self) -> Status {
        match self {
            Error::Status(s) => s.clone(),
            other => Status::new(other.code(), other.to_string()),
        }
    }

    pub(crate) fn protocol(addr: &str, err: FrameError) -> Error {
        Error::Protocol { addr: addr.to_owned(), reason: err.to_string() }
    }
}

/// An [`Error`] shown led by its code, once ([`Error::coded`]).
#[derive(Debug, Clone, Copy)]
pub struct Coded<'a>(&'a Error);

impl std::fmt::Display for Coded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // Already "Code: message".
            Error::Status(status) => write!(f, "{status}"),
            Error::Refused { addr, status } => write!(f, "{status} (refused by {addr})"),
            other => write!(f, "{}: {other}", other.code()),
        }
    }
}

/// A failed downstream call, passed on by a handler (`call(...).await?`):
/// the downstream's code and message, [marked
/// forwarded](Status::is_forwarded) so that the caller's balancer treats
/// the answer as coming from a healthy instance.
impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Status(status) => status,
            Error::Refused { status, .. } => status,
            other => Status::new(other.code(), other.to_string()),
        }
        .forwarded()
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::Status(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_requests_are_always_retryable() {
        let connect = Error::Connect { addr: "x".into(), source: io::ErrorKind::ConnectionRefused.into() };
        assert_eq!(connect.retry(), Retry::Always);
        let lost = Error::ConnectionLost { addr: "x".into(), reason: "reset".into() };
        assert_eq!(lost.retry(), Retry::IfIdempotent);
        assert_eq!(Error::DeadlineExceeded(Duration::from_secs(1)).retry(), Retry::Never);
        assert_eq!(Error::Status(Status::not_found("x")).retry(), Retry::Never);
        assert!(!Error::Status(Status::internal("x")).is_retryable());
    }
}
