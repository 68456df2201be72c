//! The registrar against a registry that refuses: it says why, clearly, and
//! does not hammer the registry with the same refused registration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use switchboard::discovery::{InstanceMeta, Registrar, Registration};
use switchboard_registry::{BuiltinRegistrar, RegistryClient};

/// Collects what the registrar logs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A registry that advertises a 50 ms heartbeat and refuses every
/// registration as the built-in one does when a service is full.
async fn refusing_registry(attempts: Arc<AtomicUsize>) -> String {
    let app = Router::new()
        .route(
            "/v1/status",
            get(|| async {
                Json(json!({"index": 1, "instances": 1000, "self_preservation": false, "ttl_ms": 150, "heartbeat_ms": 50}))
            }),
        )
        .route(
            "/v1/instances",
            put(move || {
                attempts.fetch_add(1, Ordering::SeqCst);
                async {
                    let body = json!({
                        "error": "service \"Arith\" is full: it may have at most 1000 instances (max_instances_per_service); deregister some or raise the limit",
                        "code": "service_full",
                    });
                    (StatusCode::CONFLICT, Json(body))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_refused_registration_is_logged_with_the_reason_and_retried_with_growing_pauses() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let attempts = Arc::new(AtomicUsize::new(0));
    let url = refusing_registry(attempts.clone()).await;
    let registrar = BuiltinRegistrar::new(RegistryClient::new(&url).unwrap());
    let record = Registration {
        service: "Arith".into(),
        id: "127.0.0.1:9000".into(),
        address: "127.0.0.1:9000".into(),
        metadata: InstanceMeta::default(),
        methods: vec!["Arith.Multiply".into()],
    };
    let (tx, rx) = tokio::sync::watch::channel(vec![record]);
    let keeper = tokio::spawn(registrar.keep_registered(rx));

    // 1.6 s at a 50 ms heartbeat: 32 beats. Pauses of 50, 100, 200, 400 and
    // 800 ms leave room for 6 tries at most (the first at once).
    let began = Instant::now();
    while attempts.load(Ordering::SeqCst) < 2 {
        assert!(began.elapsed() < Duration::from_secs(5), "the refused registration was never retried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(began.elapsed())).await;
    let tries = attempts.load(Ordering::SeqCst);
    println!("{tries} tries in {:?}", began.elapsed());
    assert!((2..=6).contains(&tries), "{tries} tries in 1.6 s: not backing off");

    let text = logs.text();
    let refusals: Vec<&str> = text.lines().filter(|l| l.contains("refused to register")).collect();
    assert_eq!(refusals.len(), 1, "one warning per reason, not per try:\n{text}");
    for part in ["WARN", "service_full", "max_instances_per_service", "at most 1000", "retry_in"] {
        assert!(refusals[0].contains(part), "the warning does not say {part:?}: {}", refusals[0]);
    }

    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), keeper).await.unwrap().unwrap();
}
