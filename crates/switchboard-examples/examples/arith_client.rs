//! Calls `Arith.Multiply` and prints the product.
//!
//! ```text
//! cargo run --release --example arith_client -- --addr 127.0.0.1:9000 [A B]
//! ```

#![allow(unreachable_pub)] // an example binary: `pub` marks what a library would export

mod common;

use clap::Parser;
use common::arith::{Args, ArithClient};
use switchboard::Client;

#[derive(Parser)]
#[command(about = "Multiply two numbers on an Arith server")]
struct Cli {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// First factor.
    #[arg(default_value_t = 7, allow_negative_numbers = true)]
    a: i64,
    /// Second factor.
    #[arg(default_value_t = 8, allow_negative_numbers = true)]
    b: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = Client::connect(cli.addr.as_str()).await?;
    let arith = ArithClient::new(client);
    let product = arith.multiply(Args { a: cli.a, b: cli.b }).await?;
    println!("{product}");
    Ok(())
}
