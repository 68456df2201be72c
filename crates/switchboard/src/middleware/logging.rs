//! Call logging on the `tracing` crate.

use std::time::Instant;

use tracing::Level;

use super::{Middleware, Next, Outcome};
use crate::call::{BoxFuture, Request, Response};

/// Logs one event per call at target `switchboard::call`: side, method, peer,
/// status code and latency. Successful calls log at `INFO`, failed ones at
/// `WARN`.
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
            let peer = req.peer;
            let start = Instant::now();
            let result = next.run(req).await;
            let micros = start.elapsed().as_micros() as u64;
            let peer = peer.map(tracing::field::display);
            match &result {
                Ok(_) => tracing::info!(
                    target: "switchboard::call",
                    side = E::SIDE, method = method.as_str(), peer, status = "Ok", latency_us = micros,
                ),
                Err(e) => tracing::warn!(
                    target: "switchboard::call",
                    side = E::SIDE, method = method.as_str(), peer, status = e.code().as_str(), latency_us = micros,
                ),
            }
            result
        })
    }
}
