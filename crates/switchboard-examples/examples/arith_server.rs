//! Serves `Arith.Multiply` and `Arith.Divide`, optionally registered with a
//! registry.
//!
//! ```text
//! cargo run --release --example arith_server -- --listen 127.0.0.1:9000
//! cargo run --release --example arith_server -- --listen 127.0.0.1:0 --registry http://127.0.0.1:7700
//! ```

use clap::Parser;
use switchboard::go::NetRpc;
use switchboard::middleware::Logging;
use switchboard::Server;
use switchboard_cli::arith::{ArithServer, Calculator};
use switchboard_cli::Announce;

#[derive(Parser)]
#[command(about = "Serve the Arith service")]
struct Cli {
    /// Address to listen on (port 0 picks a free port, which is what gets
    /// registered).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    #[command(flatten)]
    announce: Announce,
    #[command(flatten)]
    limits: switchboard_cli::ServerFlags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_cli::init_logging("info");
    let cli = Cli::parse();
    let builder = cli
        .limits
        .apply(Server::builder())
        .with(NetRpc::default())
        .layer(Logging)
        .service(ArithServer::new(Calculator));
    let server = cli.announce.apply(builder)?.build();
    switchboard_cli::serve_until_signal(server, &cli.listen).await
}
