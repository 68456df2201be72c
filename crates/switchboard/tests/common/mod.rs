//! What the integration tests share (each test file that uses it says
//! `mod common;`; not every file uses every helper, hence the
//! `allow(dead_code)`):
//!
//! - [`serve`] / [`start`] / [`serve_task`]: a `Server` on a fresh loopback port, the
//!   listener bound before the server starts (never a port picked, dropped
//!   and bound again);
//! - [`wait_until`]: wait for a condition with a deadline, instead of
//!   sleeping and hoping;
//! - for the balancing tests, [`Node`]s: test servers each on its own Tokio
//!   runtime, so a test can kill one abruptly (its runtime dropped: tasks
//!   gone, sockets closed, no go-away), the in-process stand-in for SIGKILL;
//!   [`Manual`], a discovery source the test drives; [`instance`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::discovery::{Change, ChangeSender, Changes, Discover, Instance};
use switchboard::server::handler_fn;
use switchboard::{Server, Status};
use tokio::task::JoinHandle;

/// Serves `server` on a fresh loopback port; returns the address, which
/// takes connections as soon as this returns.
pub(crate) async fn serve(server: &Server) -> SocketAddr {
    serve_task(server).await.0
}

/// [`serve`] for a test that wants both back: the server (to change or shut
/// it down) and its address as text, as `Client::connect` takes it.
pub(crate) async fn start(server: Server) -> (Server, String) {
    let addr = serve(&server).await.to_string();
    (server, addr)
}

/// [`serve`], and the task running the accept loop (it ends with
/// `Server::serve`'s result once the server has shut down).
pub(crate) async fn serve_task(server: &Server) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("the listener's address");
    (addr, tokio::spawn(server.clone().serve(listener)))
}

/// Polls `condition` (every 5 ms) until it holds; panics naming `what` was
/// awaited if it still does not after `within` (wall-clock time, so the
/// bound holds whatever the test does with Tokio's clock).
pub(crate) async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let began = std::time::Instant::now();
    while !condition() {
        assert!(began.elapsed() < within, "waited {within:?} for {what}, in vain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How a node behaves; shared with the test so it can change at run time.
#[derive(Default)]
pub(crate) struct Behaviour {
    /// Calls it received, every method.
    pub(crate) hits: AtomicU32,
    /// `Node.Slow` sleeps this many ms.
    pub(crate) delay_ms: AtomicU64,
    /// `Node.Sick` answers Internal while set.
    pub(crate) sick: AtomicBool,
}

/// A server answering:
/// - `Node.Where`: its own address;
/// - `Node.Slow`: its address after `delay_ms`;
/// - `Node.Flaky`: Unavailable (after `delay_ms`);
/// - `Node.Sick`: Internal while `sick`, else its address.
pub(crate) struct Node {
    pub(crate) addr: String,
    pub(crate) behaviour: Arc<Behaviour>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Node {
    /// A node on a fresh loopback port.
    pub(crate) fn start() -> Node {
        Node::start_on("127.0.0.1:0", Arc::new(Behaviour::default())).expect("bind")
    }

    /// A node on `addr` (say, the address of a node killed earlier).
    pub(crate) fn start_on(addr: &str, behaviour: Arc<Behaviour>) -> std::io::Result<Node> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let server = Server::builder().build();
        let router = server.router();
        let me = addr.clone();
        let b = behaviour.clone();
        router
            .add_method(
                "Node.Where",
                handler_fn(move |(): ()| {
                    b.hits.fetch_add(1, Ordering::Relaxed);
                    std::future::ready(Ok::<_, Status>(me.clone()))
                }),
            )
            .expect("register");
        let (me, b) = (addr.clone(), behaviour.clone());
        router
            .add_method(
                "Node.Slow",
                handler_fn(move |(): ()| {
                    b.hits.fetch_add(1, Ordering::Relaxed);
                    let (me, delay) = (me.clone(), b.delay_ms.load(Ordering::Relaxed));
                    async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Ok::<_, Status>(me)
                    }
                }),
            )
            .expect("register");
        let b = behaviour.clone();
        router
            .add_method(
                "Node.Flaky",
                handler_fn(move |(): ()| {
                    b.hits.fetch_add(1, Ordering::Relaxed);
                    let delay = b.delay_ms.load(Ordering::Relaxed);
                    async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Err::<(), _>(Status::unavailable("overloaded"))
                    }
                }),
            )
            .expect("register");
        let (me, b) = (addr.clone(), behaviour.clone());
        router
            .add_method(
                "Node.Sick",
                handler_fn(move |(): ()| {
                    b.hits.fetch_add(1, Ordering::Relaxed);
                    std::future::ready(if b.sick.load(Ordering::Relaxed) {
                        Err(Status::internal("sick"))
                    } else {
                        Ok(me.clone())
                    })
                }),
            )
            .expect("register");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = server.serve(listener).await;
        });
        Ok(Node { addr, behaviour, runtime: Some(runtime) })
    }

    pub(crate) fn hits(&self) -> u32 {
        self.behaviour.hits.load(Ordering::Relaxed)
    }

    /// Stop abruptly: every task gone, every socket closed, no go-away.
    ///
    /// Returns once the node's tasks are dropped: `shutdown_background`
    /// alone returns before its worker has stopped, and a request already
    /// read could still be answered after the "kill". The shutdown runs on
    /// a plain thread because a runtime cannot be shut down and waited for
    /// from inside another one.
    pub(crate) fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let stopped = std::thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(5))).join();
            assert!(stopped.is_ok(), "the node's runtime shut down");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A discovery source the test drives by hand.
#[derive(Debug, Default)]
pub(crate) struct Manual {
    senders: std::sync::Mutex<Vec<ChangeSender>>,
}

impl Manual {
    pub(crate) async fn send(&self, batch: Vec<Change>) {
        let senders = self.senders.lock().expect("lock").clone();
        for tx in senders {
            let _ = tx.send(batch.clone()).await;
        }
    }
}

impl Discover for Manual {
    fn discover(&self, _service: &str) -> Changes {
        let (tx, rx) = Changes::channel(16);
        self.senders.lock().expect("lock").push(tx);
        rx
    }
}

/// An instance record for `addr` with `version` and `zone`.
pub(crate) fn instance(addr: &str, version: &str, zone: &str) -> Instance {
    let mut i = Instance::new(addr);
    i.metadata.version = version.into();
    i.metadata.zone = zone.into();
    i
}
