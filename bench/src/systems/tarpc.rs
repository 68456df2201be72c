//! tarpc: a serde struct, bincode over tarpc's length-delimited TCP
//! transport.
//!
//! All callers share one client (one connection), as tarpc users share the
//! client a `spawn` returns. Defaults everywhere except `TCP_NODELAY`, set on
//! both ends as every other system here has it: tarpc's TCP helpers leave
//! Nagle's algorithm on, which would add delayed-ACK waits to small calls and
//! measure the socket option rather than tarpc.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use futures::{future, StreamExt as _};
use serde::{Deserialize, Serialize};
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

use crate::driver::AsyncCaller;
use crate::workload::{self, Cell};

/// The benchmark message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Message {
    id: u64,
    name: String,
    payload: Bytes,
}

#[tarpc::service]
pub(crate) trait Echo {
    /// Returns its argument.
    async fn echo(message: Message) -> Message;
}

#[derive(Clone)]
struct Echoer;

impl Echo for Echoer {
    async fn echo(self, _: context::Context, message: Message) -> Message {
        message
    }
}

/// Serve `Echo::echo` on `listener`: a channel per connection, a task per
/// request (tarpc's documented set-up).
pub(crate) async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let incoming = tcp::listen_on(listener, Bincode::default).await?;
    incoming
        .filter_map(|accepted| future::ready(accepted.ok()))
        .for_each(|transport| {
            let _ = transport.get_ref().set_nodelay(true);
            let requests = BaseChannel::with_defaults(transport).execute(Echoer.serve());
            tokio::spawn(requests.for_each(|response| async move {
                tokio::spawn(response);
            }));
            future::ready(())
        })
        .await;
    Ok(())
}

/// One caller: a clone of the shared client, its message and next id.
pub(crate) struct Caller {
    client: EchoClient,
    message: Message,
}

/// Connect one client and make `cell.callers` callers on it.
pub(crate) async fn callers(addr: SocketAddr, cell: Cell) -> anyhow::Result<Vec<Caller>> {
    let transport = tcp::connect(addr, Bincode::default)
        .await
        .with_context(|| format!("cannot connect to the tarpc server at {addr}"))?;
    transport.get_ref().set_nodelay(true).context("TCP_NODELAY")?;
    let client = EchoClient::new(client::Config::default(), transport).spawn();
    let payload = Bytes::from(workload::payload(cell.payload));
    Ok((0..cell.callers)
        .map(|i| Caller {
            client: client.clone(),
            message: Message { id: workload::first_id(i), name: workload::NAME.to_owned(), payload: payload.clone() },
        })
        .collect())
}

impl AsyncCaller for Caller {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.message.id += 1;
        // tarpc takes the message by value; the payload is a `Bytes`, so the
        // clone copies a pointer, not the payload.
        let reply = self.client.echo(context::current(), self.message.clone()).await.context("Echo::echo")?;
        workload::check_echo(self.message.id, self.message.payload.len(), reply.id, reply.payload.len())
    }
}
