//! Middleware: code that runs around every call, on the server or the client.
//!
//! One trait serves both sides. A middleware gets the [`Request`] and a
//! [`Next`] handle to the rest of the chain; it may look at or change the
//! request, call `next.run(req)` and look at the result, or answer at once
//! without calling `next` (short-circuit, e.g. a rate limiter returning
//! `ResourceExhausted`). The error type is the side's: [`Status`] on the
//! server (what goes on the wire), [`Error`] on the client
//! (which keeps transport errors apart from application ones).
//!
//! Middleware runs in the order it was added: the first added is outermost.
//! On the server the chain sits between frame decoding and the handler; on
//! the client between the typed stub and the connection (see
//! docs/ARCHITECTURE.md for the full order, including deadlines).
//!
//! Why not tower's `Service`/`Layer`? A boxed `call(req, next)` is one trait
//! with no associated types, reads like the Go interceptors our users know,
//! and keeps generics out of `Server` and `Client`, at the cost of one boxed
//! future per middleware per call.
//!
//! ```
//! use switchboard::middleware::{Middleware, Next};
//! use switchboard::{BoxFuture, Request, Response, Status};
//!
//! /// Refuse calls that carry no `tenant` key.
//! struct RequireTenant;
//!
//! impl Middleware<Status> for RequireTenant {
//!     fn call<'a>(&'a self, req: Request, next: Next<'a, Status>) -> BoxFuture<'a, Result<Response, Status>> {
//!         Box::pin(async move {
//!             if req.metadata.get("tenant").is_none() {
//!                 return Err(Status::unauthenticated("missing tenant"));
//!             }
//!             next.run(req).await
//!         })
//!     }
//! }
//! ```

mod logging;

use std::sync::Arc;

pub use logging::Logging;

use crate::call::{BoxFuture, Request, Response};
use crate::error::Error;
use crate::status::{Code, Status};

/// Code that runs around every call. See the [module docs](self).
pub trait Middleware<E>: Send + Sync + 'static {
    /// Handle `req`, usually by calling `next.run(req)`.
    fn call<'a>(&'a self, req: Request, next: Next<'a, E>) -> BoxFuture<'a, Result<Response, E>>;
}

/// The innermost step of a chain: the handler router or the connection.
pub(crate) trait Endpoint<E>: Send + Sync {
    fn call<'a>(&'a self, req: Request) -> BoxFuture<'a, Result<Response, E>>;
}

/// The rest of the middleware chain, handed to each middleware.
pub struct Next<'a, E> {
    rest: &'a [Arc<dyn Middleware<E>>],
    endpoint: &'a dyn Endpoint<E>,
}

impl<'a, E: 'static> Next<'a, E> {
    pub(crate) fn new(chain: &'a [Arc<dyn Middleware<E>>], endpoint: &'a dyn Endpoint<E>) -> Next<'a, E> {
        Next { rest: chain, endpoint }
    }

    /// Pass `req` to the rest of the chain.
    pub fn run(self, req: Request) -> BoxFuture<'a, Result<Response, E>> {
        match self.rest.split_first() {
            Some((first, rest)) => first.call(req, Next { rest, endpoint: self.endpoint }),
            None => self.endpoint.call(req),
        }
    }
}

/// What middleware can learn from a side's error type.
pub trait Outcome {
    /// `"server"` or `"client"`.
    const SIDE: &'static str;
    /// The status code of the error.
    fn code(&self) -> Code;
}

impl Outcome for Status {
    const SIDE: &'static str = "server";
    fn code(&self) -> Code {
        Status::code(self)
    }
}

impl Outcome for Error {
    const SIDE: &'static str = "client";
    fn code(&self) -> Code {
        Error::code(self)
    }
}
