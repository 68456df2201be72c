//! # Switchboard registry
//!
//! The built-in service registry: servers register their instances and
//! heartbeat; callers list a service's instances and watch for changes with
//! blocking queries. One process, in memory, no external service: the
//! default for a single machine (etcd is the choice for clusters).
//!
//! ## Layout
//!
//! | module | what it holds |
//! |--------|---------------|
//! | [`model`] | the JSON shapes: [`RegisterRequest`](model::RegisterRequest) (what servers send) and [`Instance`](model::Instance) (what the registry returns), validation |
//! | [`config`] | [`RegistryConfig`]: heartbeat interval, TTL, sweep interval, self-preservation, limits |
//! | [`store`] | [`Store`]: the instances, the modification index, blocking waits, TTL sweep and self-preservation; no HTTP |
//! | [`server`] | [`RegistryServer`]: the axum HTTP/JSON API over a store, the background sweeper, graceful shutdown |
//!
//! How a registration flows: `PUT /v1/instances` → [`server`] reads the body
//! (64 KiB limit) and parses it → [`Store::register`] validates it, stores it
//! stamped with the current time and bumps the index → the index goes out on
//! a `tokio::sync::watch` channel → every blocking query waiting on that
//! service wakes and answers with the new list. Heartbeats renew the stamp;
//! the sweeper evicts instances whose TTL passed, unless self-preservation
//! holds. docs/REGISTRY.md describes the API and the trade-offs.

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod model;
pub mod server;
pub mod store;

pub use client::RegistryClient;
pub use config::RegistryConfig;
pub use server::{RegistryHandle, RegistryServer, RegistryServerBuilder};
pub use store::{Store, StoreError, SweepReport};
