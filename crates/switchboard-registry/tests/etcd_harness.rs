//! The real-etcd test harness (`support/etcd.rs`) against real etcd 3.4
//! processes: start, etcdctl round trips, leader failover and restart,
//! compaction and lease helpers, and that no process outlives a cluster —
//! neither after `Drop` nor after the test process is SIGKILLed.

#[path = "support/etcd.rs"]
mod etcd;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use etcd::EtcdCluster;

/// Whether `pid` is a live process (a zombie has exited: not live).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) != Some('Z'),
        Err(_) => false,
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        sleep(Duration::from_millis(20));
    }
}

/// `etcdctl endpoint status -w simple` through member `i` only: its "is
/// leader" column (a check of `leader()` that does not share its code).
fn etcdctl_says_leader(cluster: &EtcdCluster, i: usize) -> bool {
    let out = cluster.etcdctl_at_ok(i, &["endpoint", "status", "-w", "simple"]);
    // endpoint, ID, version, db size, is leader, is learner, term, index, applied, errors
    match out.trim().split(", ").nth(4) {
        Some("true") => true,
        Some("false") => false,
        _ => panic!("unexpected `endpoint status` output: {out}"),
    }
}

#[test]
fn single_member_round_trip_stop_and_restart() {
    let started = Instant::now();
    let cluster = EtcdCluster::start(1);
    eprintln!("1-member cluster started in {:?}", started.elapsed());

    assert!(cluster.is_running(0));
    assert!(cluster.is_healthy(0));
    assert_eq!(cluster.leader(), Some(0));
    assert!(etcdctl_says_leader(&cluster, 0));
    let endpoint = cluster.client_endpoint(0);
    assert_eq!(cluster.endpoints(), std::slice::from_ref(&endpoint));
    assert_eq!(cluster.url(), format!("etcd://{endpoint}"));

    cluster.put("/greeting", "hello world");
    assert_eq!(cluster.get("/greeting").as_deref(), Some("hello world"));
    assert_eq!(cluster.get("/absent"), None);
    // The raw etcdctl output, not just the helper's parsing of it.
    let raw = cluster.etcdctl_ok(&["get", "/greeting"]);
    assert_eq!(raw, "/greeting\nhello world\n");

    // Graceful stop: the process is gone and the endpoint answers nothing.
    let pid = cluster.pid(0).expect("running");
    let status = cluster.stop(0);
    eprintln!("etcd exit after SIGTERM: {status}");
    assert!(!cluster.is_running(0));
    assert_eq!(cluster.pid(0), None);
    assert!(!alive(pid), "pid {pid} still alive after stop");
    assert!(!cluster.is_healthy(0));
    // (A short timeout: etcdctl retries a dead endpoint for --command-timeout.)
    let out = cluster.etcdctl(&["get", "/greeting", "--command-timeout=500ms"]);
    assert!(!out.status.success(), "a stopped etcd answered");

    // Restart on the same data dir and port: the data survived.
    let restarted = Instant::now();
    cluster.restart(0);
    eprintln!("1-member restart healthy in {:?}", restarted.elapsed());
    assert!(cluster.is_running(0));
    assert_ne!(cluster.pid(0), Some(pid));
    assert_eq!(cluster.client_endpoint(0), endpoint);
    assert_eq!(cluster.get("/greeting").as_deref(), Some("hello world"));
    let log = cluster.member_log_tail(0, 10_000);
    assert_eq!(log.matches("=== harness: starting m0").count(), 2, "one log across both starts:\n{log}");
}

#[test]
fn three_members_survive_sigkill_of_the_leader_and_it_rejoins() {
    let started = Instant::now();
    let cluster = EtcdCluster::builder().members(3).heartbeat_ms(50).election_ms(500).start();
    eprintln!("3-member cluster started in {:?}", started.elapsed());

    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(cluster.url(), format!("etcd://{}", endpoints.join(",")));
    let mut ports: Vec<u16> = (0..3).flat_map(|i| [cluster.client_port(i), cluster.peer_port(i)]).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6, "six distinct ports");
    // One cluster, not three single-member ones.
    let members = cluster.etcdctl_ok(&["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!((0..3).all(|i| cluster.is_healthy(i)));

    let old = cluster.wait_for_leader(Duration::from_secs(5));
    assert!(etcdctl_says_leader(&cluster, old));
    for i in (0..3).filter(|&i| i != old) {
        assert!(!etcdctl_says_leader(&cluster, i), "member {i} is not the leader");
    }
    cluster.put("/before", "1");

    let old_pid = cluster.pid(old).expect("running");
    let killed = Instant::now();
    cluster.kill(old);
    assert!(!cluster.is_running(old));
    assert!(!alive(old_pid));
    assert_eq!(cluster.running_endpoints().len(), 2);
    let new = cluster.wait_for_leader(Duration::from_secs(10));
    eprintln!("new leader {new} (was {old}) agreed on {:?} after SIGKILL", killed.elapsed());
    assert_ne!(new, old);
    assert!(etcdctl_says_leader(&cluster, new));

    for i in (0..3).filter(|&i| i != old) {
        assert_eq!(cluster.get_at(i, "/before").as_deref(), Some("1"), "through member {i}");
    }
    let out = cluster.etcdctl_at(old, &["get", "/before", "--command-timeout=500ms"]);
    assert!(!out.status.success(), "the killed member answered");
    cluster.put("/during", "2");

    let restarted = Instant::now();
    cluster.restart(old);
    eprintln!("old leader healthy again {:?} after restart", restarted.elapsed());
    assert!(cluster.is_running(old));
    assert!(cluster.is_healthy(old));
    // A linearizable read through the restarted member alone: it caught up.
    assert_eq!(cluster.get_at(old, "/during").as_deref(), Some("2"));
    assert_eq!(cluster.get_at(old, "/before").as_deref(), Some("1"));
    let leader = cluster.wait_for_leader(Duration::from_secs(5));
    assert!(etcdctl_says_leader(&cluster, leader));
    assert_eq!(cluster.running_endpoints().len(), 3);
}

#[test]
fn compaction_makes_old_revisions_unreadable() {
    let cluster = EtcdCluster::start(1);
    cluster.put("/k", "v1");
    let old = cluster.revision();
    cluster.put("/k", "v2");
    assert_eq!(cluster.revision(), old + 1);
    let old_arg = old.to_string();
    // Before compaction the old revision is readable.
    assert_eq!(cluster.etcdctl_ok(&["get", "/k", "--print-value-only", "--rev", &old_arg]), "v1\n");

    let compacted = cluster.compact_to_latest();
    assert_eq!(compacted, old + 1);
    let out = cluster.etcdctl(&["get", "/k", "--rev", &old_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "read at compacted revision {old} succeeded");
    assert!(stderr.contains("compacted"), "{stderr}");
    assert_eq!(cluster.get("/k").as_deref(), Some("v2"));
    // Compacting again at the same revision is not an error for the helper.
    assert_eq!(cluster.compact_to_latest(), compacted);
}

#[test]
fn lease_helpers_grant_list_and_revoke() {
    let cluster = EtcdCluster::start(1);
    assert_eq!(cluster.lease_list(), Vec::<String>::new());
    let a = cluster.grant_lease(60);
    let b = cluster.grant_lease(60);
    cluster.etcdctl_ok(&["put", "/leased", "x", "--lease", &a]);
    let mut leases = cluster.lease_list();
    leases.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(leases, expected);

    cluster.revoke_lease(&a);
    assert_eq!(cluster.lease_list(), [b]);
    assert_eq!(cluster.get("/leased"), None, "revoking a lease deletes its keys");
}

#[test]
fn drop_leaves_no_process_or_directory_behind() {
    let cluster = EtcdCluster::builder().members(3).heartbeat_ms(50).election_ms(500).start();
    let pids = cluster.pids();
    assert_eq!(pids.len(), 4, "three members and the watchdog: {pids:?}");
    for &pid in &pids[..3] {
        assert!(alive(pid));
        assert!(cmdline(pid).starts_with("etcd "), "pid {pid}: {}", cmdline(pid));
    }
    let root = cluster.root_dir().to_path_buf();
    assert!(cluster.data_dir(0).join("member").is_dir());
    assert!(root.join("pids").is_file());

    drop(cluster);
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive after drop: {left:?}");
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn a_member_that_cannot_bind_its_port_makes_start_retry_with_new_ports() {
    let cluster = EtcdCluster::builder().occupy_peer_port_in_attempts(1).start();
    let failures = cluster.start_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].starts_with("attempt 1: member m0 exited early"), "{}", failures[0]);
    assert!(failures[0].contains("address already in use"), "the log tail is in the failure: {}", failures[0]);
    cluster.put("/k", "v");
    assert_eq!(cluster.get("/k").as_deref(), Some("v"));

    let clean = EtcdCluster::start(1);
    assert_eq!(clean.start_failures(), Vec::<String>::new());
}

#[test]
fn start_gives_up_after_three_attempts_with_every_log_tail() {
    let panic = std::panic::catch_unwind(|| EtcdCluster::builder().occupy_peer_port_in_attempts(3).start())
        .expect_err("started although every attempt had its port taken");
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    assert!(message.contains("failed to start 3 times"), "{message}");
    for attempt in 1..=3 {
        assert!(message.contains(&format!("attempt {attempt}: member m0 exited early")), "{message}");
    }
    for attempt in message.split("attempt ").skip(1) {
        assert!(attempt.contains("address already in use"), "each attempt has its log tail: {attempt}");
    }
}

const HELPER_ENV: &str = "SWITCHBOARD_ETCD_HARNESS_HELPER";

/// Runs one of the `helper_*` tests below in a child process of this test
/// binary.
fn helper(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command.args([name, "--exact", "--nocapture", "--include-ignored", "--test-threads=1"]).env(HELPER_ENV, "1");
    command
}

/// Not a test of its own: the child process of
/// `a_sigkilled_test_process_leaves_no_etcd_behind`.
#[test]
#[ignore = "a helper, run by a_sigkilled_test_process_leaves_no_etcd_behind"]
fn helper_cluster_then_wait() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let cluster = EtcdCluster::start(1);
    let pids: Vec<String> = cluster.pids().iter().map(|p| p.to_string()).collect();
    println!("HARNESS pids={} root={}", pids.join(","), cluster.root_dir().display());
    sleep(Duration::from_secs(60));
}

/// Starts `helper_cluster_then_wait` in its own process group, lets `kill`
/// end it, and checks that its etcd and watchdog die and its directory goes.
fn helper_dies_and_leaves_nothing(kill: impl FnOnce(u32)) {
    let mut child =
        helper("helper_cluster_then_wait").stdout(Stdio::piped()).process_group(0).spawn().expect("spawn helper");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    // libtest prints "test NAME ... " first, on the same line.
    let line = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.find("HARNESS pids=").map(|at| l[at + "HARNESS pids=".len()..].to_string()))
        .expect("the helper printed no HARNESS line");
    let (pids, root) = line.split_once(" root=").expect("HARNESS line format");
    let pids: Vec<u32> = pids.split(',').map(|p| p.parse().expect("pid")).collect();
    assert_eq!(pids.len(), 2, "etcd and the watchdog: {line}");
    assert!(cmdline(pids[0]).starts_with("etcd "));
    assert!(alive(pids[0]) && alive(pids[1]));

    kill(child.id());
    let status = child.wait().expect("reap the helper");
    assert!(!status.success(), "the helper was not killed: {status}");
    // No Drop ran in the helper: the watchdog does the cleanup.
    let left = wait_gone(&pids, Duration::from_secs(5));
    assert!(left.is_empty(), "alive 5 s after the test process died: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(root).exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    assert!(!Path::new(root).exists(), "{root} left behind");
}

#[test]
fn a_sigkilled_test_process_leaves_no_etcd_behind() {
    // Only the test process: etcd and the watchdog get no signal.
    helper_dies_and_leaves_nothing(|pid| {
        let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
    });
}

#[test]
fn sigterm_to_the_process_group_leaves_no_etcd_behind() {
    // What Ctrl-C and nextest's timeout do: the whole group, the watchdog too.
    helper_dies_and_leaves_nothing(|pid| {
        let status = Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status().expect("kill");
        assert!(status.success());
    });
}

/// Not a test of its own: the child process of
/// `without_etcd_on_path_start_panics_with_the_install_hint`.
#[test]
#[ignore = "a helper, run by without_etcd_on_path_start_panics_with_the_install_hint"]
fn helper_start_without_etcd() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    EtcdCluster::start(1);
}

#[test]
fn without_etcd_on_path_start_panics_with_the_install_hint() {
    let out = helper("helper_start_without_etcd").env("PATH", "/nonexistent").output().expect("run helper");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start succeeded without etcd on PATH");
    assert!(
        stderr.contains("etcd not found: scripts/test.sh installs Debian's etcd-server and etcd-client"),
        "{stderr}"
    );
}
