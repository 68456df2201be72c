//! A typed client for the registry's HTTP API: what servers use to register
//! and heartbeat, and what discovery and `switchboard list` use to read.
//!
//! Errors keep apart "the registry could not be reached" (retry with
//! backoff, keep using cached data) from "the registry answered no" (an
//! [`ApiError`] with its HTTP status and machine code, such as
//! `unknown_instance`, which tells a server to register again).
//!
//! Service listings come in pages of changes ([`ServiceChanges`]):
//! [`instances`](RegistryClient::instances) follows the pages to a whole
//! list, [`changes`](RegistryClient::changes) and
//! [`watch`](RegistryClient::watch) return one page each (what
//! [`BuiltinDiscover`](crate::BuiltinDiscover) builds on). No answer is read
//! past [`max_answer_bytes`](RegistryClient::max_answer_bytes) (16 MiB by
//! default), so a caller's memory stays bounded whatever the registry sends.
//!
//! The `config_*` methods read and write config keys; most code uses them
//! through [`BuiltinConfigStore`](crate::BuiltinConfigStore), which
//! implements the backend-neutral `switchboard::config::ConfigStore`.
//!
//! ```no_run
//! use switchboard_registry::client::{Heartbeat, RegistryClient};
//! use switchboard_registry::model::RegisterRequest;
//!
//! # async fn run() -> Result<(), switchboard_registry::client::ClientError> {
//! let registry = RegistryClient::new("http://127.0.0.1:7700")?;
//! registry.register(&RegisterRequest::new("Arith", "arith-1", "127.0.0.1:9000")).await?;
//! if registry.heartbeat("Arith", "arith-1").await? == Heartbeat::Unknown {
//!     // The registry restarted and forgot us: register again.
//! }
//! let arith = registry.instances("Arith").await?;
//! println!("{} instances at index {}", arith.instances.len(), arith.index);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model::{
    ConfigDeleted, ConfigKey, ConfigList, Cursor, IndexReply, InstanceList, RegisterRequest, RegistryStatus,
    ServiceChanges, ServiceList,
};

/// Default of [`RegistryClient::max_answer_bytes`]: 16 MiB, far above the
/// registry's default listing cap (256 KiB).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes of a config listing read: config keys and values may take up
/// to 64 MiB (`max_config_bytes`), and JSON escaping can double them.
const MAX_CONFIG_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// How long an idle pooled connection is kept: well under the registry's
/// default idle timeout (60 s), so the client never reuses a connection the
/// registry is closing.
const POOL_IDLE: Duration = Duration::from_secs(20);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not an `http://host:port` URL.
    #[error("invalid registry URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be reached, or the exchange broke off.
    #[error("registry at {url} unreachable: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error.
    #[error("registry refused: {0}")]
    Api(ApiError),
    /// The registry's answer was not the JSON expected.
    #[error("unexpected answer from the registry at {url}: {reason}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    /// Whether trying again later may help (the registry was unreachable or
    /// answered with a server-side error).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api(e) => e.status.is_server_error(),
            ClientError::BadUrl { .. } | ClientError::BadAnswer { .. } => false,
        }
    }
}

/// An error answer from the registry: `{"error": ..., "code": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message} ({code})")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code, e.g. `unknown_instance`.
    pub code: String,
    /// The message, for people.
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    code: String,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The registry knows the instance; its TTL was renewed.
    Renewed,
    /// The registry does not know the instance (it restarted, or evicted
    /// us): register again.
    Unknown,
}

/// What a request carries.
enum Body<'a> {
    Empty,
    Json(&'a RegisterRequest),
    /// A config value, sent as-is.
    Text(&'a str),
}

/// A client of one registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: Url,
    http: reqwest::Client,
    max_answer: usize,
}

impl RegistryClient {
    /// A client of the registry at `base` (`http://127.0.0.1:7700`).
    pub fn new(base: &str) -> Result<RegistryClient, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: base.to_owned(), reason: reason.to_owned() };
        let base = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if base.scheme() != "http" {
            return Err(bad("only http:// registries are supported"));
        }
        if base.host_str().is_none() {
            return Err(bad("no host"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .map_err(|e| bad(&format!("cannot build the HTTP client: {e}")))?;
        Ok(RegistryClient { base, http, max_answer: MAX_ANSWER_BYTES })
    }

    /// Read no answer (but config listings) larger than `bytes`; a larger
    /// one is a [`ClientError::BadAnswer`]. Default [`MAX_ANSWER_BYTES`].
    pub fn max_answer_bytes(mut self, bytes: usize) -> RegistryClient {
        self.max_answer = bytes;
        self
    }

    /// The registry's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::BadUrl { url: self.base.to_string(), reason: "cannot be a base".into() })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Body<'_>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        self.send_limited(method, url, body, timeout, self.max_answer).await
    }

    async fn send_limited<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Body<'_>,
        timeout: Duration,
        limit: usize,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, url.clone()).timeout(timeout);
        match body {
            Body::Empty => {}
            Body::Json(body) => request = request.json(body),
            Body::Text(text) => {
                request =
                    request.header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8").body(text.to_owned());
            }
        }
        let unreachable = |source| ClientError::Unreachable { url: url.to_string(), source };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let too_large = || ClientError::BadAnswer {
            url: url.to_string(),
            reason: format!("the answer is larger than {limit} bytes (max_answer_bytes)"),
        };
        if response.content_length().is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.code, body.error),
                Err(_) => (String::new(), String::from_utf8_lossy(&bytes).into_owned()),
            };
            return Err(ClientError::Api(ApiError { status, code, message }));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::BadAnswer { url: url.to_string(), reason: e.to_string() })
    }

    /// Register (or update) an instance.
    pub async fn register(&self, request: &RegisterRequest) -> Result<IndexReply, ClientError> {
        self.send(Method::PUT, self.url(&["v1", "instances"])?, Body::Json(request), Duration::from_secs(5)).await
    }

    /// Remove an instance.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<IndexReply, ClientError> {
        self.send(Method::DELETE, self.url(&["v1", "instances", service, id])?, Body::Empty, Duration::from_secs(5))
            .await
    }

    /// Renew an instance's TTL.
    pub async fn heartbeat(&self, service: &str, id: &str) -> Result<Heartbeat, ClientError> {
        let url = self.url(&["v1", "instances", service, id, "heartbeat"])?;
        match self.send::<IndexReply>(Method::PUT, url, Body::Empty, Duration::from_secs(5)).await {
            Ok(_) => Ok(Heartbeat::Renewed),
            Err(ClientError::Api(e)) if e.code == "unknown_instance" => Ok(Heartbeat::Unknown),
            Err(e) => Err(e),
        }
    }

    /// Every service, with instance counts.
    pub async fn services(&self) -> Result<ServiceList, ClientError> {
        self.send(Method::GET, self.url(&["v1", "services"])?, Body::Empty, Duration::from_secs(5)).await
    }

    /// A service's whole list of instances now, sorted by id: the pages of
    /// a first listing followed to the end (as many as the registry's
    /// listing cap takes; the registry's `max_instances_per_service` bounds
    /// how many). `index` is the service's index after the last page.
    pub async fn instances(&self, service: &str) -> Result<InstanceList, ClientError> {
        let mut instances = BTreeMap::new();
        let mut cursor = Cursor::default();
        loop {
            let page = self.changes(service, cursor).await?;
            if page.reset {
                instances.clear(); // a reset lists everything live, from nothing
            }
            for id in &page.removed {
                instances.remove(id);
            }
            cursor = page.cursor();
            let (more, index, warming_up_ms) = (page.more, page.index, page.warming_up_ms);
            instances.extend(page.instances.into_iter().map(|i| (i.id.clone(), i)));
            if !more {
                return Ok(InstanceList { index, instances: instances.into_values().collect(), warming_up_ms });
            }
        }
    }

    /// One page of what changed in `service` after `cursor`, answered at
    /// once (a first listing for the default cursor). See [`ServiceChanges`]
    /// for how to apply it.
    pub async fn changes(&self, service: &str, cursor: Cursor) -> Result<ServiceChanges, ClientError> {
        let mut url = self.url(&["v1", "services", service])?;
        if cursor.index > 0 {
            Self::cursor_query(&mut url, cursor, Duration::ZERO);
        }
        self.send(Method::GET, url, Body::Empty, Duration::from_secs(5)).await
    }

    /// One page of what changed in `service` after `cursor`, once something
    /// did (a blocking query), or after `wait` with nothing new. A cursor
    /// from before a registry restart, or too old for the registry, answers
    /// at once with a reset.
    pub async fn watch(&self, service: &str, cursor: Cursor, wait: Duration) -> Result<ServiceChanges, ClientError> {
        let mut url = self.url(&["v1", "services", service])?;
        Self::cursor_query(&mut url, cursor, wait);
        // The registry answers at `wait` at the latest; allow for the trip.
        self.send(Method::GET, url, Body::Empty, wait + Duration::from_secs(5)).await
    }

    fn cursor_query(url: &mut Url, cursor: Cursor, wait: Duration) {
        let mut query = url.query_pairs_mut();
        query.append_pair("index", &cursor.index.to_string());
        if cursor.epoch != 0 {
            query.append_pair("epoch", &cursor.epoch.to_string());
        }
        query.append_pair("wait", &format!("{}ms", wait.as_millis()));
    }

    /// The URL of config key `key`: `/v1/config/` then the key's segments,
    /// each percent-encoded.
    fn config_url(&self, key: &str) -> Result<Url, ClientError> {
        let mut segments = vec!["v1", "config"];
        segments.extend(key.split('/'));
        self.url(&segments)
    }

    /// The config key `key`, or `None` if the registry has no such key.
    pub async fn config_get(&self, key: &str) -> Result<Option<ConfigKey>, ClientError> {
        match self.send(Method::GET, self.config_url(key)?, Body::Empty, Duration::from_secs(5)).await {
            Ok(entry) => Ok(Some(entry)),
            Err(ClientError::Api(e)) if e.status == StatusCode::NOT_FOUND && e.code == "unknown_key" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every config key under `prefix` (`""` for all), with the index the
    /// list was read at.
    pub async fn config_list(&self, prefix: &str) -> Result<ConfigList, ClientError> {
        let mut url = self.url(&["v1", "config"])?;
        url.query_pairs_mut().append_pair("prefix", prefix);
        self.send_limited(Method::GET, url, Body::Empty, Duration::from_secs(5), MAX_CONFIG_ANSWER_BYTES).await
    }

    /// The config keys under `prefix` once one of them is put or deleted
    /// after index `after` (a blocking query), or after `wait` with nothing
    /// new. An `after` from before a registry restart answers at once.
    pub async fn config_watch(&self, prefix: &str, after: u64, wait: Duration) -> Result<ConfigList, ClientError> {
        let mut url = self.url(&["v1", "config"])?;
        url.query_pairs_mut()
            .append_pair("prefix", prefix)
            .append_pair("index", &after.to_string())
            .append_pair("wait", &format!("{}ms", wait.as_millis()));
        let timeout = wait + Duration::from_secs(5);
        self.send_limited(Method::GET, url, Body::Empty, timeout, MAX_CONFIG_ANSWER_BYTES).await
    }

    /// Set config key `key` to `value`. The reply's index is the key's
    /// revision (unchanged if it already had this value).
    pub async fn config_put(&self, key: &str, value: &str) -> Result<IndexReply, ClientError> {
        // A large value takes a while to send on a slow link.
        let timeout = Duration::from_secs(5) + Duration::from_millis(value.len() as u64 / 64);
        self.send(Method::PUT, self.config_url(key)?, Body::Text(value), timeout).await
    }

    /// Delete config key `key`.
    pub async fn config_delete(&self, key: &str) -> Result<ConfigDeleted, ClientError> {
        self.send(Method::DELETE, self.config_url(key)?, Body::Empty, Duration::from_secs(5)).await
    }

    /// The registry's own status.
    pub async fn status(&self) -> Result<RegistryStatus, ClientError> {
        self.send(Method::GET, self.url(&["v1", "status"])?, Body::Empty, Duration::from_secs(5)).await
    }
}
