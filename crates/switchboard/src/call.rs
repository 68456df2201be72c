//! What one call is made of on either side: [`Request`], [`Response`], and
//! the [`Context`] a handler runs in.
//!
//! These are the types middleware sees. Payloads stay encoded ([`Bytes`]
//! plus the [`Codec`] they are in) so middleware never pays for decoding it
//! does not need; typed code decodes at the edge.
//!
//! A server runs every handler inside a [`Context`] holding the caller's
//! deadline and metadata. A call made from inside a handler picks the
//! context up: its deadline is capped at what remains of the caller's, and
//! its trace context travels on. That is deadline propagation with nothing to
//! pass by hand.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::codec::{Codec, Decode, Encode};
use crate::frame::Metadata;
use crate::status::Status;

/// A boxed, sendable future: the one type used where futures cross trait
/// objects (handlers, middleware).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A call on its way to a handler (server side) or to the network (client
/// side).
#[derive(Debug, Clone)]
pub struct Request {
    /// The codec `payload` is encoded with.
    pub codec: Codec,
    /// Method name, deadline, trace context and user key/values.
    pub metadata: Metadata,
    /// The encoded argument.
    pub payload: Bytes,
    /// Server side: the caller's address, set by the protocol that read the
    /// call. Client side: unset (nothing fills it in; the server's address
    /// is the channel's business).
    pub peer: Option<SocketAddr>,
    /// When the caller stops waiting, on this host's clock. On the wire it
    /// travels as the time remaining, never as an absolute time.
    pub deadline: Option<Instant>,
}

impl Request {
    /// A request for `Service.Method` with an encoded payload.
    pub fn new(method: impl Into<crate::frame::ByteStr>, codec: Codec, payload: Bytes) -> Request {
        let mut metadata = Metadata::default();
        metadata.set_method(method);
        Request { codec, metadata, payload, peer: None, deadline: None }
    }

    /// `Service.Method`.
    pub fn method(&self) -> &str {
        self.metadata.method().unwrap_or("")
    }

    /// The service part of the method name (before the last `.`).
    pub fn service(&self) -> &str {
        split_method(self.method()).0
    }

    /// Decode the argument in the request's codec. A payload that does not
    /// decode is the caller's fault: `InvalidArgument`, naming the method.
    pub fn decode<A: Decode>(&self) -> Result<A, Status> {
        A::decode_bytes(self.codec, self.payload.clone())
            .map_err(|e| Status::invalid_argument(format!("cannot decode the argument of {}: {e}", self.method())))
    }
}

/// Split `Service.Method` at its last dot, as Go's net/rpc does.
pub(crate) fn split_method(full: &str) -> (&str, &str) {
    match full.rfind('.') {
        Some(dot) => (&full[..dot], &full[dot + 1..]),
        None => (full, ""),
    }
}

/// A successful answer.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The codec `payload` is encoded with (the request's).
    pub codec: Codec,
    /// The encoded result.
    pub payload: Bytes,
    /// Response metadata (user key/values).
    pub metadata: Metadata,
}

impl Response {
    /// A response with an encoded payload.
    pub fn new(codec: Codec, payload: Bytes) -> Response {
        Response { codec, payload, metadata: Metadata::default() }
    }

    /// A response holding `reply` encoded with `codec`. A reply that cannot
    /// be encoded is the server's fault: `Internal`.
    pub fn encode<R: Encode + ?Sized>(codec: Codec, reply: &R) -> Result<Response, Status> {
        let payload =
            reply.encode_bytes(codec).map_err(|e| Status::internal(format!("cannot encode the reply: {e}")))?;
        Ok(Response::new(codec, payload))
    }
}

/// The call a handler is serving: who called, with what metadata, and until
/// when. Read it with [`Context::current`] from anywhere inside a handler.
#[derive(Debug, Clone)]
pub struct Context {
    deadline: Option<Instant>,
    metadata: Metadata,
    peer: Option<SocketAddr>,
}

tokio::task_local! {
    static CURRENT: Context;
}

impl Context {
    pub(crate) fn at(deadline: Option<Instant>, metadata: Metadata, peer: Option<SocketAddr>) -> Context {
        Context { deadline, metadata, peer }
    }

    /// The context of the handler running on this task, if any.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// Run `fut` inside this context: calls it makes keep the caller's
    /// deadline and trace context, and [`Context::current`] in it is this
    /// one. A handler that hands work to a task of its own passes its
    /// context along this way (`tokio::spawn(ctx.scope(work))`).
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// When the caller stops waiting (local clock), if it set a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the caller's deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The request's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The caller's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Message {
        id: u64,
        #[serde(with = "crate::codec::zerocopy")]
        payload: Bytes,
    }

    #[test]
    fn request_decode_slices_zerocopy_fields_out_of_the_frame() {
        let frame = Message { id: 1, payload: Bytes::from(vec![1u8; 16384]) }.encode_bytes(Codec::Binary).unwrap();
        let req = Request::new("Echo.Echo", Codec::Binary, frame.clone());
        let back: Message = req.decode().unwrap();
        assert_eq!((back.id, back.payload.len()), (1, 16384));
        assert!(frame.as_ptr_range().contains(&back.payload.as_ptr()), "the payload was copied");
    }
}

/// Typed values attached to one call for a layer above the client to read:
/// at most one value per type. The balanced channel reads its per-call
/// settings from here ([`crate::balance::CallOptionsExt`]); middleware can
/// pass its own the same way, without the client knowing of them.
///
/// ```
/// use switchboard::call::Extensions;
///
/// #[derive(Debug, PartialEq)]
/// struct Tenant(&'static str);
///
/// let mut ext = Extensions::default();
/// ext.insert(Tenant("acme"));
/// assert_eq!(ext.get::<Tenant>(), Some(&Tenant("acme")));
/// assert_eq!(ext.get::<u32>(), None);
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    // Optional: most calls carry none, and then nothing is allocated.
    map: Option<std::collections::HashMap<std::any::TypeId, std::sync::Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Extensions {
    /// No extensions (what [`Default`] gives, usable in a `static`).
    pub const EMPTY: Extensions = Extensions { map: None };

    /// Attach `value`, replacing any earlier value of its type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.map.get_or_insert_with(Default::default).insert(std::any::TypeId::of::<T>(), std::sync::Arc::new(value));
    }

    /// The value of type `T`, if one is attached.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.map.as_ref()?.get(&std::any::TypeId::of::<T>())?.downcast_ref()
    }

    /// Whether nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(|m| m.is_empty())
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions").field("len", &self.map.as_ref().map_or(0, |m| m.len())).finish()
    }
}
