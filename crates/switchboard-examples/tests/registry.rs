//! The examples as users run them: three `arith_server` processes register
//! with a registry, a caller finds them by name, and one of them is killed
//! with SIGKILL mid-load.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::balance::Balanced;
use switchboard::client::Backoff;
use switchboard_examples::arith::{Args, ArithClient};
use switchboard_registry::{BuiltinDiscover, RegistryClient, RegistryConfig, RegistryServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TTL: Duration = Duration::from_millis(1500);

/// The example binary `NAME`: `target/<profile>/examples/NAME` as
/// `cargo build --examples` leaves it (scripts/test.sh does), else the
/// newest `NAME-<hash>` that `cargo test --all-targets` built.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").join("examples");
    let plain = dir.join(name);
    if plain.exists() {
        return plain;
    }
    let prefix = format!("{name}-");
    let hashed = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            file.starts_with(&prefix) && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    hashed.unwrap_or_else(|| {
        panic!("{} missing: build it with `cargo build -p switchboard-examples --examples`", plain.display())
    })
}

/// Starts `arith_server --listen 127.0.0.1:0 --registry URL`; returns the
/// child and the address it printed.
async fn arith_server(registry: &str) -> (Child, String) {
    let mut child = Command::new(example("arith_server"))
        .args(["--listen", "127.0.0.1:0", "--registry", registry])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("arith_server starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("arith_server prints its address in time")
        .expect("readable stdout")
        .expect("a line");
    let addr = line.strip_prefix("listening on ").expect("'listening on ADDR'").to_owned();
    (child, addr)
}

async fn listed(client: &RegistryClient) -> Vec<String> {
    client.instances("Arith").await.map(|l| l.instances.into_iter().map(|i| i.address).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_server_costs_callers_nothing_and_the_registry_drops_it_within_the_ttl() {
    let config = RegistryConfig {
        heartbeat_interval: Duration::from_millis(400),
        default_ttl: TTL,
        sweep_interval: Duration::from_millis(100),
        ..RegistryConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let registry = RegistryServer::builder().config(config).build().spawn(listener).expect("registry");
    let url = format!("http://{}", registry.local_addr());
    let client = RegistryClient::new(&url).expect("url");

    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(arith_server(&url).await);
    }
    let began = Instant::now();
    while listed(&client).await.len() < 3 {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "three servers did not register: {:?}",
            listed(&client).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let discover = BuiltinDiscover::new(client.clone()).backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        multiplier: 2.0,
        jitter: 0.5,
    });
    let balanced = Balanced::builder("Arith", Arc::new(discover)).build();
    assert_eq!(balanced.ready(Duration::from_secs(3)).await, 3);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for worker in 0..8i64 {
        let arith = ArithClient::new(balanced.clone());
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        callers.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match arith.multiply(Args { a: worker, b: n }).await {
                    Ok(p) if p == worker * n => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(p) => panic!("{worker} * {n} came back as {p}"),
                    Err(e) => {
                        eprintln!("call failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut victim, victim_addr) = servers.remove(1);
    victim.start_kill().expect("SIGKILL"); // tokio's kill is SIGKILL on Unix
    victim.wait().await.expect("reaped");
    let killed_at = Instant::now();

    // Gone from the registry within the TTL (plus one sweep and a poll).
    while listed(&client).await.contains(&victim_addr) {
        assert!(
            killed_at.elapsed() < TTL + Duration::from_millis(600),
            "still listed {:?} after SIGKILL",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_after = killed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.expect("caller");
    }

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} calls answered, {failed} failed; the killed server left the registry after {gone_after:?}");
    assert_eq!(failed, 0, "{failed} of {} calls failed", ok + failed);
    assert!(ok > 500, "only {ok} calls were made");
    let stats = balanced.stats();
    let survivors: Vec<_> = stats.iter().filter(|s| s.listed).collect();
    assert_eq!(survivors.len(), 2, "{stats:?}");
    assert!(survivors.iter().all(|s| s.answered > ok / 5), "the survivors took the load: {stats:?}");
    assert!(stats.iter().any(|s| !s.listed && s.instance.address == victim_addr), "{stats:?}");

    for (mut child, _) in servers {
        child.start_kill().expect("kill");
        child.wait().await.expect("reaped");
    }
    registry.shutdown().await.expect("registry stops");
}
