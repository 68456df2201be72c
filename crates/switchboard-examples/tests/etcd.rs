//! The examples on etcd, as users run them: three `arith_server` processes
//! register in a real etcd, `switchboard list` and `etcdctl` show them,
//! `arith_client` finds them by name, `switchboard config` keeps a key in
//! etcd, and a server killed with SIGKILL under
//! `arith_client --rate` load costs no call and leaves etcd within its
//! lease's TTL.

#[path = "../../switchboard-registry/tests/support/etcd.rs"]
mod etcd_support;

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{arith_server, example, field, workspace_binary};
use etcd_support::EtcdCluster;
use tokio::process::Command;

/// The instance ids (addresses) under `/switchboard/services/Arith/`.
async fn records(etcd: &Arc<EtcdCluster>) -> BTreeSet<String> {
    let etcd = etcd.clone();
    tokio::task::spawn_blocking(move || {
        etcd.etcdctl_ok(&["get", "--prefix", "--keys-only", "/switchboard/services/Arith/"])
            .lines()
            .filter_map(|l| l.strip_prefix("/switchboard/services/Arith/").map(str::to_owned))
            .collect()
    })
    .await
    .expect("etcdctl thread")
}

async fn output(cmd: &mut Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .expect("finishes within a minute")
        .expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arith_servers_on_etcd_are_listed_called_and_a_sigkilled_one_expires_with_its_lease() {
    let etcd = tokio::task::spawn_blocking(|| Arc::new(EtcdCluster::start(1))).await.expect("etcd starts");
    // A 2 s lease keeps the expiry part short; the default is 6 s.
    let url = format!("{}?ttl=2s", etcd.url());

    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(arith_server(&url).await);
    }
    let addrs: BTreeSet<String> = servers.iter().map(|(_, a)| a.clone()).collect();
    let began = Instant::now();
    while records(&etcd).await != addrs {
        assert!(began.elapsed() < Duration::from_secs(10), "etcd holds {:?}", records(&etcd).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // etcdctl shows the records themselves: JSON with the address.
    let shown = {
        let etcd = etcd.clone();
        tokio::task::spawn_blocking(move || etcd.etcdctl_ok(&["get", "--prefix", "/switchboard/services/Arith"]))
            .await
            .expect("etcdctl thread")
    };
    for addr in &addrs {
        assert!(shown.contains(&format!("\"address\":\"{addr}\"")), "{shown}");
    }

    let (ok, listing) = output(Command::new(workspace_binary("switchboard")).args(["list", "--registry", &url])).await;
    assert!(ok, "{listing}");
    assert!(listing.contains("Arith (3 instances)"), "{listing}");
    assert!(listing.contains("Arith.Multiply"), "{listing}");
    assert!(addrs.iter().all(|a| listing.contains(a.as_str())), "{listing}");

    let (ok, answer) = output(Command::new(example("arith_client")).args(["--registry", &url])).await;
    assert!(ok, "{answer}");
    assert_eq!(answer.lines().next(), Some("56"), "{answer}");

    // Config keys through the same URL: `switchboard config` on etcd.
    let cli = workspace_binary("switchboard");
    let (ok, put) =
        output(Command::new(&cli).args(["config", "put", "routing/Arith", r#"{"canary":5}"#, "--registry", &url]))
            .await;
    assert!(ok, "{put}");
    let (ok, got) = output(Command::new(&cli).args(["config", "get", "routing/Arith", "--registry", &url])).await;
    assert!(ok, "{got}");
    assert_eq!(got.trim(), r#"{"canary":5}"#);
    let stored = {
        let etcd = etcd.clone();
        tokio::task::spawn_blocking(move || etcd.get("/switchboard/config/routing/Arith")).await.expect("etcdctl")
    };
    assert_eq!(stored.as_deref(), Some(r#"{"canary":5}"#));

    // SIGKILL under load: 2,000 calls/s for 5 s.
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
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.expect("reaped");
    let killed_at = Instant::now();
    while records(&etcd).await.contains(&victim_addr) {
        // The lease runs out 2 s after the last keepalive; etcd checks every 500 ms.
        assert!(killed_at.elapsed() < Duration::from_secs(3), "still in etcd {:?} after SIGKILL", killed_at.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = killed_at.elapsed();

    let out = tokio::time::timeout(Duration::from_secs(30), caller)
        .await
        .expect("arith_client ends")
        .expect("joined")
        .expect("arith_client ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let shown = format!("stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{shown}\nthe killed server left etcd after {gone_after:?}");
    let summary = stdout.lines().find(|l| l.starts_with("calls: ")).unwrap_or_else(|| panic!("no summary: {shown}"));
    assert_eq!(field(summary, "failed:"), 0, "{shown}");
    assert!(field(summary, "ok:") >= 9_000, "{shown}");
    assert!(out.status.success(), "{shown}");

    // A graceful stop revokes the lease: gone at once.
    let (mut last, last_addr) = servers.remove(0);
    let pid = last.id().expect("running");
    let stopped = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(stopped.success());
    last.wait().await.expect("reaped");
    assert!(!records(&etcd).await.contains(&last_addr), "deregistered before exiting");
    for (mut child, _) in servers {
        child.start_kill().expect("kill");
        child.wait().await.expect("reaped");
    }
}
