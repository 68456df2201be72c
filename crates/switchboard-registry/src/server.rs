//! The HTTP/JSON API over a [`Store`], served with axum, plus the background
//! sweep that enforces TTLs.
//!
//! Routes (docs/REGISTRY.md has request and response examples):
//!
//! | route | does |
//! |-------|------|
//! | `PUT /v1/instances` | register or update an instance → `{"index": N}` |
//! | `DELETE /v1/instances/{service}/{id}` | deregister → `{"index": N}`, 404 if unknown |
//! | `PUT /v1/instances/{service}/{id}/heartbeat` | renew → `{"index": N}`, 404 `unknown_instance` (register again) |
//! | `GET /v1/services` | services, instance counts, self-preservation flag |
//! | `GET /v1/services/{service}?index=N&epoch=E&wait=30s` | the instances changed after `N` (all, without `index`), in pages of at most the listing cap; with `index`, a blocking query |
//! | `GET /v1/status` | index, instance count, self-preservation, TTL and heartbeat settings |
//! | `GET /v1/config?prefix=P&index=N&wait=30s` | config keys under a prefix; with `index`, a blocking query |
//! | `GET /v1/config/{key}` | one config key, 404 `unknown_key` if absent |
//! | `PUT /v1/config/{key}` | set a key; the body is the raw UTF-8 value → `{"index": N}` |
//! | `DELETE /v1/config/{key}` | delete a key → `{"index": N, "deleted": bool}` |
//!
//! Every error is JSON, `{"error": "<message>", "code": "<machine code>"}`,
//! and a refused request changes nothing. Request data is never unwrapped.
//!
//! Service listings are [`ServiceChanges`](crate::model::ServiceChanges)
//! pages read from the store's change log ([`Store::changes`]): a watcher
//! gets what changed after the index it passes, never more than
//! [`RegistryConfig::listing_cap`] bytes at once.
//!
//! Connections are served by the registry's own accept loop (the `conn`
//! submodule, `server/conn.rs`): header, body and idle timeouts and a
//! connection cap, from [`RegistryConfig`].
//!
//! ```no_run
//! use switchboard_registry::{RegistryConfig, RegistryServer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! let handle = RegistryServer::builder().config(RegistryConfig::default()).build().spawn(listener)?;
//! println!("registry on http://{}", handle.local_addr());
//! handle.shutdown().await // answers waiting blocking queries, then drains
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::Deserialize;
use switchboard::config::{validate_key, ConfigError, MAX_VALUE_LEN};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::model::{ConfigDeleted, ConfigKey, ConfigList, Cursor, IndexReply, RegisterRequest};
use crate::store::{Page, Store, StoreError};

mod conn;

/// Response header carrying the index of a service listing (as Consul's `X-Consul-Index`).
pub const INDEX_HEADER: &str = "x-switchboard-index";

/// Shortest sweep interval the background task uses, whatever the config says.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

/// How long an encoded blocking-query answer may be reused (see [`ListingCache`]).
const LISTING_MAX_AGE: Duration = Duration::from_secs(1);

/// Builds a [`RegistryServer`].
#[derive(Debug, Default)]
pub struct RegistryServerBuilder {
    config: RegistryConfig,
    store: Option<Arc<Store>>,
}

impl RegistryServerBuilder {
    /// Timings, self-preservation and limits (default: [`RegistryConfig::default`]).
    pub fn config(mut self, config: RegistryConfig) -> Self {
        self.config = config;
        self
    }

    /// Serves an existing store instead of a new, empty one (the store's own
    /// config then governs TTLs, self-preservation and the registration and
    /// listing limits; this builder's config the HTTP ones: timeouts,
    /// connection cap, body size, waits).
    pub fn store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The server, ready to [`serve`](RegistryServer::serve) or [`spawn`](RegistryServer::spawn).
    pub fn build(self) -> RegistryServer {
        let store = self.store.unwrap_or_else(|| Arc::new(Store::new(self.config.clone())));
        RegistryServer { config: self.config, store }
    }
}

/// The registry: HTTP API plus TTL sweeper, over one [`Store`].
#[derive(Debug, Clone)]
pub struct RegistryServer {
    config: RegistryConfig,
    store: Arc<Store>,
}

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
    config: RegistryConfig,
    shutdown: CancellationToken,
    listings: Arc<ListingCache>,
}

impl RegistryServer {
    /// A builder with the default configuration.
    pub fn builder() -> RegistryServerBuilder {
        RegistryServerBuilder::default()
    }

    /// The store this server serves.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn router(&self, shutdown: CancellationToken) -> Router {
        let state = AppState {
            store: self.store.clone(),
            config: self.config.clone(),
            shutdown,
            listings: Arc::new(ListingCache::default()),
        };
        Router::new()
            .route("/v1/instances", put(register))
            .route("/v1/instances/{service}/{id}", delete(deregister))
            .route("/v1/instances/{service}/{id}/heartbeat", put(heartbeat))
            .route("/v1/services", get(services))
            .route("/v1/services/{service}", get(instances))
            .route("/v1/status", get(status))
            .route("/v1/config", get(config_list))
            // Config values may be larger than other bodies (up to the core's
            // MAX_VALUE_LEN); this inner limit overrides the router-wide one.
            .route(
                "/v1/config/{*key}",
                get(config_get).put(config_put).delete(config_delete).layer(DefaultBodyLimit::max(MAX_VALUE_LEN)),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(state)
    }

    /// Serves on `listener` until `signal` completes, then answers waiting
    /// blocking queries at once, stops the sweeper and drains open requests
    /// (connections still busy 5 s after the signal are closed).
    ///
    /// Every connection runs under the timeouts and the cap of the
    /// [`RegistryConfig`]: `header_timeout`, `body_timeout`, `idle_timeout`,
    /// `max_connections` (details in the `conn` submodule's docs).
    pub async fn serve<F>(self, listener: TcpListener, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        let app = self.router(token.clone());
        let sweeper = tokio::spawn(run_sweeper(self.store.clone(), self.config.sweep_interval, token.clone()));
        let stop = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = signal => {}
                () = stop.cancelled() => {}
            }
            stop.cancel();
        });
        let limits = conn::Limits {
            header: self.config.header_timeout,
            body: self.config.body_timeout,
            idle: self.config.idle_timeout,
            max_connections: self.config.max_connections,
        };
        conn::serve(listener, app, limits, token.clone()).await;
        token.cancel();
        if let Err(e) = sweeper.await {
            tracing::error!(target: "switchboard_registry", error = %e, "sweeper task failed");
        }
        Ok(())
    }

    /// Starts serving on a background task; the handle stops it. Dropping
    /// the handle leaves the server running.
    pub fn spawn(self, listener: TcpListener) -> io::Result<RegistryHandle> {
        let local_addr = listener.local_addr()?;
        let store = self.store.clone();
        let token = CancellationToken::new();
        let task = tokio::spawn(self.serve(listener, token.clone().cancelled_owned()));
        Ok(RegistryHandle { local_addr, store, token, task })
    }
}

/// A running registry started with [`RegistryServer::spawn`].
#[derive(Debug)]
pub struct RegistryHandle {
    local_addr: SocketAddr,
    store: Arc<Store>,
    token: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

impl RegistryHandle {
    /// The address the registry listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store behind the API.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Graceful shutdown: blocking queries answer with what they have, open
    /// requests finish, then the server and the sweeper stop.
    pub async fn shutdown(self) -> io::Result<()> {
        self.token.cancel();
        self.task.await.map_err(io::Error::other)?
    }
}

async fn run_sweeper(store: Arc<Store>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every.max(MIN_SWEEP_INTERVAL));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                store.sweep();
            }
        }
    }
}

// --- errors ------------------------------------------------------------------

/// An API error: status, machine-readable code, and a message naming what was wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come: this connection is done.
            response.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.to_string()),
            StoreError::UnknownInstance { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_instance", format!("{e}; register it again"))
            }
            StoreError::Config(ConfigError::InvalidKey { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string())
            }
            StoreError::Config(ConfigError::TooLarge { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", e.to_string())
            }
            StoreError::Config(ConfigError::Unavailable(_) | ConfigError::Backend(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            StoreError::TooManyInstances { .. } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_instances", e.to_string())
            }
            StoreError::ServiceFull { .. } => ApiError::new(StatusCode::CONFLICT, "service_full", e.to_string()),
            StoreError::MetadataTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "metadata_too_large", e.to_string())
            }
            StoreError::TooManyKeys { .. } => ApiError::new(StatusCode::CONFLICT, "too_many_keys", e.to_string()),
            StoreError::ConfigFull { .. } => ApiError::new(StatusCode::CONFLICT, "config_full", e.to_string()),
        }
    }
}

/// The body timeout behind a failed body read, if that is what it was.
fn body_timed_out<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a conn::BodyTimedOut> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(timeout) = e.downcast_ref::<conn::BodyTimedOut>() {
            return Some(timeout);
        }
        cause = e.source();
    }
    None
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if let Some(timeout) = body_timed_out(&r) {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", timeout.to_string());
        }
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_body" };
        ApiError::new(status, code, format!("request body could not be read: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", format!("invalid path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", format!("invalid query string: {}", r.body_text()))
    }
}

/// Parses a JSON body; a shape error names the field it is about.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("request body is not valid JSON: {e}"))
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return malformed(inner);
        }
        let message = if path == "." {
            format!("request body does not match the expected shape: {inner}")
        } else {
            format!("invalid field `{path}`: {inner}")
        };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    })?;
    de.end().map_err(malformed)?; // trailing characters after the object
    Ok(value)
}

// --- handlers ----------------------------------------------------------------

async fn register(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IndexReply>, ApiError> {
    let req: RegisterRequest = parse_json(&body?)?;
    let (service, id) = (req.service.clone(), req.id.clone());
    let index = st.store.register(req)?;
    tracing::debug!(target: "switchboard_registry", %service, %id, index, "registered");
    Ok(Json(IndexReply { index }))
}

async fn deregister(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<IndexReply>, ApiError> {
    let Path((service, id)) = path?;
    let index = st.store.deregister(&service, &id)?;
    tracing::debug!(target: "switchboard_registry", %service, %id, index, "deregistered");
    Ok(Json(IndexReply { index }))
}

async fn heartbeat(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<IndexReply>, ApiError> {
    let Path((service, id)) = path?;
    Ok(Json(IndexReply { index: st.store.heartbeat(&service, &id)? }))
}

async fn services(State(st): State<AppState>) -> Response {
    let list = st.store.services();
    with_index(list.index, Json(list))
}

async fn status(State(st): State<AppState>) -> Response {
    let status = st.store.status();
    with_index(status.index, Json(status))
}

#[derive(Debug, Deserialize)]
struct WatchParams {
    index: Option<u64>,
    wait: Option<String>,
    epoch: Option<u64>,
}

/// `GET /v1/services/{service}[?index=N&epoch=E&wait=D]`: the page of
/// changes after `N` (see [`ServiceChanges`](crate::model::ServiceChanges));
/// with `index`, once the service changed after `N` (or `wait` passed).
async fn instances(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WatchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(service) = path?;
    let Query(params) = query?;
    let wait = match params.wait.as_deref() {
        Some(text) => parse_wait(text)?.min(st.config.max_wait),
        None => st.config.default_wait,
    };
    let cursor = Cursor { index: params.index.unwrap_or(0), epoch: params.epoch.unwrap_or(0) };
    // An epoch from another life of the registry: its index means nothing
    // here, answer a reset at once.
    let same_life = cursor.epoch == 0 || cursor.epoch == st.store.epoch();
    if let (Some(after), true) = (params.index, same_life) {
        let parked = tokio::select! {
            (_, parked) = st.store.wait_for_change_parked(Some(&service), after, wait) => parked,
            () = st.shutdown.cancelled() => false,
        };
        // Every watcher one change wakes asks for the same page: encode it once.
        if parked {
            if let Some(answer) = st.listings.answer(&st.store, &service, cursor).await {
                return Ok(answer);
            }
        }
    }
    // Others are built fresh (`switchboard list` shows heartbeat ages).
    let page = st.store.page(&service, cursor, st.store.config().listing_cap());
    let encoded = Encoded::new(&page, st.store.epoch()).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("cannot encode the listing: {e}"))
    })?;
    Ok(encoded.response(millis(st.store.warming_up())))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Deserialize)]
struct ConfigParams {
    #[serde(default)]
    prefix: String,
    index: Option<u64>,
    wait: Option<String>,
}

/// `GET /v1/config?prefix=P[&index=N&wait=D]`: the keys under `prefix`; with
/// `index`, once something under it changed after `N` (or `wait` passed).
/// The answer's index is the global index the list was read at.
async fn config_list(
    State(st): State<AppState>,
    query: Result<Query<ConfigParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query?;
    validate_key(&params.prefix, true).map_err(StoreError::from)?;
    if let Some(after) = params.index {
        let wait = match params.wait.as_deref() {
            Some(text) => parse_wait(text)?.min(st.config.max_wait),
            None => st.config.default_wait,
        };
        tokio::select! {
            _ = st.store.wait_for_config_change(&params.prefix, after, wait) => {}
            () = st.shutdown.cancelled() => {}
        }
    }
    let list = ConfigList::from(st.store.config_list(&params.prefix)?);
    Ok(with_index(list.index, Json(list)))
}

/// `GET /v1/config/{key}`: one key, its revision in the index header.
async fn config_get(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = path?;
    match st.store.config_get(&key)? {
        Some(entry) => Ok(with_index(entry.revision, Json(ConfigKey::from(entry)))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_key", format!("no config key {key:?}"))),
    }
}

/// `PUT /v1/config/{key}`: the body is the value, as raw UTF-8 text.
async fn config_put(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IndexReply>, ApiError> {
    let Path(key) = path?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let message = format!("config value is larger than the limit of {MAX_VALUE_LEN} bytes");
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", message)
        } else {
            ApiError::from(r)
        }
    })?;
    let value = std::str::from_utf8(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_value", format!("config value is not UTF-8 text: {e}"))
    })?;
    let index = st.store.config_put(&key, value)?;
    tracing::debug!(target: "switchboard_registry", %key, index, "config key set");
    Ok(Json(IndexReply { index }))
}

/// `DELETE /v1/config/{key}`: whether it existed, and the index after.
async fn config_delete(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ConfigDeleted>, ApiError> {
    let Path(key) = path?;
    let (index, deleted) = st.store.config_delete(&key)?;
    tracing::debug!(target: "switchboard_registry", %key, index, deleted, "config key deleted");
    Ok(Json(ConfigDeleted { index, deleted }))
}

/// Encoded blocking-query answers, so that the watchers one change wakes
/// share one snapshot and one JSON encoding of their page instead of each
/// reading it under the store lock and encoding it again.
///
/// Only queries that actually waited are answered from here: they are the
/// many watchers of a service parked at its current index (or beyond), all
/// woken by the same change, asking for the same page. Keyed by service and
/// the index asked from. An entry is reused only while the service's index
/// is the one it was made for (every change to the service, health
/// included, bumps it) and for at most [`LISTING_MAX_AGE`]: heartbeats do
/// not bump the index, so an older entry's `last_heartbeat_ms` could be
/// stale by more than a wake-up's worth. The body is encoded with
/// `warming_up_ms` left out (as when warm); during warm-up the current value
/// is spliced in per answer, giving the same bytes the serde encoding of the
/// page would. Memory: entries past their age are dropped whenever a new one
/// is made and the last pruning is older than [`LISTING_MAX_AGE`]; a parked
/// query asks from at least the service's index, so its page holds only the
/// changes of that wake-up.
#[derive(Default)]
struct ListingCache {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    by_query: HashMap<(String, u64), Arc<Slot>>,
    pruned: Option<Instant>,
}

struct Slot {
    /// The service's index when the slot was made.
    index: u64,
    made: Instant,
    /// Filled by the first watcher to get here; the others wait for it.
    listing: OnceCell<Encoded>,
}

/// One page, encoded as JSON without `warming_up_ms`.
struct Encoded {
    /// The page's own index (the answer's `index` and header).
    index: u64,
    body: Bytes,
}

impl ListingCache {
    /// The answer for a blocking query on `service` from `cursor` that is
    /// done waiting, or `None` to build it fresh (a service that does not
    /// exist, or an encoding error, which the fresh path reports).
    async fn answer(&self, store: &Store, service: &str, cursor: Cursor) -> Option<Response> {
        let index = store.service_index(service);
        if index == 0 {
            return None; // nothing worth caching, and the name is the caller's
        }
        let slot = self.slot(service, cursor.index, index);
        let cap = store.config().listing_cap();
        let encoded = slot
            .listing
            .get_or_try_init(|| async { Encoded::new(&store.page(service, cursor, cap), store.epoch()) })
            .await
            .ok()?;
        Some(encoded.response(millis(store.warming_up())))
    }

    /// The slot for a query on `service` from `after`, the service being at
    /// `index`: the current one if it was made for that index less than
    /// [`LISTING_MAX_AGE`] ago, otherwise a new one.
    fn slot(&self, service: &str, after: u64, index: u64) -> Arc<Slot> {
        let now = Instant::now();
        let fresh = |slot: &Slot| now.saturating_duration_since(slot.made) < LISTING_MAX_AGE;
        let key = (service.to_owned(), after);
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = slots.by_query.get(&key).filter(|s| s.index == index && fresh(s)) {
            return slot.clone();
        }
        if slots.pruned.is_none_or(|at| now.saturating_duration_since(at) >= LISTING_MAX_AGE) {
            slots.by_query.retain(|_, s| fresh(s));
            slots.pruned = Some(now);
        }
        let slot = Arc::new(Slot { index, made: now, listing: OnceCell::new() });
        slots.by_query.insert(key, slot.clone());
        slot
    }
}

impl Encoded {
    fn new(page: &Page, epoch: u64) -> serde_json::Result<Self> {
        Ok(Encoded { index: page.index, body: Bytes::from(page.encode(epoch)?) })
    }

    /// The body as the serde encoding of the page gives it when its
    /// `warming_up_ms` is `warming_up_ms`: the field is the last one of
    /// [`ServiceChanges`](crate::model::ServiceChanges) and only present
    /// when non-zero, so it goes just before the closing brace.
    fn body_with(&self, warming_up_ms: u64) -> Bytes {
        if warming_up_ms == 0 {
            return self.body.clone(); // shared, not copied
        }
        let open = self.body.strip_suffix(b"}").unwrap_or(&self.body);
        let mut body = Vec::with_capacity(self.body.len() + 40);
        body.extend_from_slice(open);
        body.extend_from_slice(format!(",\"warming_up_ms\":{warming_up_ms}}}").as_bytes());
        Bytes::from(body)
    }

    fn response(&self, warming_up_ms: u64) -> Response {
        let body = self.body_with(warming_up_ms);
        let mut response = ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        response.headers_mut().insert(HeaderName::from_static(INDEX_HEADER), HeaderValue::from(self.index));
        response
    }
}

fn with_index(index: u64, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(HeaderName::from_static(INDEX_HEADER), HeaderValue::from(index));
    response
}

/// `wait=` values: an integer with a unit `ms`, `s`, `m` or `h` (a bare
/// integer means seconds), as in Consul.
pub(crate) fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("invalid `wait` {text:?}: expected a whole number with a unit, like 500ms, 30s or 5m"),
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let per_unit = match unit {
        "ms" => Duration::from_millis(1),
        "" | "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    // Saturate rather than overflow; the caller caps the result at max_wait.
    Ok(per_unit.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_values() {
        assert_eq!(parse_wait("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_wait("7").ok(), Some(Duration::from_secs(7)));
        for bad in ["", "s", "-1s", "1.5s", "10x", "ten"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
        assert!(parse_wait("99999999999999h").is_ok(), "huge values saturate, then get capped");
    }

    fn store_with(service: &str, n: usize) -> Store {
        let store = Store::new(RegistryConfig::default());
        for i in 0..n {
            let mut req = RegisterRequest::new(service, format!("i{i}"), format!("127.0.0.1:{}", 9000 + i));
            req.methods = vec![format!("{service}.Multiply")];
            req.metadata.version = "1.2.0".to_owned();
            req.metadata.kv.insert("k}".to_owned(), "{\"v\"}\\".to_owned());
            store.register(req).unwrap();
        }
        store
    }

    #[test]
    fn cached_bodies_are_byte_for_byte_what_serde_gives_for_the_page() {
        let (full, empty) = (store_with("Arith", 3), store_with("Empty", 0));
        let pages = [
            (&full, full.page("Arith", Cursor::default(), usize::MAX)),
            (&empty, empty.page("Empty", Cursor::default(), usize::MAX)),
        ];
        for (store, page) in pages {
            let encoded = Encoded::new(&page, store.epoch()).unwrap();
            assert_eq!(encoded.index, page.index);
            for warming_up_ms in [0, 1, 5999, u64::MAX] {
                let expected = serde_json::to_vec(&page.to_changes(store.epoch(), warming_up_ms)).unwrap();
                let body = encoded.body_with(warming_up_ms);
                assert_eq!(
                    std::str::from_utf8(&body).unwrap(),
                    std::str::from_utf8(&expected).unwrap(),
                    "warming_up_ms = {warming_up_ms}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_reused_only_for_the_same_query_and_index_and_for_at_most_a_second() {
        let cache = ListingCache::default();
        let first = cache.slot("A", 6, 7);
        assert!(Arc::ptr_eq(&first, &cache.slot("A", 6, 7)), "same change, same slot");
        assert!(!Arc::ptr_eq(&first, &cache.slot("B", 6, 7)), "one slot per service");
        assert!(!Arc::ptr_eq(&first, &cache.slot("A", 5, 7)), "one slot per index asked from");
        let changed = cache.slot("A", 6, 8);
        assert!(!Arc::ptr_eq(&first, &changed), "a new index gets a new slot");
        assert!(Arc::ptr_eq(&changed, &cache.slot("A", 6, 8)));

        tokio::time::advance(LISTING_MAX_AGE - Duration::from_millis(1)).await;
        assert!(Arc::ptr_eq(&changed, &cache.slot("A", 6, 8)), "still fresh");
        tokio::time::advance(Duration::from_millis(1)).await;
        let aged = cache.slot("A", 6, 8);
        assert!(!Arc::ptr_eq(&changed, &aged), "too old: heartbeats may have moved on");

        // Making that slot pruned the stale ones; it is the only one left.
        let slots = cache.slots.lock().unwrap();
        assert_eq!(slots.by_query.keys().collect::<Vec<_>>(), [&("A".to_owned(), 6)]);
        assert!(Arc::ptr_eq(&slots.by_query[&("A".to_owned(), 6)], &aged));
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_of_one_change_share_one_encoding_and_a_change_gets_a_new_one() {
        let store = store_with("Arith", 3);
        let cache = ListingCache::default();
        let body = |r: Response| async move { axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap() };
        let from = Cursor { index: store.service_index("Arith") - 1, epoch: store.epoch() };

        assert!(cache.answer(&store, "Nobody", Cursor::default()).await.is_none(), "never registered: built fresh");
        let a1 = cache.answer(&store, "Arith", from).await.unwrap();
        assert_eq!(a1.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(a1.headers()[INDEX_HEADER], store.service_index("Arith").to_string().as_str());
        let a2 = cache.answer(&store, "Arith", from).await.unwrap();
        let (a1, a2) = (body(a1).await, body(a2).await);
        assert_eq!(a1, a2);
        tokio::time::advance(store.warming_up()).await; // warm: the very same buffer
        let (w1, w2) = (
            body(cache.answer(&store, "Arith", from).await.unwrap()).await,
            body(cache.answer(&store, "Arith", from).await.unwrap()).await,
        );
        assert_eq!(w1.as_ptr(), w2.as_ptr(), "shared, not re-encoded");

        store.deregister("Arith", "i1").unwrap();
        let b = cache.answer(&store, "Arith", from).await.unwrap();
        assert_eq!(b.headers()[INDEX_HEADER], store.service_index("Arith").to_string().as_str());
        let b: crate::model::ServiceChanges = serde_json::from_slice(&body(b).await).unwrap();
        assert_eq!(b, store.changes("Arith", from));
        assert_eq!(b.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["i2"]);
        assert_eq!(b.removed, ["i1"]);
    }
}
