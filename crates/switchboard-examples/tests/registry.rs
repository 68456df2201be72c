//! The examples as users run them: three `arith_server` processes register
//! with a registry, a caller finds them by name, and one of them is killed
//! with SIGKILL while `arith_client --rate` keeps 2,000 calls a second going.

use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_registry::{RegistryClient, RegistryConfig, RegistryServer};
use tokio::process::Command;

mod common;
use common::{arith_server, example, field};

const TTL: Duration = Duration::from_millis(1500);

async fn listed(client: &RegistryClient) -> Vec<String> {
    client.instances("Arith").await.map(|l| l.instances.into_iter().map(|i| i.address).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_server_costs_callers_nothing_and_the_registry_drops_it_within_the_ttl() {
    let config = RegistryConfig::default()
        .heartbeat_interval(Duration::from_millis(400))
        .default_ttl(TTL)
        .sweep_interval(Duration::from_millis(100));
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

    // The load: arith_client's open-loop rate mode, 2,000 calls/s for 5 s
    // (bounded for CI; the acceptance run by hand is 5,000/s for 10 s).
    let caller = Command::new(example("arith_client"))
        .args(["--registry", &url, "--rate", "2000", "--duration", "5s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("arith_client starts");
    let caller = tokio::spawn(caller.wait_with_output());

    tokio::time::sleep(Duration::from_millis(1500)).await;
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

    let output = tokio::time::timeout(Duration::from_secs(30), caller)
        .await
        .expect("arith_client ends within 30 s")
        .expect("joined")
        .expect("arith_client ran");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let shown = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{shown}\nthe killed server left the registry after {gone_after:?}");
    let summary = stdout.lines().find(|l| l.starts_with("calls: ")).unwrap_or_else(|| panic!("no summary: {shown}"));
    let (ok, failed) = (field(summary, "ok:"), field(summary, "failed:"));
    assert_eq!(failed, 0, "calls failed: {shown}");
    assert!(output.status.success(), "{shown}");
    assert!(ok >= 9_000, "only {ok} of 10,000 calls were answered: {shown}");

    // Per instance: `  ADDR answered N failed M[  (left the registry)]`.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" answered ")).collect();
    let answered = |row: &str| field(row, "answered");
    let survivors: Vec<&&str> = rows.iter().filter(|r| !r.contains("left the registry")).collect();
    assert_eq!(survivors.len(), 2, "{shown}");
    assert!(survivors.iter().all(|r| answered(r) > ok / 4), "the survivors took the load: {shown}");
    assert!(rows.iter().any(|r| r.contains(&victim_addr) && r.contains("left the registry")), "{shown}");

    for (mut child, _) in servers {
        child.start_kill().expect("kill");
        child.wait().await.expect("reaped");
    }
    registry.shutdown().await.expect("registry stops");
}
