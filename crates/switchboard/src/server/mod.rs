//! The server: accepts connections, runs calls concurrently, answers out of
//! order, and shuts down gracefully.
//!
//! A [`Server`] is a cheap handle (clone it freely). Build one with
//! [`Server::builder`], hand it a bound listener with [`Server::serve`], and
//! change its services at any time through [`Server::router`]. One task per
//! connection reads frames; every request runs in its own task, so a slow
//! handler never holds up the others on the same connection; a writer task
//! per connection coalesces responses (see the private `io` module).
//!
//! With a [`Registrar`] set ([`ServerBuilder::registrar`]), the server
//! registers each service it serves when it starts serving, follows the
//! router's changes, and deregisters first thing in [`Server::shutdown`].
//!
//! [`Server::shutdown`] stops accepting, tells every client (a go-away frame)
//! to send new calls elsewhere, refuses requests that still arrive (marked
//! refused, so clients retry them safely), waits for calls in flight up to the
//! shutdown timeout, then cancels what is left and closes.
//!
//! ```no_run
//! use switchboard::server::{handler_fn, Server};
//! use switchboard::Status;
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder().build();
//! server.router().add_method("Math.Double", handler_fn(|x: i64| async move { Ok::<_, Status>(x * 2) }))
//!     .expect("valid name");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn(server.clone().serve(listener));
//! // ... later:
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod announce;
mod conn;
pub mod http;
pub(crate) mod limits;
pub mod protocol;
mod router;
mod sniff;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use router::{handler_fn, raw_handler_fn, Handler, RegisterError, Router, Service, ServiceInfo};

use crate::call::{Context, Request, Response};
use crate::discovery::{InstanceMeta, Registrar};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::middleware::Middleware;
use crate::middleware::Next;
use crate::status::Status;
use announce::{AnnounceConfig, Announcer};
use http::HttpRoute;
use limits::{Admission, ConnClock, MemoryBudget};
use protocol::Protocol;

/// Server settings. The defaults suit most services.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest frame accepted or sent (header + metadata + payload).
    /// Default 16 MiB.
    pub max_frame: usize,
    /// Most connections served at once; more are closed on accept, with a
    /// warning logged. Default 10,000.
    pub max_connections: usize,
    /// How long [`Server::shutdown`] waits for calls in flight before
    /// cancelling them. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Deadline for calls whose caller set none. Default: none.
    pub default_timeout: Option<Duration>,
    /// A response to a compressed request is compressed too when its payload
    /// is at least this long. Default 1 KiB.
    pub compress_threshold: usize,
    /// Most calls running at once on one connection. At the limit the server
    /// stops reading that connection until one finishes, so TCP flow control
    /// slows the client down (nothing is refused). Default 10,000.
    pub max_calls_per_connection: usize,
    /// Stop reading a connection while this many response bytes wait to be
    /// written to it (a client that does not read its answers). Default 8 MiB.
    pub max_queued_bytes: usize,
    /// Most connections from one IP address, so one peer cannot take the
    /// whole [`max_connections`](Self::max_connections). Default 1,024.
    pub max_connections_per_peer: usize,
    /// How long a new connection may take to send its first complete frame
    /// (or request header, whatever its protocol; naming the protocol
    /// included). Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a frame (or request) may take to arrive once its first
    /// bytes have; also how long answers may wait for a peer that reads
    /// none of them. Default 30 s.
    pub frame_timeout: Duration,
    /// Close a connection with nothing in flight (no call running, no
    /// answer waiting, no frame half read) for this long; a client's ping
    /// counts as traffic. A Switchboard client is sent a go-away first, so
    /// it moves to a new connection without losing a call. `None` keeps
    /// idle connections open. Default 5 min.
    pub idle_timeout: Option<Duration>,
    /// Bytes of buffered input and queued output all connections may hold
    /// together. Past it the server stops reading from connections that
    /// want more, refuses new large frames with ResourceExhausted, and the
    /// frame timeout drops connections that hold their share without making
    /// progress. Each connection's first read buffer (64 KiB) is not
    /// counted. Default 256 MiB.
    pub memory_budget: usize,
    /// Largest metadata section of a frame (method, deadline, trace
    /// context, status message and details, user entries). Checked from the
    /// header, before the bytes are buffered. Default 64 KiB.
    pub max_metadata_bytes: usize,
    /// Most user key/value entries in one frame's metadata. Default 256.
    pub max_metadata_entries: usize,
    /// Raise the process's soft open-file limit to its hard limit when the
    /// first server starts serving (as Go's runtime does). Default true.
    pub raise_fd_limit: bool,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            shutdown_timeout: Duration::from_secs(30),
            default_timeout: None,
            compress_threshold: 1024,
            max_calls_per_connection: 10_000,
            max_queued_bytes: 8 << 20,
            max_connections_per_peer: 1024,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(300)),
            memory_budget: 256 << 20,
            max_metadata_bytes: 64 << 10,
            max_metadata_entries: 256,
            raise_fd_limit: true,
        }
    }
}

__setters!(ServerConfig {
    max_frame: usize,
    max_connections: usize,
    shutdown_timeout: Duration,
    default_timeout: Option<Duration>,
    compress_threshold: usize,
    max_calls_per_connection: usize,
    max_queued_bytes: usize,
    max_connections_per_peer: usize,
    handshake_timeout: Duration,
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    memory_budget: usize,
    max_metadata_bytes: usize,
    max_metadata_entries: usize,
    raise_fd_limit: bool
});

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM: what a service
/// stops on, for [`Server::serve_until`]. If the signal handlers cannot be
/// installed it waits for Ctrl-C alone (and, if that fails too, never
/// completes, so a server is never stopped by a broken handler).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    router: Router,
    middleware: Vec<Arc<dyn Middleware<Status>>>,
    registrar: Option<Arc<dyn Registrar>>,
    advertise: Option<String>,
    instance_id: Option<String>,
    metadata: InstanceMeta,
    protocols: Vec<Arc<dyn Protocol>>,
    http_routes: Vec<HttpRoute>,
}

/// Something that adds to a server as it is built: protocols, HTTP
/// routes, middleware, services. Go's net/rpc (`switchboard::go::NetRpc`)
/// is one; add it with [`ServerBuilder::with`].
pub trait Extension {
    /// Adds what this extension brings to `builder`.
    fn extend(self, builder: ServerBuilder) -> ServerBuilder;
}

impl ServerBuilder {
    /// Add `extension`'s protocols, routes, middleware or services.
    pub fn with(self, extension: impl Extension) -> ServerBuilder {
        extension.extend(self)
    }

    /// Serve `protocol` on every listener too, beside Switchboard's own
    /// frames (always served, and tried first) and the protocols added
    /// before it (see [`protocol`] for how a connection's is told).
    pub fn protocol(mut self, protocol: impl Protocol) -> ServerBuilder {
        self.protocols.push(Arc::new(protocol));
        self
    }

    /// Serve `route` over HTTP/1.x on every listener (see [`http`]). The
    /// first route turns the HTTP row on.
    pub fn http_route(mut self, route: HttpRoute) -> ServerBuilder {
        self.http_routes.push(route);
        self
    }

    /// Serve `service` (more can be added later through [`Server::router`]).
    pub fn service(self, service: impl Service) -> ServerBuilder {
        self.router.add_service(service);
        self
    }

    /// Add a middleware; the first added runs outermost.
    pub fn layer(mut self, middleware: impl Middleware<Status>) -> ServerBuilder {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Replace the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> ServerBuilder {
        self.config = config;
        self
    }

    /// Set [`ServerConfig::max_frame`].
    pub fn max_frame(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_frame = bytes;
        self
    }

    /// Set [`ServerConfig::max_connections`].
    pub fn max_connections(mut self, n: usize) -> ServerBuilder {
        self.config.max_connections = n;
        self
    }

    /// Set [`ServerConfig::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::max_connections_per_peer`].
    pub fn max_connections_per_peer(mut self, n: usize) -> ServerBuilder {
        self.config.max_connections_per_peer = n;
        self
    }

    /// Set [`ServerConfig::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::frame_timeout`].
    pub fn frame_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.frame_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> ServerBuilder {
        self.config.idle_timeout = timeout;
        self
    }

    /// Set [`ServerConfig::memory_budget`].
    pub fn memory_budget(mut self, bytes: usize) -> ServerBuilder {
        self.config.memory_budget = bytes;
        self
    }

    /// Register every service this server serves with `registrar` once it
    /// serves, keep the registrations current as services are added and
    /// removed, and withdraw them on [`Server::shutdown`] before draining.
    pub fn registrar(mut self, registrar: Arc<dyn Registrar>) -> ServerBuilder {
        self.registrar = Some(registrar);
        self
    }

    /// The `host:port` to register (default: the listener's address, which
    /// must then not be `0.0.0.0` or `[::]`).
    pub fn advertise(mut self, address: impl Into<String>) -> ServerBuilder {
        self.advertise = Some(address.into());
        self
    }

    /// The instance id to register (default: the advertised address).
    pub fn instance_id(mut self, id: impl Into<String>) -> ServerBuilder {
        self.instance_id = Some(id.into());
        self
    }

    /// Version, weight, zone, tags and key/values to register.
    pub fn metadata(mut self, metadata: InstanceMeta) -> ServerBuilder {
        self.metadata = metadata;
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        let announce = self.registrar.map(|registrar| AnnounceConfig {
            registrar,
            advertise: self.advertise,
            id: self.instance_id,
            metadata: self.metadata,
        });
        let mut protocols: Vec<Arc<dyn Protocol>> = vec![Arc::new(conn::Native)];
        if !self.http_routes.is_empty() {
            protocols.push(Arc::new(http::Http::new(self.http_routes)));
        }
        protocols.extend(self.protocols);
        Server {
            inner: Arc::new(Inner {
                protocols: protocols.into(),
                router: Arc::new(self.router),
                chain: self.middleware.into(),
                admission: Admission::new(&self.config),
                budget: MemoryBudget::new(self.config.memory_budget),
                reserve_fd: std::sync::Mutex::new(None),
                config: self.config,
                draining: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
                stop: CancellationToken::new(),
                connections: TaskTracker::new(),
                announce,
                announcer: std::sync::Mutex::new(None),
            }),
        }
    }
}

pub(crate) struct Inner {
    /// What the server speaks, in the order detection asks them.
    protocols: Arc<[Arc<dyn Protocol>]>,
    pub(crate) router: Arc<Router>,
    pub(crate) chain: Arc<[Arc<dyn Middleware<Status>>]>,
    pub(crate) config: ServerConfig,
    /// The open connections, against the global and per-peer caps.
    pub(crate) admission: Arc<Admission>,
    /// Buffered input and queued output of all connections.
    pub(crate) budget: Arc<MemoryBudget>,
    /// A file descriptor held in reserve: when the process runs out and no
    /// idle connection can be closed, it is given up to accept and refuse
    /// one waiting client, so that client hears why at once.
    reserve_fd: std::sync::Mutex<Option<std::fs::File>>,
    /// Graceful phase: no new connections or calls; calls in flight finish.
    pub(crate) draining: CancellationToken,
    /// Set just before `draining` is cancelled. Connection tasks check it
    /// for every request they decode (a load, where the token's own check
    /// takes a lock shared by every connection), so a task that has not yet
    /// been woken by the token still refuses a request read after shutdown
    /// began instead of running it.
    pub(crate) shutting_down: AtomicBool,
    /// Hard stop: cancel whatever still runs.
    pub(crate) stop: CancellationToken,
    connections: TaskTracker,
    announce: Option<AnnounceConfig>,
    /// Running once the first listener serves (if a registrar is set).
    announcer: std::sync::Mutex<Option<Announcer>>,
}

impl Inner {
    /// Runs one call: the server middleware and the router, inside the
    /// call's [`Context`], under its deadline, with a panicking handler
    /// turned into an Internal error. Every protocol the server speaks
    /// calls through here ([`protocol::Dispatcher::dispatch`]).
    pub(crate) async fn dispatch(&self, req: Request) -> Result<Response, Status> {
        let deadline = req.deadline;
        let ctx = Context::at(deadline, req.metadata.clone(), req.peer);
        let mut chain = Next::new(&self.chain, &*self.router).run(req);
        // A panicking handler must not leave its caller waiting: it becomes
        // an Internal error and the connection carries on.
        let guarded = std::future::poll_fn(move |cx| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chain.as_mut().poll(cx))) {
                Ok(poll) => poll,
                Err(_) => {
                    // Still inside the call's Context: it names the method.
                    let method = Context::current().and_then(|c| c.metadata().method().map(str::to_owned));
                    let method = method.unwrap_or_default();
                    tracing::error!(%method, "handler panicked");
                    Poll::Ready(Err(Status::internal(format!("the handler of {method} panicked"))))
                }
            }
        });
        let call = ctx.scope(guarded);
        match deadline {
            None => call.await,
            Some(at) => match tokio::time::timeout_at(at, call).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded("the deadline passed while the server was handling the call")),
            },
        }
    }
}

impl Inner {
    /// Put a descriptor in reserve if none is (see `reserve_fd`).
    fn keep_reserve_fd(&self) {
        let mut reserve = self.reserve_fd.lock().unwrap_or_else(|p| p.into_inner());
        if reserve.is_none() {
            *reserve = std::fs::File::open("/dev/null").ok();
        }
    }

    /// The process is out of file descriptors: ask the connections idle the
    /// longest to close; if none is idle, spend the reserve descriptor to
    /// accept one waiting client and tell it why it is refused.
    async fn make_room(&self, listener: &TcpListener, error: &std::io::Error) {
        let open = self.admission.open();
        let asked = self.admission.evict_idle(EVICT_WHEN_OUT_OF_FDS);
        tracing::warn!(error = %error, open, closing_idle = asked, "out of file descriptors");
        if asked > 0 {
            return;
        }
        let reserve = self.reserve_fd.lock().unwrap_or_else(|p| p.into_inner()).take();
        if reserve.is_none() {
            return;
        }
        drop(reserve);
        // A client is waiting (accept failed for want of a descriptor, not
        // of a client): this accept returns at once.
        if let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await {
            tracing::warn!(%peer, "refusing a connection: out of file descriptors");
            tokio::spawn(conn::refuse(
                stream,
                "the server is out of file descriptors; try another instance".to_owned(),
            ));
        }
    }
}

/// How many idle connections to close each time accept runs out of file
/// descriptors.
const EVICT_WHEN_OUT_OF_FDS: usize = 8;

/// EMFILE (this process) or ENFILE (the whole system).
fn is_out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// A Switchboard server. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("config", &self.inner.config).field("router", &self.inner.router).finish()
    }
}

/// What [`Server::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every call in flight finished within the shutdown timeout
    /// (`false`: the rest were cancelled).
    pub drained: bool,
}

impl Server {
    /// A builder with the default configuration.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The service table: add and remove services while serving.
    pub fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Which of this server's protocols a connection starting with
    /// `first` would be served with (see [`protocol`] for the rules).
    pub fn detect(&self, first: &[u8]) -> protocol::Detected {
        let protocols = &self.inner.protocols;
        match sniff::choose(protocols, first, first.len() >= protocol::PREFIX_LEN) {
            Ok(i) => protocol::Detected::Protocol(protocols[i].name()),
            Err(true) => protocol::Detected::NeedMore,
            Err(false) => protocol::Detected::Unknown,
        }
    }

    /// Accept connections on `listener` until [`Server::shutdown`]. May be
    /// called for several listeners at once.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        tracing::info!(%local, "switchboard server listening");
        if let Some(config) = &self.inner.announce {
            let mut announcer = self.inner.announcer.lock().unwrap_or_else(|p| p.into_inner());
            if announcer.is_none() && !self.inner.draining.is_cancelled() {
                *announcer = Some(Announcer::start(config, Arc::clone(&self.inner.router), local)?);
            }
        }
        if self.inner.config.raise_fd_limit {
            limits::raise_fd_limit();
        }
        self.inner.keep_reserve_fd();
        // Out of file descriptors: wait this long before accepting again
        // (grows while it lasts).
        let mut out_of_fds_pause = Duration::from_millis(1);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.inner.draining.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) if is_out_of_fds(&e) => {
                    self.inner.make_room(&listener, &e).await;
                    tokio::select! {
                        _ = self.inner.draining.cancelled() => break,
                        _ = tokio::time::sleep(out_of_fds_pause) => {}
                    }
                    out_of_fds_pause = (out_of_fds_pause * 2).min(Duration::from_millis(100));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%local, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if out_of_fds_pause > Duration::from_millis(1) {
                // Descriptors are back: put one in reserve again.
                out_of_fds_pause = Duration::from_millis(1);
                self.inner.keep_reserve_fd();
            }
            let accepted_at = tokio::time::Instant::now();
            let ticket = match self.inner.admission.admit(peer.ip()) {
                Ok(ticket) => ticket,
                Err(refusal) => {
                    tracing::warn!(%peer, %refusal, "refusing a connection");
                    tokio::spawn(conn::refuse(stream, refusal.to_string()));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let inner = Arc::clone(&self.inner);
            let clock = ConnClock::new(&inner.config, ticket, accepted_at);
            self.inner.connections.spawn(sniff::serve(inner, stream, peer, clock));
        }
        tracing::info!(%local, "switchboard server stopped accepting");
        Ok(())
    }

    /// Serve on `listener` until `stop` completes, then [shut
    /// down](Self::shutdown) gracefully (deregistering first when a
    /// registrar is set, then draining) and return its report. What a
    /// service's `main` ends with; pass [`shutdown_signal()`] to stop on
    /// Ctrl-C or SIGTERM. Fails if serving ends on its own with an error
    /// (say, no address to advertise to the registry).
    ///
    /// ```no_run
    /// use switchboard::server::{shutdown_signal, Server};
    ///
    /// # async fn run(server: Server) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    /// let report = server.serve_until(listener, shutdown_signal()).await?;
    /// eprintln!("stopped: {report:?}");
    /// # Ok(()) }
    /// ```
    pub async fn serve_until(
        self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<ShutdownReport> {
        let mut serving = tokio::spawn(self.clone().serve(listener));
        tokio::select! {
            _ = stop => {}
            served = &mut serving => match served {
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(std::io::Error::other(format!("the accept loop failed: {e}"))),
                // Stopped accepting: someone else began the shutdown.
                Ok(Ok(())) => {}
            },
        }
        tracing::info!("shutting down");
        let report = self.shutdown().await;
        serving.abort();
        Ok(report)
    }

    /// Shut down gracefully: stop accepting, send go-away, wait for calls in
    /// flight up to [`ServerConfig::shutdown_timeout`], cancel the rest, and
    /// close every connection. Returns when all connections are closed.
    pub async fn shutdown(&self) -> ShutdownReport {
        // Leave the registry first, so callers stop choosing this server
        // while it still answers what they already sent.
        let announcer = self.inner.announcer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(announcer) = announcer {
            announcer.stop(self.inner.config.shutdown_timeout.min(Duration::from_secs(5))).await;
        }
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.draining.cancel();
        self.inner.connections.close();
        let drained =
            tokio::time::timeout(self.inner.config.shutdown_timeout, self.inner.connections.wait()).await.is_ok();
        if !drained {
            tracing::warn!("shutdown timeout passed; cancelling calls still in flight");
            self.inner.stop.cancel();
            self.inner.connections.wait().await;
        }
        ShutdownReport { drained }
    }
}
