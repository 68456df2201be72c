//! The upstream half of a two-service example: serves `Orders.Place`,
//! whose handler reserves the item on `Inventory`, found through the same
//! registry it registers with (see `inventory.rs` for how to run both).
//!
//! The nested call is one line, `self.inventory.reserve(item).await?`: the
//! deadline travels with it, and a failure of the downstream is passed on
//! *forwarded* (`Status::is_forwarded`), so callers of `Orders` do not
//! blame this healthy instance for it (no open circuit on `Orders` when an
//! `Inventory` instance dies).

mod shop;

use std::time::Duration;

use clap::Parser;
use shop::{InventoryClient, Orders, OrdersServer};
use switchboard::balance::Balanced;
use switchboard::middleware::Logging;
use switchboard::server::shutdown_signal;
use switchboard::{Server, Status};
use switchboard_cli::Announce;

#[derive(Parser)]
#[command(about = "Serve the Orders service, which calls Inventory through discovery")]
struct Cli {
    /// Address to listen on (port 0 picks a free port, which is what gets
    /// registered).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// How long a call to Inventory may take (the caller's own deadline,
    /// when shorter, wins).
    #[arg(long, default_value = "2s", value_parser = switchboard_cli::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    announce: Announce,
}

struct Shop {
    inventory: InventoryClient<Balanced>,
}

impl Orders for Shop {
    async fn place(&self, item: String) -> Result<u32, Status> {
        let left = self.inventory.reserve(item).await?;
        Ok(left)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchboard_cli::init_logging("info");
    let cli = Cli::parse();
    let Some(url) = &cli.announce.registry else {
        anyhow::bail!("--registry is needed: Orders finds Inventory through it");
    };
    let backend = switchboard_registry::from_url(url)?;
    let inventory = Balanced::builder("Inventory", backend.discover).timeout(Some(cli.timeout)).build();
    let shop = Shop { inventory: InventoryClient::new(inventory) };
    let builder = Server::builder().layer(Logging).service(OrdersServer::new(shop));
    let server = cli.announce.apply(builder)?.build();
    let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
    // The one line of stdout: scripts read the bound address from it.
    println!("listening on {}", listener.local_addr()?);
    server.serve_until(listener, shutdown_signal()).await?;
    Ok(())
}
