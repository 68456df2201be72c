//! The shared, lazily made connection to an etcd cluster, and the errors of
//! the etcd backend.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::EtcdOptions;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The `etcd://` URL does not parse.
    #[error("bad etcd URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// etcd (or the connection to it) answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// No answer within the request timeout.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// A watch was canceled by etcd (compaction, no leader, ...).
    #[error("etcd canceled the watch: {0}")]
    WatchCanceled(String),
    /// The watch stream ended.
    #[error("the etcd watch stream ended")]
    WatchEnded,
}

impl EtcdError {
    /// Whether the error says the revision asked for was compacted away.
    pub fn is_compacted(&self) -> bool {
        let text = self.to_string();
        text.contains("required revision has been compacted")
    }
}

/// A connection to one etcd cluster, shared by the registrar, discovery and
/// config store of a backend. Cheap to clone.
///
/// The gRPC channel is made on first use (etcd-client balances requests over
/// every endpoint and reconnects dropped connections by itself). Every
/// request carries the require-leader flag, so a member that has lost the
/// cluster's leader answers "no leader" instead of stale data, and our
/// retry goes elsewhere.
#[derive(Clone)]
pub struct EtcdConnection {
    options: Arc<EtcdOptions>,
    client: Arc<tokio::sync::Mutex<Option<Client>>>,
}

impl fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConnection").field("options", &self.options).finish_non_exhaustive()
    }
}

impl EtcdConnection {
    /// A connection to the cluster `options` names; nothing is dialled yet.
    pub fn new(options: EtcdOptions) -> EtcdConnection {
        EtcdConnection { options: Arc::new(options), client: Arc::new(tokio::sync::Mutex::new(None)) }
    }

    /// The options it was made with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// The etcd-client handle (made on the first call).
    pub async fn client(&self) -> Result<Client, EtcdError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let endpoints: Vec<String> = self.options.endpoints.iter().map(|e| format!("http://{e}")).collect();
        let connect = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(self.options.request_timeout)
            // HTTP/2 pings find a dead member behind a silent network; etcd
            // refuses pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = tokio::time::timeout(self.options.request_timeout, Client::connect(endpoints, Some(connect)))
            .await
            .map_err(|_| EtcdError::Timeout(self.options.request_timeout))??;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs one request with the request timeout.
    pub async fn request<T, F, Fut>(&self, f: F) -> Result<T, EtcdError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, f(client)).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(EtcdError::Timeout(timeout)),
        }
    }
}
