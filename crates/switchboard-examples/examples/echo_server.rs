//! Serves `Echo.Echo`, which returns its argument. The benchmarks call it.
//!
//! ```text
//! cargo run --release --example echo_server -- --listen 127.0.0.1:9001
//! cargo run --release --example echo_server -- --listen 127.0.0.1:9001 --log   # with the logging middleware
//! ```

use clap::Parser;
use serde::{Deserialize, Serialize};
use switchboard::go::NetRpc;
use switchboard::middleware::Logging;
use switchboard::{Server, Status};

/// The benchmark message. The payload is a zero-copy byte string: decoding
/// it slices the request frame instead of copying it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")] // Go's field names: Go's net/rpc client calls the same server
pub struct Message {
    pub id: u64,
    pub name: String,
    #[serde(with = "switchboard::codec::zerocopy")]
    pub payload: bytes::Bytes,
}

#[switchboard::service]
pub trait Echo {
    /// Returns its argument.
    #[switchboard(idempotent)]
    async fn echo(&self, msg: Message) -> Result<Message, Status>;
}

struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, msg: Message) -> Result<Message, Status> {
        Ok(msg)
    }
}

#[derive(Parser)]
#[command(about = "Serve the Echo service")]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,

    /// Install the logging middleware: one `tracing` event per call at target
    /// `switchboard::call` (INFO on success, WARN on failure; `RUST_LOG`
    /// filters them).
    #[arg(long)]
    log: bool,

    #[command(flatten)]
    limits: switchboard_cli::ServerFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_cli::init_logging("info");
    let cli = Cli::parse();
    let mut builder = cli.limits.apply(Server::builder()).with(NetRpc::default()).service(EchoServer::new(Echoer));
    if cli.log {
        builder = builder.layer(Logging);
    }
    let server = builder.build();
    switchboard_cli::serve_until_signal(server, &cli.listen).await
}
