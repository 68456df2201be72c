//! The downstream half of a two-service example: serves `Inventory`
//! (`stock`, `reserve`), registered with a registry. `orders` calls it
//! through discovery.
//!
//! ```text
//! switchboard registry &
//! cargo run --example inventory -- --listen 127.0.0.1:0 --registry http://127.0.0.1:7700 &
//! cargo run --example inventory -- --listen 127.0.0.1:0 --registry http://127.0.0.1:7700 &
//! cargo run --example orders -- --listen 127.0.0.1:9100 --registry http://127.0.0.1:7700 &
//! switchboard call --addr 127.0.0.1:9100 Orders.Place '"tea"'
//! ```

mod shop;

use std::collections::HashMap;
use std::sync::Mutex;

use clap::Parser;
use shop::{Inventory, InventoryServer};
use switchboard::middleware::Logging;
use switchboard::server::shutdown_signal;
use switchboard::{Server, Status};
use switchboard_cli::Announce;

#[derive(Parser)]
#[command(about = "Serve the Inventory service")]
struct Cli {
    /// Address to listen on (port 0 picks a free port, which is what gets
    /// registered).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Items each instance starts with.
    #[arg(long, default_value_t = 1_000_000)]
    stock: u32,
    #[command(flatten)]
    announce: Announce,
}

/// One instance's shelves (each instance has its own: it is an example).
struct Shelves {
    start: u32,
    left: Mutex<HashMap<String, u32>>,
}

impl Inventory for Shelves {
    async fn stock(&self, item: String) -> Result<u32, Status> {
        let left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        Ok(left.get(&item).copied().unwrap_or(self.start))
    }

    async fn reserve(&self, item: String) -> Result<u32, Status> {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        let count = left.entry(item.clone()).or_insert(self.start);
        *count = count.checked_sub(1).ok_or_else(|| Status::failed_precondition(format!("out of {item}")))?;
        Ok(*count)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_cli::init_logging("info");
    let cli = Cli::parse();
    let shelves = Shelves { start: cli.stock, left: Mutex::new(HashMap::new()) };
    let builder = Server::builder().layer(Logging).service(InventoryServer::new(shelves));
    let server = cli.announce.apply(builder)?.build();
    let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
    // The one line of stdout: scripts read the bound address from it.
    println!("listening on {}", listener.local_addr()?);
    server.serve_until(listener, shutdown_signal()).await?;
    Ok(())
}
