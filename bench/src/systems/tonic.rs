//! tonic: gRPC over HTTP/2 with a prost message generated from
//! `proto/echo.proto` (see `build.rs`).
//!
//! All callers share one `Channel` (clones of one `EchoClient`), as a tonic
//! user would; tonic multiplexes them as HTTP/2 streams on one connection.
//! Defaults everywhere, except that the accepted connections get
//! `TCP_NODELAY` like tonic's own `serve` gives them (a pre-bound listener
//! does not inherit that setting).

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

use crate::driver::AsyncCaller;
use crate::workload::{self, Cell};

#[allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("bench");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::EchoMessage;

struct Echoer;

#[tonic::async_trait]
impl Echo for Echoer {
    async fn echo(&self, request: tonic::Request<EchoMessage>) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// Serve `Echo/Echo` on `listener` until the process exits.
pub(crate) async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder().add_service(EchoServer::new(Echoer)).serve_with_incoming(incoming).await?;
    Ok(())
}

/// One caller: a clone of the shared client, its payload and next id.
pub(crate) struct Caller {
    client: EchoClient<Channel>,
    payload: Bytes,
    id: u64,
}

/// Open one channel and make `cell.callers` callers on it.
pub(crate) async fn callers(addr: SocketAddr, cell: Cell) -> anyhow::Result<Vec<Caller>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .context("bad tonic endpoint")?
        .connect()
        .await
        .with_context(|| format!("cannot connect to the tonic server at {addr}"))?;
    let client = EchoClient::new(channel);
    let payload = Bytes::from(workload::payload(cell.payload));
    Ok((0..cell.callers)
        .map(|i| Caller { client: client.clone(), payload: payload.clone(), id: workload::first_id(i) })
        .collect())
}

impl AsyncCaller for Caller {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.id += 1;
        // tonic takes the message by value: a fresh one per call, as users write it.
        let request = EchoMessage { id: self.id, name: workload::NAME.to_owned(), payload: self.payload.clone() };
        let reply = self.client.echo(request).await.context("Echo/Echo")?.into_inner();
        workload::check_echo(self.id, self.payload.len(), reply.id, reply.payload.len())
    }
}
