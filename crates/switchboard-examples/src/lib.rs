//! Helpers shared by the examples.
#![allow(dead_code)]

pub mod arith;

use std::time::Duration;

use switchboard::Server;

/// Log to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Serve on `listen` until Ctrl-C or SIGTERM, then shut down gracefully.
pub async fn serve_until_signal(server: Server, listen: &str) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // The one line of stdout: scripts read the bound address from it.
    println!("listening on {addr}");
    let serving = tokio::spawn(server.clone().serve(listener));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let report = tokio::time::timeout(Duration::from_secs(35), server.shutdown()).await;
    tracing::info!(?report, "stopped");
    serving.abort();
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
