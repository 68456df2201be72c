//! The first step of every connection: show its first bytes to each
//! protocol the server serves ([`Protocol::detect`]) and hand it to the
//! one that claims it (the rules are in [`super::protocol`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::limits::ConnClock;
use super::protocol::{Connection, Detect, Dispatcher, Protocol, PREFIX_LEN};
use super::Inner;

/// The protocol `prefix` belongs to, if the protocols can tell yet: `Ok`
/// with its index, `Err(true)` if more bytes are needed, `Err(false)` if
/// none claims it. `full` says the prefix cannot grow (the peek buffer is
/// full): a protocol still unsure then counts as not claiming it.
pub(crate) fn choose(protocols: &[Arc<dyn Protocol>], prefix: &[u8], full: bool) -> Result<usize, bool> {
    let mut mine = None;
    let mut fallback = None;
    let mut unsure = false;
    for (i, protocol) in protocols.iter().enumerate() {
        match protocol.detect(prefix) {
            Detect::Mine => {
                mine.get_or_insert(i);
            }
            Detect::NeedMore => unsure = true,
            Detect::Fallback => {
                fallback.get_or_insert(i);
            }
            Detect::NotMine => {}
        }
    }
    if unsure && !full {
        return Err(true);
    }
    mine.or(fallback).ok_or(false)
}

/// Tell the connection's protocol and serve it. The handshake timeout of
/// `clock` covers the detection: a client that never sends enough bytes to
/// name its protocol is dropped with the others that never send a frame.
pub(super) async fn serve(inner: Arc<Inner>, stream: TcpStream, peer: SocketAddr, mut clock: ConnClock) {
    // Peek until the protocol is known: nothing is consumed, so the chosen
    // protocol reads the stream exactly as if nothing had looked at it.
    let mut first = [0u8; PREFIX_LEN];
    // A prefix too short to tell (`CONN`, a lone `C5`) is polled with a
    // growing pause: the socket stays readable while those bytes wait, so
    // `readable()` cannot be what we wait on.
    let mut pause = Duration::from_millis(1);
    let protocols = Arc::clone(&inner.protocols);
    let chosen = loop {
        let seen = tokio::select! {
            seen = stream.peek(&mut first) => seen,
            _ = inner.draining.cancelled() => return,
            expired = clock.expired(|| false) => {
                tracing::debug!(%peer, reason = %expired, "closing a connection that named no protocol");
                return;
            }
        };
        let n = match seen {
            Ok(0) | Err(_) => return, // closed before a byte, or broken
            Ok(n) => n,
        };
        match choose(&protocols, &first[..n], n == first.len()) {
            Ok(i) => break i,
            Err(false) => {
                tracing::debug!(%peer, first = ?&first[..n], "closing a connection no protocol recognises");
                return;
            }
            // Fewer bytes than it takes to tell: wait for more. (peek
            // returns at once while bytes are buffered, so pause.)
            Err(true) => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = inner.draining.cancelled() => return,
                    expired = clock.expired(|| false) => {
                        tracing::debug!(%peer, bytes = n, reason = %expired, "closing a connection whose first bytes name no protocol");
                        return;
                    }
                }
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    };
    let protocol = &protocols[chosen];
    tracing::trace!(%peer, protocol = protocol.name(), "connection protocol");
    let conn = Connection { stream, peer, clock, dispatcher: Dispatcher { inner: Arc::clone(&inner) } };
    protocol.serve(conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::BoxFuture;

    struct Fixed(&'static str, fn(&[u8]) -> Detect);
    impl Protocol for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn detect(&self, prefix: &[u8]) -> Detect {
            (self.1)(prefix)
        }
        fn serve(&self, _: Connection) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn set(list: Vec<Fixed>) -> Vec<Arc<dyn Protocol>> {
        list.into_iter().map(|p| Arc::new(p) as Arc<dyn Protocol>).collect()
    }

    #[test]
    fn the_first_claim_wins_once_nobody_is_unsure() {
        let protocols = set(vec![
            Fixed("a", |p| if p.starts_with(b"A") { Detect::Mine } else { Detect::NotMine }),
            Fixed("b", |p| match p.len() {
                1 if p[0] == b'B' => Detect::NeedMore,
                _ if p.starts_with(b"B") => Detect::Mine,
                _ => Detect::NotMine,
            }),
            Fixed("any", |_| Detect::Fallback),
            Fixed("also-a", |p| if p.starts_with(b"A") { Detect::Mine } else { Detect::NotMine }),
        ]);
        assert_eq!(choose(&protocols, b"A", false), Ok(0));
        assert_eq!(choose(&protocols, b"B", false), Err(true));
        assert_eq!(choose(&protocols, b"BB", false), Ok(1));
        // A fallback waits for the unsure, then takes what nobody claims.
        assert_eq!(choose(&protocols, b"B", true), Ok(2));
        assert_eq!(choose(&protocols, b"Z", false), Ok(2));
        let without_fallback =
            set(vec![Fixed("a", |p| if p.starts_with(b"A") { Detect::Mine } else { Detect::NotMine })]);
        assert_eq!(choose(&without_fallback, b"Z", false), Err(false));
    }
}
