//! The logging middleware emits one event per call with the documented
//! fields, on both sides, at INFO for success and WARN for failure.

use std::io::Write;
use std::sync::{Arc, Mutex};

use switchboard::middleware::Logging;
use switchboard::server::handler_fn;
use switchboard::Channel;
use switchboard::{Client, Server, Status};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().map(str::to_owned).collect()
    }
}

// Current-thread runtime: server and client tasks run on this thread, so the
// thread-local subscriber sees every event.
#[tokio::test(flavor = "current_thread")]
async fn one_event_per_call_with_method_peer_status_and_latency() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("switchboard::call=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Server::builder().layer(Logging).build();
    server.router().add_method("Math.Double", handler_fn(|x: i64| async move { Ok::<_, Status>(x * 2) })).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.clone().serve(listener));
    let client = Client::builder(addr).layer(Logging).connect().await.unwrap();

    assert_eq!(client.call::<i64, i64>("Math.Double", &21).await.unwrap(), 42);
    client.call::<i64, i64>("Math.Triple", &1).await.unwrap_err();

    let lines = captured.lines();
    let find = |side: &str, method: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("side=\"{side}\"")) && l.contains(&format!("method=\"{method}\"")))
            .unwrap_or_else(|| panic!("no {side} event for {method} in {lines:#?}"))
            .clone()
    };
    let ok = find("server", "Math.Double");
    assert!(ok.contains("INFO") && ok.contains("status=\"Ok\"") && ok.contains("latency_us="), "{ok}");
    assert!(ok.contains("peer=127.0.0.1:"), "{ok}");
    let failed = find("server", "Math.Triple");
    assert!(failed.contains("WARN") && failed.contains("status=\"NotFound\""), "{failed}");
    let client_side = find("client", "Math.Triple");
    assert!(client_side.contains("WARN") && client_side.contains("status=\"NotFound\""), "{client_side}");
    assert_eq!(lines.len(), 4, "one event per call per side: {lines:#?}");
}

// A handler the server cancels at the deadline still gets its event, with
// the code that says why; a call the caller abandons early, `Cancelled`.
#[tokio::test(flavor = "current_thread")]
async fn calls_cut_off_by_their_deadline_or_abandoned_are_logged_too() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("switchboard::call=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Server::builder().layer(Logging).build();
    let hold = handler_fn(|(): ()| async move {
        std::future::pending::<()>().await;
        Ok::<_, Status>(())
    });
    server.router().add_method("Slow.Hold", hold).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.clone().serve(listener));
    let client = Client::builder(addr).connect().await.unwrap();

    let opts = switchboard::CallOptions::new().timeout(std::time::Duration::from_millis(50));
    client.call_with::<(), ()>("Slow.Hold", &(), &opts).await.expect_err("deadline");
    // The server's event comes when it cancels the handler, at its copy of
    // the deadline: wait for that event, not for a time.
    let event = |status: &str| {
        captured
            .lines()
            .into_iter()
            .find(|l| l.contains("side=\"server\"") && l.contains(&format!("status=\"{status}\"")))
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let expired = loop {
        if let Some(line) = event("DeadlineExceeded") {
            break line;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event for the cancelled call: {:#?}", captured.lines());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert!(expired.contains("WARN") && expired.contains("method=\"Slow.Hold\""), "{expired}");

    // No deadline, and the caller goes away: the server cancels it when it
    // reads the cancel (dropping the call future sends one).
    let call = client.call::<(), ()>("Slow.Hold", &());
    let _ = tokio::time::timeout(std::time::Duration::from_millis(50), call).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while event("Cancelled").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no event for the abandoned call: {:#?}", captured.lines());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
