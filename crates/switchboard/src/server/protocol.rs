//! The protocol layer: how one listener serves several wire protocols.
//!
//! Every connection a [`Server`](super::Server) accepts is first shown to
//! each [`Protocol`] it serves: each looks at the connection's first bytes
//! and answers [`Detect`]. The one that claims the connection
//! [serves](Protocol::serve) it through a [`Connection`], which carries the
//! socket, the peer's address, the connection's time limits
//! ([`ConnClock`]) and a [`Dispatcher`]: the server's one way into the
//! router, with its middleware, the call's [`Context`](crate::Context)
//! (deadline, metadata, peer), the panic guard, the memory budget and the
//! drain. So every protocol answers calls the same way, whatever its wire
//! form.
//!
//! Switchboard's own frames are always served (they are tried first); the
//! HTTP/1.x row ([`super::http`]) is served when some extension adds a
//! route to it; more protocols come in through
//! [`ServerBuilder::protocol`](super::ServerBuilder::protocol), usually
//! from an [`Extension`](super::Extension) such as Go's net/rpc
//! (`switchboard::go::NetRpc`, feature `go`). docs/PROTOCOL.md lists the
//! detection rules of each.
//!
//! # Detection
//!
//! The server peeks (consumes nothing) at up to [`PREFIX_LEN`] bytes and
//! asks every protocol. It decides once no protocol says
//! [`Detect::NeedMore`] (or the prefix is full): the first protocol, in the
//! order they were added, that says [`Detect::Mine`] gets the connection;
//! failing that, the first that says [`Detect::Fallback`]; failing that the
//! connection is closed and logged. A protocol must decide on the bytes it
//! has seen: more bytes must never change a `Mine` or `NotMine` answer.
//! The handshake timeout covers detection: a peer that never sends enough
//! bytes is closed with the others that never send a frame.
//!
//! ```
//! use switchboard::server::protocol::{Connection, Detect, Protocol};
//! use switchboard::BoxFuture;
//!
//! /// Answers `PING\n` with `PONG\n`, on the same port as everything else.
//! struct Ping;
//!
//! impl Protocol for Ping {
//!     fn name(&self) -> &'static str {
//!         "ping"
//!     }
//!     fn detect(&self, prefix: &[u8]) -> Detect {
//!         match b"PING\n".get(..prefix.len()) {
//!             Some(start) if start == prefix && prefix.len() < 5 => Detect::NeedMore,
//!             _ if prefix.starts_with(b"PING\n") => Detect::Mine,
//!             _ => Detect::NotMine,
//!         }
//!     }
//!     fn serve(&self, conn: Connection) -> BoxFuture<'static, ()> {
//!         Box::pin(async move {
//!             use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!             let (mut stream, _clock, _dispatcher) = conn.into_parts();
//!             let mut line = [0u8; 5];
//!             if stream.read_exact(&mut line).await.is_ok() {
//!                 let _ = stream.write_all(b"PONG\n").await;
//!             }
//!         })
//!     }
//! }
//!
//! let server = switchboard::Server::builder().protocol(Ping).build();
//! # drop(server);
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

pub use super::limits::{CallCounter, CallGuard, Charge, ConnClock, Expired, MemoryBudget};
use super::{Inner, ServerConfig};
use crate::call::{BoxFuture, Request, Response};
use crate::status::Status;

/// The most bytes of a connection's start the server peeks at to tell its
/// protocol: enough for HTTP/2's 24-byte connection preface.
pub const PREFIX_LEN: usize = 24;

/// What a protocol makes of a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// These bytes start this protocol.
    Mine,
    /// They could start this protocol, and more bytes will tell.
    NeedMore,
    /// This protocol takes any connection no other protocol claims (Go's
    /// gob: a stream may start with any byte count).
    Fallback,
    /// Not this protocol.
    NotMine,
}

/// What a server makes of a connection's first bytes
/// ([`Server::detect`](super::Server::detect)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// The protocol (its [`Protocol::name`]) that would serve it.
    Protocol(&'static str),
    /// More bytes are needed to tell.
    NeedMore,
    /// No protocol of the server claims it: it would be closed.
    Unknown,
}

/// A wire protocol a server serves on its listeners, beside the others.
///
/// Implementations are cheap to share: one value serves every connection
/// that is detected as its own.
pub trait Protocol: Send + Sync + 'static {
    /// A short name for logs and metrics: `switchboard`, `go_gob`,
    /// `go_jsonrpc`, `http`.
    fn name(&self) -> &'static str;

    /// What `prefix`, the first bytes of a connection (one to
    /// [`PREFIX_LEN`]), makes of it. Called again with a longer prefix
    /// after [`Detect::NeedMore`] from any protocol.
    fn detect(&self, prefix: &[u8]) -> Detect;

    /// Serve one connection until it closes. Nothing has been read from
    /// its socket: the detected prefix is still there to be read.
    fn serve(&self, conn: Connection) -> BoxFuture<'static, ()>;
}

impl fmt::Debug for dyn Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One accepted connection, handed to the [`Protocol`] that claimed it.
pub struct Connection {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) clock: ConnClock,
    pub(super) dispatcher: Dispatcher,
}

impl Connection {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The server's side of every call on this connection.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The socket, the connection's time limits (the protocol tells the
    /// clock what it reads, and selects on [`ConnClock::expired`] beside
    /// its reads), and the dispatcher.
    pub fn into_parts(self) -> (TcpStream, ConnClock, Dispatcher) {
        (self.stream, self.clock, self.dispatcher)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// Whether the router serves a method, for protocols whose callers expect
/// their own wording for unknown names (Go's `rpc: can't find service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The router has this method.
    Found,
    /// No service of that name.
    NoService,
    /// The service exists, without this method.
    NoMethod,
}

/// A protocol's way into its server: runs calls through the server's
/// middleware and router, and tells the protocol the server's limits, its
/// memory budget and when it drains. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub(super) inner: Arc<Inner>,
}

impl Dispatcher {
    /// Runs one call: the server's middleware and the router, inside the
    /// call's [`Context`](crate::Context) (deadline, metadata, peer),
    /// under its deadline, with a panicking handler turned into an
    /// Internal error. Set [`Request::peer`] and, if the wire carries one,
    /// [`Request::deadline`]; [`ServerConfig::default_timeout`] is not
    /// applied here (see [`Dispatcher::default_deadline`]).
    pub async fn dispatch(&self, req: Request) -> Result<Response, Status> {
        self.inner.dispatch(req).await
    }

    /// The deadline of a call whose caller set none, from
    /// [`ServerConfig::default_timeout`].
    pub fn default_deadline(&self) -> Option<tokio::time::Instant> {
        self.inner.config.default_timeout.and_then(|d| tokio::time::Instant::now().checked_add(d))
    }

    /// Whether the router serves `method` (`Service.Method`).
    pub fn resolve(&self, method: &str) -> Resolution {
        self.inner.router.resolve(method)
    }

    /// The server's settings (frame limit, per-connection limits, ...).
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The memory budget all connections' buffers are charged to.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.inner.budget
    }

    /// Whether the server has begun to shut down: take no new calls.
    pub fn is_draining(&self) -> bool {
        self.inner.shutting_down.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A token cancelled when the server begins to shut down (stop reading
    /// new calls, let those in flight finish). Take a
    /// [child](tokio_util::sync::CancellationToken::child_token) per
    /// connection to wait on it cheaply.
    pub fn draining(&self) -> &tokio_util::sync::CancellationToken {
        &self.inner.draining
    }

    /// A token cancelled when the shutdown timeout has passed: abandon
    /// calls still running.
    pub fn stopped(&self) -> &tokio_util::sync::CancellationToken {
        &self.inner.stop
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}
