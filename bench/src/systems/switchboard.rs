//! Switchboard: the `echo_server` example (the real binary, not a copy of
//! its code) called through the public client API.
//!
//! All callers share one [`Client`], which multiplexes their calls on one
//! connection: that is how services use it. Each call is a typed
//! `Client::call`, so encoding and decoding the message is part of what is
//! measured, as it is for every peer.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use switchboard::Channel;
use switchboard::{Client, Codec};

use crate::driver::AsyncCaller;
use crate::workload::{self, Cell};

/// The echo_server's message (the same fields and serde attributes).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")] // Go's field names: Go's net/rpc client calls the same server
struct Message {
    id: u64,
    name: String,
    #[serde(with = "switchboard::codec::zerocopy")]
    payload: bytes::Bytes,
}

/// The `echo_server` command; `log` installs the logging middleware, with
/// info-level events filtered out (`RUST_LOG=warn`), as a production
/// service typically runs.
pub(crate) fn server_command(echo_server: &Path, log: bool) -> Command {
    let mut command = Command::new(echo_server);
    command.args(["--listen", "127.0.0.1:0"]).env("RUST_LOG", "warn");
    if log {
        command.arg("--log");
    }
    command
}

/// One caller: a clone of the shared client and its own message.
pub(crate) struct Caller {
    client: Client,
    message: Message,
}

/// Connect one client with `codec` and make `cell.callers` callers on it.
pub(crate) async fn callers(addr: SocketAddr, cell: Cell, codec: Codec) -> anyhow::Result<Vec<Caller>> {
    let client = Client::builder(addr.to_string())
        .codec(codec)
        .connect()
        .await
        .with_context(|| format!("cannot connect to echo_server at {addr}"))?;
    let payload = bytes::Bytes::from(workload::payload(cell.payload));
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
        let reply: Message = self.client.call("Echo.Echo", &self.message).await.context("Echo.Echo")?;
        workload::check_echo(self.message.id, self.message.payload.len(), reply.id, reply.payload.len())
    }
}
