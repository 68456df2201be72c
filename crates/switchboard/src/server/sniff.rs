//! The first step of every connection: tell its protocol from the first
//! bytes the client sends (rules in [`crate::go::netrpc`]), then hand it to
//! the loop that speaks it. Switchboard frames, Go's gob, JSON-RPC and
//! `rpc.DialHTTP` all share one port, with no flag to set.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::limits::ConnClock;
use super::{conn, Inner};
use crate::go::netrpc::{self, server as go, Protocol};

/// Tell the connection's protocol and serve it. The handshake timeout of
/// `clock` covers the sniffing: a client that never sends enough bytes to
/// name its protocol is dropped with the others that never send a frame.
pub(super) async fn serve(inner: Arc<Inner>, mut stream: TcpStream, peer: SocketAddr, mut clock: ConnClock) {
    // Peek until the protocol is known: nothing is consumed, so the native
    // path reads the stream exactly as if nothing had looked at it.
    let mut first = [0u8; 8];
    // A prefix too short to tell (`CONN`, a lone `C5`) is polled with a
    // growing pause: the socket stays readable while those bytes wait, so
    // `readable()` cannot be what we wait on.
    let mut pause = std::time::Duration::from_millis(1);
    let protocol = loop {
        let seen = tokio::select! {
            seen = stream.peek(&mut first) => seen,
            _ = inner.draining.cancelled() => return,
            expired = clock.expired(|| false) => {
                tracing::debug!(%peer, reason = %expired, "closing a connection that named no protocol");
                return;
            }
        };
        match seen {
            Ok(0) | Err(_) => return, // closed before a byte, or broken
            Ok(n) => match netrpc::sniff(&first[..n]) {
                Some(protocol) => break protocol,
                // Fewer bytes than it takes to tell: wait for more. (peek
                // returns at once while bytes are buffered, so yield.)
                None if n < first.len() => {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = inner.draining.cancelled() => return,
                        expired = clock.expired(|| false) => {
                            tracing::debug!(%peer, bytes = n, reason = %expired, "closing a connection whose first bytes name no protocol");
                            return;
                        }
                    }
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                None => break Protocol::Gob,
            },
        }
    };
    if protocol == Protocol::Switchboard {
        return conn::serve(inner, stream, peer, clock).await;
    }
    tracing::debug!(%peer, ?protocol, "Go net/rpc connection");
    // The Go loops read through their own buffer.
    let mut buf = BytesMut::with_capacity(8 << 10);
    if let Err(e) = stream.read_buf(&mut buf).await {
        tracing::debug!(%peer, error = %e, "read failed");
        return;
    }
    clock.read();
    let (rd, wr) = stream.into_split();
    match protocol {
        Protocol::Gob => go::serve_gob(inner, rd, wr, peer, buf, clock).await,
        Protocol::JsonRpc => go::serve_jsonrpc(inner, rd, wr, peer, buf, clock).await,
        Protocol::Http | Protocol::Switchboard => go::serve_http(inner, rd, wr, peer, buf, clock).await,
    }
}
