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
mod router;
mod sniff;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use router::Resolved;
pub use router::{handler_fn, raw_handler_fn, Handler, RegisterError, Router, Service, ServiceInfo};

use crate::call::{Context, Request, Response};
use crate::discovery::{Metadata, Registrar};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::middleware::Middleware;
use crate::middleware::Next;
use crate::status::Status;
use announce::{AnnounceConfig, Announcer};

/// Server settings. The defaults suit most services.
#[derive(Debug, Clone)]
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
        }
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
    metadata: Metadata,
}

impl ServerBuilder {
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
    pub fn metadata(mut self, metadata: Metadata) -> ServerBuilder {
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
        let limit = self.config.max_connections.min(Semaphore::MAX_PERMITS);
        Server {
            inner: Arc::new(Inner {
                router: Arc::new(self.router),
                chain: self.middleware.into(),
                connection_slots: Arc::new(Semaphore::new(limit)),
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
    pub(crate) router: Arc<Router>,
    pub(crate) chain: Arc<[Arc<dyn Middleware<Status>>]>,
    pub(crate) config: ServerConfig,
    connection_slots: Arc<Semaphore>,
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
    /// (Switchboard frames, Go's net/rpc) calls through here.
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
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.inner.draining.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%local, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&self.inner.connection_slots).try_acquire_owned() else {
                let limit = self.inner.config.max_connections;
                tracing::warn!(%peer, limit, "connection limit reached; refusing the connection");
                tokio::spawn(conn::refuse(stream, limit));
                continue;
            };
            let _ = stream.set_nodelay(true);
            let inner = Arc::clone(&self.inner);
            self.inner.connections.spawn(async move {
                sniff::serve(inner, stream, peer).await;
                drop(slot);
            });
        }
        tracing::info!(%local, "switchboard server stopped accepting");
        Ok(())
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
