//! Call logging on the `tracing` crate.

use std::time::Instant;

use tracing::Level;

use super::{Middleware, Next, Outcome};
use crate::call::{BoxFuture, Request, Response};

/// Logs one event per call at target `switchboard::call`: side, method, peer,
/// status code and latency. Successful calls log at `INFO`, failed ones at
/// `WARN`, and so do calls that never finish: one dropped once its
/// deadline passed (the server cancels a handler at the deadline) logs
/// `DeadlineExceeded`, one dropped before it (the caller went away, the
/// server shut down) `Cancelled`.
///
/// When neither level is enabled for the target the middleware costs one
/// cached filter check per call: it does not even read the clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logging;

impl<E: Outcome + Send + 'static> Middleware<E> for Logging {
    fn call<'a>(&'a self, req: Request, next: Next<'a, E>) -> BoxFuture<'a, Result<Response, E>> {
        if !tracing::enabled!(target: "switchboard::call", Level::WARN) {
            return next.run(req);
        }
        Box::pin(async move {
            // A refcounted handle on the name, not a copy: this runs per call.
            let method = req.metadata.method_str().cloned().unwrap_or_default();
            let mut pending = Pending {
                side: E::SIDE,
                method,
                peer: req.peer,
                deadline: req.deadline,
                start: Instant::now(),
                done: false,
            };
            let result = next.run(req).await;
            pending.done = true;
            let status = match &result {
                Ok(_) => None,
                Err(e) => Some(e.code().as_str()),
            };
            pending.log(status);
            result
        })
    }
}

/// A call being logged; logs it as cancelled if dropped unfinished.
struct Pending {
    side: &'static str,
    method: crate::frame::ByteStr,
    peer: Option<std::net::SocketAddr>,
    deadline: Option<tokio::time::Instant>,
    start: Instant,
    done: bool,
}

impl Pending {
    /// One event: `None` is success.
    fn log(&self, status: Option<&str>) {
        let micros = self.start.elapsed().as_micros() as u64;
        let peer = self.peer.map(tracing::field::display);
        let (side, method) = (self.side, self.method.as_str());
        match status {
            None => tracing::info!(target: "switchboard::call", side, method, peer, status = "Ok", latency_us = micros),
            Some(status) => {
                tracing::warn!(target: "switchboard::call", side, method, peer, status, latency_us = micros)
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let expired = self.deadline.is_some_and(|at| tokio::time::Instant::now() >= at);
            self.log(Some(if expired { "DeadlineExceeded" } else { "Cancelled" }));
        }
    }
}
