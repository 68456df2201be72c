//! The table of services a server answers, changeable while it serves.
//!
//! Lookups on the hot path take no lock: the table is an immutable map behind
//! an [`ArcSwap`], and every change (a service registered or removed, a
//! method added) builds a new map and swaps it in. A call that already looked
//! its handler up keeps it (an `Arc`) until it finishes, so removing a service
//! never cuts off calls in flight; the next call gets `NotFound`.
//!
//! Two kinds of entries share the table: service objects (what
//! `#[switchboard::service]` generates, or any [`Service`] impl) and dynamic
//! services assembled from handler functions registered one method at a time.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::protocol::Resolution;
use crate::call::{split_method, BoxFuture, Request, Response};
use crate::codec::{Decode, Encode};
use crate::middleware::Endpoint;
use crate::status::Status;

/// A named set of methods a server can answer.
///
/// `#[switchboard::service]` implements this for its generated `FooServer`
/// types; implement it by hand for full control over dispatch.
pub trait Service: Send + Sync + 'static {
    /// The service name callers use (`Arith` in `Arith.Multiply`).
    fn name(&self) -> &str;

    /// The method names it answers (`Multiply`).
    fn methods(&self) -> Vec<String>;

    /// Start `method` for `req`; `None` if the service has no such method.
    fn call(&self, method: &str, req: Request) -> Option<BoxFuture<'static, Result<Response, Status>>>;
}

/// A handler for one method: takes the encoded request, returns the encoded
/// response. Build one from a typed function with [`handler_fn`], or from a
/// raw one with [`raw_handler_fn`].
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Result<Response, Status>> + Send + Sync>;

/// A handler from an async function of the decoded argument. The argument is
/// decoded, and the result encoded, in the codec the caller chose.
///
/// ```
/// use switchboard::server::handler_fn;
/// use switchboard::Status;
///
/// let double = handler_fn(|x: i64| async move {
///     x.checked_mul(2).ok_or_else(|| Status::out_of_range("overflow"))
/// });
/// # drop(double);
/// ```
pub fn handler_fn<A, R, F, Fut>(f: F) -> Handler
where
    A: Decode + Send + 'static,
    R: Encode + Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Status>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |req: Request| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let args: A = req.decode()?;
            let reply = f(args).await?;
            Response::encode(req.codec, &reply)
        })
    })
}

/// A handler from an async function of the raw [`Request`].
pub fn raw_handler_fn<F, Fut>(f: F) -> Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, Status>> + Send + 'static,
{
    Arc::new(move |req: Request| Box::pin(f(req)))
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is not `Service.Method` with both parts non-empty.
    #[error("invalid method name {0:?}: expected Service.Method")]
    BadName(String),
    /// A method can only be added to a service built from functions, not to
    /// a service object.
    #[error(
        "service {0} is a service object (say, from #[switchboard::service]); methods cannot be added to it one by one: serve the new method under another service name, or register all of {0}'s methods as functions"
    )]
    NotDynamic(String),
}

/// A service's name and methods, as listed by [`Router::services`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service name.
    pub name: String,
    /// Its method names, sorted.
    pub methods: Vec<String>,
}

#[derive(Clone)]
enum Entry {
    Object(Arc<dyn Service>),
    Dynamic(Arc<BTreeMap<String, Handler>>),
}

impl Entry {
    fn methods(&self) -> Vec<String> {
        match self {
            Entry::Object(s) => {
                let mut m = s.methods();
                m.sort();
                m
            }
            Entry::Dynamic(m) => m.keys().cloned().collect(),
        }
    }
}

type Table = HashMap<String, Entry>;

/// The service table. Shared by a server and its handle; every method takes
/// `&self` and is safe to call while the server serves traffic.
pub struct Router {
    table: ArcSwap<Table>,
    /// Serialises writers; readers never take it.
    write: Mutex<()>,
    /// Bumped on every change, for watchers such as a registry announcer.
    generation: watch::Sender<u64>,
}

impl Default for Router {
    fn default() -> Router {
        Router::new()
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("services", &self.services()).finish()
    }
}

impl Router {
    /// An empty table.
    pub fn new() -> Router {
        Router { table: ArcSwap::from_pointee(Table::new()), write: Mutex::new(()), generation: watch::channel(0).0 }
    }

    fn update(&self, change: impl FnOnce(&mut Table) -> bool) -> bool {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = Table::clone(&self.table.load());
        let changed = change(&mut table);
        if changed {
            self.table.store(Arc::new(table));
            self.generation.send_modify(|g| *g += 1);
        }
        changed
    }

    /// Serve `service`, replacing any service of the same name. Returns
    /// whether one was replaced.
    pub fn add_service(&self, service: impl Service) -> bool {
        self.add_service_arc(Arc::new(service))
    }

    /// [`Router::add_service`] for a service already in an `Arc`.
    pub fn add_service_arc(&self, service: Arc<dyn Service>) -> bool {
        let name = service.name().to_owned();
        let mut replaced = false;
        self.update(|t| {
            replaced = t.insert(name, Entry::Object(service)).is_some();
            true
        });
        replaced
    }

    /// Answer `Service.Method` with `handler`, replacing an earlier handler
    /// for the same name.
    ///
    /// The service must be one built from functions (or new): a service
    /// object registered with [`add_service`](Self::add_service), such as
    /// one generated by `#[switchboard::service]`, answers its own methods
    /// as a whole, and adding one to it is refused with
    /// [`RegisterError::NotDynamic`]. Serve the extra method under
    /// another service name instead.
    pub fn add_method(&self, full_name: &str, handler: Handler) -> Result<(), RegisterError> {
        let (service, method) = split_method(full_name);
        if service.is_empty() || method.is_empty() {
            return Err(RegisterError::BadName(full_name.to_owned()));
        }
        let mut result = Ok(());
        self.update(|t| match t.get(service) {
            Some(Entry::Object(_)) => {
                result = Err(RegisterError::NotDynamic(service.to_owned()));
                false
            }
            Some(Entry::Dynamic(methods)) => {
                let mut methods = BTreeMap::clone(methods);
                methods.insert(method.to_owned(), handler);
                t.insert(service.to_owned(), Entry::Dynamic(Arc::new(methods)));
                true
            }
            None => {
                let methods = BTreeMap::from([(method.to_owned(), handler)]);
                t.insert(service.to_owned(), Entry::Dynamic(Arc::new(methods)));
                true
            }
        });
        result
    }

    /// Stop serving a whole service. Calls in flight finish; later calls get
    /// `NotFound`. Returns whether it was there.
    pub fn remove_service(&self, name: &str) -> bool {
        self.update(|t| t.remove(name).is_some())
    }

    /// Stop serving one function-registered method (the service goes when
    /// its last method does). Returns whether it was there.
    pub fn remove_method(&self, full_name: &str) -> bool {
        let (service, method) = split_method(full_name);
        self.update(|t| {
            let Some(Entry::Dynamic(methods)) = t.get(service) else {
                return false;
            };
            if !methods.contains_key(method) {
                return false;
            }
            let mut methods = BTreeMap::clone(methods);
            methods.remove(method);
            if methods.is_empty() {
                t.remove(service);
            } else {
                t.insert(service.to_owned(), Entry::Dynamic(Arc::new(methods)));
            }
            true
        })
    }

    /// Every service and its methods, sorted by name.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let table = self.table.load();
        let mut out: Vec<ServiceInfo> =
            table.iter().map(|(name, e)| ServiceInfo { name: name.clone(), methods: e.methods() }).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A receiver that changes whenever the table does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether `full` (`Service.Method`) names a method served right now,
    /// and if not, what is missing. (The router itself answers an unknown
    /// name with `NotFound`; Go's net/rpc callers expect its own wording,
    /// which needs the distinction.)
    pub fn resolve(&self, full: &str) -> Resolution {
        let table = self.table.load();
        let (service, method) = split_method(full);
        match table.get(service) {
            None => Resolution::NoService,
            Some(Entry::Dynamic(methods)) if methods.contains_key(method) => Resolution::Found,
            Some(Entry::Object(s)) if s.methods().iter().any(|m| m == method) => Resolution::Found,
            Some(_) => Resolution::NoMethod,
        }
    }

    /// Route `req` to its handler.
    pub fn dispatch(&self, req: Request) -> BoxFuture<'static, Result<Response, Status>> {
        let table = self.table.load();
        // A refcounted handle on the name, so `req` can move into the handler.
        let full = req.metadata.method_str().cloned().unwrap_or_default();
        let (service, method) = split_method(&full);
        let call = match table.get(service) {
            None => Err(Status::not_found(format!("unknown service {service:?} (called {:?})", &*full))),
            Some(entry @ Entry::Object(s)) => s.call(method, req).ok_or_else(|| no_method(service, method, entry)),
            Some(entry @ Entry::Dynamic(methods)) => match methods.get(method) {
                Some(h) => Ok(h(req)),
                None => Err(no_method(service, method, entry)),
            },
        };
        call.unwrap_or_else(|status| Box::pin(std::future::ready(Err(status))))
    }
}

fn no_method(service: &str, method: &str, entry: &Entry) -> Status {
    Status::not_found(format!("service {service:?} has no method {method:?} (it has: {})", entry.methods().join(", ")))
}

impl Endpoint<Status> for Router {
    fn call<'a>(&'a self, req: Request) -> BoxFuture<'a, Result<Response, Status>> {
        self.dispatch(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Object;

    impl Service for Object {
        fn name(&self) -> &str {
            "Inventory"
        }

        fn methods(&self) -> Vec<String> {
            vec!["Reserve".to_owned()]
        }

        fn call(&self, _method: &str, _req: Request) -> Option<BoxFuture<'static, Result<Response, Status>>> {
            None
        }
    }

    #[test]
    fn a_method_cannot_join_a_service_object_and_the_error_says_what_to_do() {
        let router = Router::new();
        router.add_service(Object);
        let restock = handler_fn(|n: u32| async move { Ok::<_, Status>(n) });
        let err = router.add_method("Inventory.Restock", restock.clone()).expect_err("a service object");
        assert_eq!(err, RegisterError::NotDynamic("Inventory".to_owned()));
        assert!(err.to_string().contains("under another service name"), "{err}");
        // Under another name it is served.
        router.add_method("InventoryAdmin.Restock", restock).expect("a new service");
    }
}
