//! Serving until told to stop: bind, print the bound address on stdout
//! (scripts and the process-level tests read it), serve, and on Ctrl-C,
//! SIGTERM or a caller's own signal shut down gracefully (deregistering
//! first when a registrar is set).

use std::time::Duration;

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
    let mut serving = tokio::spawn(server.clone().serve(listener));
    tokio::select! {
        _ = stop => {}
        _ = shutdown_signal() => {}
        result = &mut serving => {
            // Serving ended on its own: it could not start (say, nothing to advertise).
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!("serving on {addr} failed: {e}")),
                Err(e) => Err(anyhow::anyhow!("serving on {addr} failed: {e}")),
            };
        }
    }
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
