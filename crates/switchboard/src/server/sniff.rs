//! The first step of every connection: tell its protocol from the first
//! bytes the client sends (rules in [`crate::go::netrpc`]), then hand it to
//! the loop that speaks it. Switchboard frames, Go's gob, JSON-RPC and
//! `rpc.DialHTTP` all share one port, with no flag to set.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{conn, Inner};
use crate::go::netrpc::{self, server as go, Protocol};

/// How long a connection may sit on a prefix too short to name its
/// protocol.
const UNDECIDED_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn serve(inner: Arc<Inner>, mut stream: TcpStream, peer: SocketAddr) {
    // Peek until the protocol is known: nothing is consumed, so the native
    // path reads the stream exactly as if nothing had looked at it.
    let mut first = [0u8; 8];
    // A prefix too short to tell (`CONN`, a lone `C5`) is polled with a
    // growing pause: the socket stays readable while those bytes wait, so
    // `readable()` cannot be what we wait on. A client that never sends the
    // rest is dropped after a while rather than polled forever.
    let mut pause = std::time::Duration::from_millis(1);
    let undecided_since = tokio::time::Instant::now();
    let protocol = loop {
        let seen = tokio::select! {
            seen = stream.peek(&mut first) => seen,
            _ = inner.draining.cancelled() => return,
        };
        match seen {
            Ok(0) | Err(_) => return, // closed before a byte, or broken
            Ok(n) => match netrpc::sniff(&first[..n]) {
                Some(protocol) => break protocol,
                // Fewer bytes than it takes to tell: wait for more. (peek
                // returns at once while bytes are buffered, so yield.)
                None if n < first.len() => {
                    if undecided_since.elapsed() > UNDECIDED_LIMIT {
                        tracing::debug!(%peer, bytes = n, "closing a connection whose first bytes name no protocol");
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = inner.draining.cancelled() => return,
                    }
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                None => break Protocol::Gob,
            },
        }
    };
    if protocol == Protocol::Switchboard {
        return conn::serve(inner, stream, peer).await;
    }
    tracing::debug!(%peer, ?protocol, "Go net/rpc connection");
    // The Go loops read through their own buffer.
    let mut buf = BytesMut::with_capacity(8 << 10);
    if let Err(e) = stream.read_buf(&mut buf).await {
        tracing::debug!(%peer, error = %e, "read failed");
        return;
    }
    let (rd, wr) = stream.into_split();
    match protocol {
        Protocol::Gob => go::serve_gob(inner, rd, wr, peer, buf).await,
        Protocol::JsonRpc => go::serve_jsonrpc(inner, rd, wr, peer, buf).await,
        Protocol::Http | Protocol::Switchboard => go::serve_http(inner, rd, wr, peer, buf).await,
    }
}
