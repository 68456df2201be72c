//! What the registry's integration tests share (each test file that uses it
//! says `mod common;`; not every file uses every helper, hence the
//! `allow(dead_code)`): a built-in registry on a fresh loopback port, with
//! or without an HTTP client for its API, and binding an address a
//! registry that just stopped may still hold.
//!
//! A file adds the requests it makes as its own `impl Registry` block (one
//! crate per test file, so each may shape them as it needs).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use switchboard_registry::{RegistryConfig, RegistryHandle, RegistryServer};
use tokio::net::TcpListener;

/// A running registry and an HTTP client for its API.
pub(crate) struct Registry {
    pub(crate) handle: RegistryHandle,
    /// `http://ADDR`, the registry's address.
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Registry {
    /// The URL of `path` (which starts with `/`) on this registry.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A registry held to `config` on a fresh loopback port, and a client for
/// it (no proxy; a 30 s timeout, so a request the registry never answers
/// fails the test instead of hanging it).
pub(crate) async fn registry(config: RegistryConfig) -> Registry {
    let handle = spawn_registry(config).await;
    let base = format!("http://{}", handle.local_addr());
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("an HTTP client");
    Registry { handle, base, http }
}

/// A registry held to `config` on a fresh loopback port, alone (for tests
/// that speak to it over raw sockets).
pub(crate) async fn spawn_registry(config: RegistryConfig) -> RegistryHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    RegistryServer::builder().config(config).build().spawn(listener).expect("the registry starts")
}

/// Binds `addr`, retrying for up to 5 s while it is taken: a restarted
/// registry takes the address its predecessor just released.
pub(crate) async fn bind(addr: &str) -> TcpListener {
    let began = Instant::now();
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if began.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}
