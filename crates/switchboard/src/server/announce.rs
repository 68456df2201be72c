//! Announcing a server to a registry: one [`Registration`] per service it
//! serves, kept up to date as services come and go, withdrawn on shutdown.
//!
//! The backend-specific work (heartbeats or lease keepalives, re-registering
//! after the registry forgot us) is the [`Registrar`]'s; this module only
//! turns the router's table into the list of registrations wanted and feeds
//! it every change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Router;
use crate::discovery::{InstanceMeta, Registrar, Registration};

/// What `ServerBuilder::registrar` and friends configured.
#[derive(Debug, Clone)]
pub(crate) struct AnnounceConfig {
    pub(crate) registrar: Arc<dyn Registrar>,
    pub(crate) advertise: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) metadata: InstanceMeta,
}

/// The running announcement.
pub(crate) struct Announcer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// Start announcing every service of `router` at `local` (or the
    /// advertised address). Fails if there is no address callers could use.
    pub(crate) fn start(config: &AnnounceConfig, router: Arc<Router>, local: SocketAddr) -> std::io::Result<Announcer> {
        let address = match &config.advertise {
            Some(address) => address.clone(),
            None if local.ip().is_unspecified() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "listening on {local}, which callers cannot dial: set the address to advertise \
                         (ServerBuilder::advertise)"
                    ),
                ))
            }
            None => local.to_string(),
        };
        let id = config.id.clone().unwrap_or_else(|| address.clone());
        let metadata = config.metadata.clone();
        let wanted = move |router: &Router| -> Vec<Registration> {
            router
                .services()
                .into_iter()
                .map(|s| Registration {
                    methods: s.methods.iter().map(|m| format!("{}.{m}", s.name)).collect(),
                    service: s.name,
                    id: id.clone(),
                    address: address.clone(),
                    metadata: metadata.clone(),
                })
                .collect()
        };
        let (tx, rx) = watch::channel(wanted(&router));
        let keep = tokio::spawn(config.registrar.keep_registered(rx));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut generation = router.subscribe();
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    changed = generation.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        tx.send_if_modified(|current| {
                            let next = wanted(&router);
                            let modified = *current != next;
                            *current = next;
                            modified
                        });
                    }
                }
            }
            // Closing the channel tells the registrar to deregister.
            drop(tx);
            let _ = keep.await;
        });
        Ok(Announcer { stop, task })
    }

    /// Deregister everything, waiting up to `timeout` for the registry.
    pub(crate) async fn stop(self, timeout: Duration) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            tracing::warn!(?timeout, "deregistering took too long; the registry will expire this server");
            task.abort();
        }
    }
}
