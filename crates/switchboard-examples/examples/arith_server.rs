//! Serves `Arith.Multiply` and `Arith.Divide`.
//!
//! ```text
//! cargo run --release --example arith_server -- --listen 127.0.0.1:9000
//! ```

#![allow(unreachable_pub)] // an example binary: `pub` marks what a library would export

mod common;

use clap::Parser;
use common::arith::{ArithServer, Calculator};
use switchboard::middleware::Logging;
use switchboard::Server;

#[derive(Parser)]
#[command(about = "Serve the Arith service")]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let server = Server::builder().layer(Logging).service(ArithServer::new(Calculator)).build();
    common::serve_until_signal(server, &cli.listen).await
}
