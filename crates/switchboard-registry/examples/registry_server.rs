//! A built-in registry as its own process, with its limits on the command
//! line: what `tests/process.rs` measures (memory under 100,000
//! registrations), and a quick way to try limits by hand.
//!
//! ```text
//! cargo run -p switchboard-registry --example registry_server -- --listen 127.0.0.1:7700 --max-instances 50000
//! ```
//!
//! Prints `registry listening on http://ADDR` (port 0 picks a free port) and
//! serves until Ctrl-C, SIGTERM, or its standard input closes (so a parent
//! that dies takes it along). `switchboard registry` (the CLI) is the same
//! server with the default limits.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use switchboard_registry::{RegistryConfig, RegistryServer};
use tokio::io::AsyncReadExt;

#[derive(Debug, Parser)]
#[command(about = "Run a built-in registry with the limits given")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: String,
    /// Most instances over all services.
    #[arg(long, default_value_t = RegistryConfig::default().max_instances)]
    max_instances: usize,
    /// Most instances of one service.
    #[arg(long, default_value_t = RegistryConfig::default().max_instances_per_service)]
    max_instances_per_service: usize,
    /// Most bytes of a record's metadata and methods, as JSON.
    #[arg(long, default_value_t = RegistryConfig::default().max_metadata_bytes)]
    max_metadata_bytes: usize,
    /// Most bytes of one listing answer.
    #[arg(long, default_value_t = RegistryConfig::default().max_listing_bytes)]
    max_listing_bytes: usize,
    /// Most connections open at once.
    #[arg(long, default_value_t = RegistryConfig::default().max_connections)]
    max_connections: usize,
    /// Sweep interval in milliseconds.
    #[arg(long, default_value_t = 1500)]
    sweep_ms: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("switchboard_registry=warn").init();
    let args = Args::parse();
    let config = RegistryConfig::default()
        .max_instances(args.max_instances)
        .max_instances_per_service(args.max_instances_per_service)
        .max_metadata_bytes(args.max_metadata_bytes)
        .max_listing_bytes(args.max_listing_bytes)
        .max_connections(args.max_connections)
        .sweep_interval(Duration::from_millis(args.sweep_ms));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let handle = RegistryServer::builder().config(config).build().spawn(listener)?;
    println!("registry listening on http://{}", handle.local_addr());
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    #[cfg(unix)]
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminated = std::future::pending::<()>();
    tokio::select! {
        () = stdin_closed => {}
        () = terminated => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    handle.shutdown().await?;
    Ok(())
}
