//! Serving until told to stop: bind, print the bound address on stdout
//! (scripts and the process-level tests read it), serve, and on Ctrl-C,
//! SIGTERM or a caller's own signal shut down gracefully (deregistering
//! first when a registrar is set).

use switchboard::Server;

/// Serve on `listen` until Ctrl-C or SIGTERM, then shut down gracefully
/// (deregistering first when a registrar is set).
pub async fn serve_until_signal(server: Server, listen: &str) -> anyhow::Result<()> {
    serve_until(server, listen, std::future::pending()).await
}

/// Serve on `listen` until `stop` completes (or Ctrl-C / SIGTERM), then shut
/// down gracefully (deregistering first when a registrar is set). Prints
/// `listening on ADDR` on stdout once bound.
pub async fn serve_until(
    server: Server,
    listen: &str,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // The one line of stdout: scripts read the bound address from it.
    println!("listening on {addr}");
    let stop = async {
        tokio::select! {
            _ = stop => {}
            _ = switchboard::server::shutdown_signal() => {}
        }
    };
    // The shutdown is bounded by the server's shutdown timeout, after
    // which calls still running are cancelled.
    let report =
        server.serve_until(listener, stop).await.map_err(|e| anyhow::anyhow!("serving on {addr} failed: {e}"))?;
    tracing::info!(?report, "stopped");
    Ok(())
}
