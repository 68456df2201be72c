//! A test harness that runs real etcd processes (etcd 3.4: Debian's
//! `etcd-server` for `/usr/bin/etcd`, `etcd-client` for `etcdctl`).
//!
//! Std only and synchronous, so any test crate can include it with
//!
//! ```ignore
//! #[path = "../../switchboard-registry/tests/support/etcd.rs"]
//! mod etcd;
//!
//! let cluster = etcd::EtcdCluster::builder().members(3).heartbeat_ms(50).election_ms(500).start();
//! let leader = cluster.wait_for_leader(std::time::Duration::from_secs(5));
//! cluster.put("k", "v");
//! cluster.kill(leader); // SIGKILL
//! cluster.wait_for_leader(std::time::Duration::from_secs(5));
//! cluster.restart(leader);
//! ```
//!
//! Every method takes `&self` and the cluster is `Sync`, so it can be shared
//! with an `Arc`. From an async test, run the calls that block for seconds
//! (`start`, `restart`, `wait_for_leader`, `stop`) in
//! `tokio::task::spawn_blocking`; the rest (`kill`, `put`, `leader`, ...)
//! take milliseconds.
//!
//! Measured on the 2-core dev machine: a 1-member cluster starts in
//! 0.15-1 s; 3 members in 0.2-2.5 s (a new multi-member cluster mostly
//! waits for etcd's own probe of its peers); with `heartbeat_ms(50)` and
//! `election_ms(500)` the survivors agree on a new leader 0.5-1 s after a
//! SIGKILL of the leader; a restarted follower is healthy in < 0.15 s; a
//! restarted single member needs about one election timeout (1-2 s).
//!
//! # What one cluster is
//!
//! A directory `switchboard-etcd-<pid>-<counter>-<nanos>` under
//! [`std::env::temp_dir`] holding, per member `m<i>`, its data dir
//! `m<i>.etcd/` and its log `m<i>.log` (etcd's zap JSON log, stdout and
//! stderr, appended to across restarts with a `=== harness: ...` line before
//! each start). Every member listens on 127.0.0.1 only, with its own client
//! and peer port; the cluster token is the directory name, so two clusters
//! started at the same time can never join each other.
//!
//! # Why ports are picked by bind-and-drop
//!
//! The rest of the workspace hands servers a bound `127.0.0.1:0` listener and
//! never picks a port and rebinds it. etcd cannot be handed a listener (it
//! takes URLs on its command line), so this module does the next best thing:
//! it binds `127.0.0.1:0` for all the ports of the cluster at once (so they
//! are distinct), notes the numbers, drops the listeners and passes the
//! numbers to etcd. Another process can take one of those ports in between;
//! etcd then exits with "address already in use". So a start that fails (a
//! member exits early, or is not healthy within 20 s) kills every member,
//! picks new ports and starts the whole cluster again, up to 3 times, then
//! panics with every failure and the tail of every member's log.
//! [`EtcdCluster::restart`] reuses the member's ports (its peers know it by
//! them), so it cannot retry with new ones: if something took the port
//! meanwhile it panics, with the log tail saying so.
//!
//! # Debugging a failing test
//!
//! - A failed start panics with the tail of every member's log.
//! - When a test panics while an `EtcdCluster` is alive, its `Drop` prints
//!   the last 30 lines of every member's log to stderr (nextest shows it with
//!   the failure).
//! - `SWITCHBOARD_ETCD_KEEP=1` keeps the cluster directory (data and full
//!   logs) after the test; `Drop` prints where it is.
//! - [`EtcdCluster::member_log_tail`] reads a member's log at any time.
//!
//! # No process left behind
//!
//! `Drop` SIGKILLs every member, waits for it, and removes the directory;
//! it runs when a test panics too. For the case where `Drop` never runs (the
//! test process itself killed, e.g. by a nextest timeout or `kill -9`), each
//! cluster also starts a watchdog: `sh` blocked reading a pipe whose only
//! writer is this process. When this process dies the pipe closes, `read`
//! returns, and the watchdog SIGKILLs the pids listed in the cluster's `pids`
//! file (kept up to date on every start, kill and stop) and removes the
//! directory. It ignores SIGTERM/SIGINT/SIGHUP, which Ctrl-C and nextest's
//! timeout send to the whole process group. `Drop` kills the watchdog first
//! (SIGKILL), so it never acts after a normal end.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Whole-cluster start attempts (each with new ports) before giving up.
const START_ATTEMPTS: usize = 3;
/// How long a member may take to become healthy, at start and restart.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the member is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one HTTP probe (`/health`, status) against a member.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);
/// Log lines of each member shown in a panic message.
const TAIL_LINES: usize = 30;
const ETCD_MISSING: &str = "etcd not found: scripts/test.sh installs Debian's etcd-server and etcd-client";

/// Options of a cluster; [`EtcdCluster::builder`].
#[derive(Clone, Debug)]
pub(crate) struct EtcdBuilder {
    members: usize,
    heartbeat_ms: u64,
    election_ms: u64,
    occupied_attempts: usize,
}

impl EtcdBuilder {
    /// Number of members (default 1).
    pub(crate) fn members(mut self, members: usize) -> Self {
        assert!(members >= 1, "an etcd cluster needs at least one member");
        self.members = members;
        self
    }

    /// Raft heartbeat interval, `--heartbeat-interval` (etcd's default 100).
    pub(crate) fn heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat_ms = ms;
        self
    }

    /// Raft election timeout, `--election-timeout` (etcd's default 1000):
    /// about how long a leader's death goes unnoticed. etcd requires at least
    /// 5 heartbeats.
    pub(crate) fn election_ms(mut self, ms: u64) -> Self {
        self.election_ms = ms;
        self
    }

    /// For testing the harness itself: during the first `attempts` start
    /// attempts, member 0's peer port is held by a listener of this process,
    /// so that member exits with "address already in use" like when another
    /// process takes a picked port. (The peer port: etcd binds it first, and
    /// a health probe of a client port held by a listener that never answers
    /// would wait for its 2 s timeout.)
    pub(crate) fn occupy_peer_port_in_attempts(mut self, attempts: usize) -> Self {
        self.occupied_attempts = attempts;
        self
    }

    /// Starts the cluster and returns once every member is healthy and they
    /// agree on a leader; see the module doc for retries. Panics if etcd is
    /// not installed or the cluster cannot start.
    pub(crate) fn start(self) -> EtcdCluster {
        assert!(
            self.election_ms >= 5 * self.heartbeat_ms,
            "etcd needs election_ms ({}) >= 5 * heartbeat_ms ({})",
            self.election_ms,
            self.heartbeat_ms
        );
        ensure_installed();
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let ports = free_ports(2 * self.members);
            let blocker = (attempt <= self.occupied_attempts).then(|| {
                TcpListener::bind((Ipv4Addr::LOCALHOST, ports[1]))
                    .unwrap_or_else(|e| panic!("occupy 127.0.0.1:{}: {e}", ports[1]))
            });
            let mut cluster = EtcdCluster::spawn(&self, &ports);
            let started = cluster.wait_started();
            drop(blocker);
            match started {
                Ok(()) => {
                    cluster.start_failures = failures;
                    return cluster;
                }
                Err(reason) => {
                    failures.push(format!("attempt {attempt}: {reason}\n{}", cluster.log_tails(TAIL_LINES)));
                    drop(cluster);
                }
            }
        }
        panic!(
            "an etcd cluster of {} member(s) failed to start {START_ATTEMPTS} times:\n{}",
            self.members,
            failures.join("\n")
        );
    }
}

/// One etcd member: fixed identity (name, ports, dirs) and its process, if any.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Mutex<Option<Child>>,
}

/// A running etcd cluster of real processes; killed and deleted on drop.
pub(crate) struct EtcdCluster {
    root: PathBuf,
    token: String,
    heartbeat_ms: u64,
    election_ms: u64,
    members: Vec<Member>,
    /// Kills the members if this process dies without running `Drop`.
    watchdog: Mutex<Option<Child>>,
    /// Serialises rewrites of the `pids` file.
    pids_lock: Mutex<()>,
    /// Why the attempts before the one that started failed.
    start_failures: Vec<String>,
}

impl EtcdCluster {
    /// A cluster of `members` members with etcd's default timings.
    pub(crate) fn start(members: usize) -> EtcdCluster {
        Self::builder().members(members).start()
    }

    /// Options: members, heartbeat and election timeout.
    pub(crate) fn builder() -> EtcdBuilder {
        EtcdBuilder { members: 1, heartbeat_ms: 100, election_ms: 1000, occupied_attempts: 0 }
    }

    // ---------------------------------------------------------------- layout

    /// Number of members, running or not.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Every member's client endpoint, `127.0.0.1:PORT`, running or not.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.client_endpoint(i)).collect()
    }

    /// The client endpoints of the members running now.
    pub(crate) fn running_endpoints(&self) -> Vec<String> {
        (0..self.len()).filter(|&i| self.is_running(i)).map(|i| self.client_endpoint(i)).collect()
    }

    /// The registry URL of the cluster: `etcd://127.0.0.1:p1,127.0.0.1:p2`.
    pub(crate) fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Member `i`'s client endpoint, `127.0.0.1:PORT`.
    pub(crate) fn client_endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s client port.
    pub(crate) fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Member `i`'s peer (raft) port.
    pub(crate) fn peer_port(&self, i: usize) -> u16 {
        self.members[i].peer_port
    }

    /// Member `i`'s name (`m<i>`).
    pub(crate) fn member_name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Member `i`'s data dir.
    pub(crate) fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// The cluster's directory (data dirs, logs); removed on drop.
    pub(crate) fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Why each failed start attempt before the successful one failed
    /// (empty when the first attempt started), with the log tails then.
    pub(crate) fn start_failures(&self) -> &[String] {
        &self.start_failures
    }

    // ------------------------------------------------------------ processes

    /// Member `i`'s process id, if it is running.
    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        let mut child = self.child(i);
        let c = child.as_mut()?;
        matches!(c.try_wait(), Ok(None)).then(|| c.id())
    }

    /// The pids of every running member, and of the watchdog.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = (0..self.len()).filter_map(|i| self.pid(i)).collect();
        if let Some(w) = lock(&self.watchdog).as_ref() {
            pids.push(w.id());
        }
        pids
    }

    /// Whether member `i`'s process is alive (not killed, stopped or exited).
    pub(crate) fn is_running(&self, i: usize) -> bool {
        self.pid(i).is_some()
    }

    /// SIGKILLs member `i` and waits for it to exit. Panics if it is not running.
    pub(crate) fn kill(&self, i: usize) {
        assert!(self.is_running(i), "kill({i}): member {} is not running", self.members[i].name);
        self.kill_quietly(i);
    }

    /// Stops member `i` gracefully (SIGTERM) and waits for it to exit;
    /// SIGKILLs it and panics if it takes longer than 10 s. Returns its
    /// exit status (etcd re-raises the signal, so usually "signal 15").
    pub(crate) fn stop(&self, i: usize) -> ExitStatus {
        let name = &self.members[i].name;
        let mut guard = self.child(i);
        let child = match guard.as_mut() {
            Some(c) => c,
            None => panic!("stop({i}): member {name} is not running"),
        };
        assert!(matches!(child.try_wait(), Ok(None)), "stop({i}): member {name} is not running");
        let pid = child.id();
        let term = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        assert!(matches!(term, Ok(s) if s.success()), "stop({i}): `kill -TERM {pid}` failed: {term:?}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => sleep(POLL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    drop(guard);
                    self.write_pids();
                    panic!(
                        "stop({i}): member {name} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                        self.member_log_tail(i, TAIL_LINES)
                    );
                }
            }
        };
        *guard = None;
        drop(guard);
        self.write_pids();
        status
    }

    /// Starts member `i` again, killed or stopped before, with the same name,
    /// ports and data dir, and waits until it is healthy (it has a leader and
    /// serves a linearizable read). Panics with its log tail if it exits or
    /// is not healthy within 20 s.
    pub(crate) fn restart(&self, i: usize) {
        assert!(!self.is_running(i), "restart({i}): member {} is still running", self.members[i].name);
        if let Err(e) = self.spawn_member(i, "existing") {
            panic!("restart({i}): cannot spawn etcd: {e}");
        }
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status(i) {
                panic!(
                    "restart({i}): member {} exited with {status}\n{}",
                    self.members[i].name,
                    self.member_log_tail(i, TAIL_LINES)
                );
            }
            if self.is_healthy(i) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "restart({i}): member {} not healthy within {HEALTH_TIMEOUT:?}\n{}",
                    self.members[i].name,
                    self.log_tails(TAIL_LINES)
                );
            }
            sleep(POLL);
        }
    }

    // --------------------------------------------------------------- health

    /// Whether member `i` answers `GET /health` with `{"health":"true"}`:
    /// in etcd 3.4 that means it is up, knows a leader, has no alarm, and a
    /// linearizable read through it succeeded.
    pub(crate) fn is_healthy(&self, i: usize) -> bool {
        http(self.members[i].client_port, "GET /health HTTP/1.0\r\n\r\n")
            .is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    /// The member that is leader now, if there is one everybody agrees on:
    /// a majority of all members is running and answers, every answering
    /// member names the same leader, and that leader is one of them (a
    /// killed leader is still named by its followers until they time out).
    pub(crate) fn leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, MemberStatus)> =
            (0..self.len()).filter(|&i| self.is_running(i)).filter_map(|i| Some((i, self.status(i)?))).collect();
        if statuses.len() <= self.len() / 2 {
            return None;
        }
        let leader_id = statuses[0].1.leader_id;
        if leader_id == 0 || statuses.iter().any(|(_, s)| s.leader_id != leader_id) {
            return None;
        }
        statuses.iter().find(|(_, s)| s.member_id == leader_id).map(|&(i, _)| i)
    }

    /// Polls [`leader`](Self::leader) until there is one; panics with the
    /// log tails after `timeout`.
    pub(crate) fn wait_for_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            if Instant::now() >= deadline {
                panic!("no agreed etcd leader within {timeout:?}\n{}", self.log_tails(TAIL_LINES));
            }
            sleep(POLL);
        }
    }

    /// Member `i`'s raft id, as etcd reports it (hex in `etcdctl member list`).
    pub(crate) fn member_id(&self, i: usize) -> Option<u64> {
        self.status(i).map(|s| s.member_id)
    }

    // -------------------------------------------------------------- etcdctl

    /// Runs `etcdctl` (API v3) against the running members (all members if
    /// none runs) and returns its output whatever it is. The harness passes
    /// `--dial-timeout=2s --command-timeout=5s` first; a flag in `args`
    /// overrides them (the last one wins): etcdctl keeps retrying an
    /// endpoint that is down until the command timeout, so a check that a
    /// dead member does not answer wants e.g. `--command-timeout=500ms`.
    pub(crate) fn etcdctl(&self, args: &[&str]) -> Output {
        let mut endpoints = self.running_endpoints();
        if endpoints.is_empty() {
            endpoints = self.endpoints();
        }
        etcdctl(&endpoints.join(","), args)
    }

    /// Runs `etcdctl` against member `i` only.
    pub(crate) fn etcdctl_at(&self, i: usize, args: &[&str]) -> Output {
        etcdctl(&self.client_endpoint(i), args)
    }

    /// [`etcdctl`](Self::etcdctl)'s stdout; panics with its stderr if it fails.
    pub(crate) fn etcdctl_ok(&self, args: &[&str]) -> String {
        ok_stdout(args, self.etcdctl(args))
    }

    /// [`etcdctl_at`](Self::etcdctl_at)'s stdout; panics with its stderr if it fails.
    pub(crate) fn etcdctl_at_ok(&self, i: usize, args: &[&str]) -> String {
        ok_stdout(args, self.etcdctl_at(i, args))
    }

    /// `etcdctl put key value`.
    pub(crate) fn put(&self, key: &str, value: &str) {
        self.etcdctl_ok(&["put", key, value]);
    }

    /// The value of `key` (a linearizable read), or `None` if it is absent.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        parse_value(&self.etcdctl_ok(&["get", key, "--print-value-only"]))
    }

    /// The value of `key` read through member `i` only (linearizable: the
    /// member must reach the leader and have applied up to its commit index).
    pub(crate) fn get_at(&self, i: usize, key: &str) -> Option<String> {
        parse_value(&self.etcdctl_at_ok(i, &["get", key, "--print-value-only"]))
    }

    /// The store's current revision (the header of a linearizable read).
    pub(crate) fn revision(&self) -> i64 {
        let json = self.etcdctl_ok(&["get", "/switchboard-etcd-harness/revision-probe", "-w", "json"]);
        json_u64(&json, "revision").unwrap_or_else(|| panic!("no revision in etcdctl output: {json}")) as i64
    }

    /// Compacts the history up to the current revision (physically: done
    /// when this returns) and returns that revision. A watch or read at an
    /// older revision then fails with "required revision has been compacted".
    pub(crate) fn compact_to_latest(&self) -> i64 {
        let rev = self.revision();
        let rev_arg = rev.to_string();
        let out = self.etcdctl(&["compaction", "--physical", &rev_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Compacting twice at the same revision is an error to etcd, not here.
        if !out.status.success() && !stderr.contains("required revision has been compacted") {
            panic!("etcdctl compaction --physical {rev} failed ({}): {stderr}", out.status);
        }
        rev
    }

    /// `etcdctl lease grant ttl_secs`; returns the lease id in hex, as
    /// `etcdctl lease list` prints it.
    pub(crate) fn grant_lease(&self, ttl_secs: u64) -> String {
        let out = self.etcdctl_ok(&["lease", "grant", &ttl_secs.to_string()]);
        // "lease 390da1fe34057707 granted with TTL(60s)"
        out.split_whitespace().nth(1).unwrap_or_else(|| panic!("unexpected `lease grant` output: {out}")).to_string()
    }

    /// `etcdctl lease revoke hex_id`: the lease's keys are deleted with it.
    pub(crate) fn revoke_lease(&self, hex_id: &str) {
        self.etcdctl_ok(&["lease", "revoke", hex_id]);
    }

    /// The ids (hex) of every live lease.
    pub(crate) fn lease_list(&self) -> Vec<String> {
        let out = self.etcdctl_ok(&["lease", "list"]);
        // "found N leases" then one id per line.
        out.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    }

    // ------------------------------------------------------------------ logs

    /// The last `lines` lines of member `i`'s log (every start of it).
    pub(crate) fn member_log_tail(&self, i: usize, lines: usize) -> String {
        let log = fs::read(&self.members[i].log_path).map(|b| String::from_utf8_lossy(&b).into_owned());
        match log {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.members[i].log_path.display()),
        }
    }

    /// The tail of every member's log, each under a header line.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, m) in self.members.iter().enumerate() {
            out.push_str(&format!(
                "----- {} (client {}, peer {}) last {lines} lines of {}:\n{}\n",
                m.name,
                m.client_port,
                m.peer_port,
                m.log_path.display(),
                self.member_log_tail(i, lines)
            ));
        }
        out
    }

    // ------------------------------------------------------------ internals

    /// Creates the directory, the watchdog and every member's process
    /// (without waiting for them).
    fn spawn(options: &EtcdBuilder, ports: &[u16]) -> EtcdCluster {
        let root = unique_dir();
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let token = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let members = (0..options.members)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    data_dir: root.join(format!("{name}.etcd")),
                    log_path: root.join(format!("{name}.log")),
                    name,
                    child: Mutex::new(None),
                }
            })
            .collect();
        let cluster = EtcdCluster {
            watchdog: Mutex::new(Some(spawn_watchdog(&root))),
            root,
            token,
            heartbeat_ms: options.heartbeat_ms,
            election_ms: options.election_ms,
            members,
            pids_lock: Mutex::new(()),
            start_failures: Vec::new(),
        };
        for i in 0..cluster.len() {
            if let Err(e) = cluster.spawn_member(i, "new") {
                panic!("cannot spawn etcd: {e}");
            }
        }
        cluster
    }

    /// Waits until every member is healthy and a leader is agreed on.
    fn wait_started(&self) -> Result<(), String> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let mut healthy = vec![false; self.len()];
        loop {
            for (i, healthy) in healthy.iter_mut().enumerate() {
                if let Some(status) = self.exit_status(i) {
                    return Err(format!("member {} exited early with {status}", self.members[i].name));
                }
                *healthy = *healthy || self.is_healthy(i);
            }
            if healthy.iter().all(|&h| h) && self.leader().is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not started within {HEALTH_TIMEOUT:?}; healthy: {healthy:?}"));
            }
            sleep(POLL);
        }
    }

    /// Starts member `i`'s process; `state` is `new` or `existing` (etcd
    /// ignores the initial-cluster flags once the data dir exists).
    fn spawn_member(&self, i: usize, state: &str) -> io::Result<()> {
        let m = &self.members[i];
        let initial_cluster: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let mut log = File::options().create(true).append(true).open(&m.log_path)?;
        writeln!(log, "=== harness: starting {} (initial-cluster-state {state})", m.name)?;
        let mut command = Command::new("etcd");
        command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-state", state, "--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", &self.heartbeat_ms.to_string()])
            .args(["--election-timeout", &self.election_ms.to_string()])
            .args(["--auto-compaction-retention", "0"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(e.kind(), ETCD_MISSING),
            _ => e,
        })?;
        *self.child(i) = Some(child);
        self.write_pids();
        Ok(())
    }

    /// `Some(status)` if member `i`'s process has exited on its own.
    fn exit_status(&self, i: usize) -> Option<ExitStatus> {
        self.child(i).as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn kill_quietly(&self, i: usize) {
        if let Some(mut child) = self.child(i).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.write_pids();
    }

    fn child(&self, i: usize) -> MutexGuard<'_, Option<Child>> {
        lock(&self.members[i].child)
    }

    /// Rewrites `pids` (atomically) for the watchdog.
    fn write_pids(&self) {
        let _guard = lock(&self.pids_lock);
        let pids: Vec<String> = (0..self.len()).filter_map(|i| self.pid(i)).map(|p| p.to_string()).collect();
        let tmp = self.root.join("pids.tmp");
        if fs::write(&tmp, pids.join(" ")).is_ok() {
            let _ = fs::rename(&tmp, self.root.join("pids"));
        }
    }

    /// Member `i`'s view of the cluster, from the JSON gateway (no etcdctl
    /// process: this is polled).
    fn status(&self, i: usize) -> Option<MemberStatus> {
        let body = http(
            self.members[i].client_port,
            "POST /v3/maintenance/status HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )?;
        Some(MemberStatus {
            member_id: json_u64(&body, "member_id")?,
            leader_id: json_u64(&body, "leader").unwrap_or(0),
        })
    }
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members: Vec<String> = (0..self.len())
            .map(|i| {
                let m = &self.members[i];
                format!("{} client {} peer {} pid {:?}", m.name, m.client_port, m.peer_port, self.pid(i))
            })
            .collect();
        f.debug_struct("EtcdCluster").field("root", &self.root).field("members", &members).finish()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("etcd cluster {} at drop during a panic:\n{}", self.token, self.log_tails(TAIL_LINES));
        }
        if let Some(mut watchdog) = lock(&self.watchdog).take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        for i in 0..self.len() {
            self.kill_quietly(i);
        }
        if std::env::var_os("SWITCHBOARD_ETCD_KEEP").is_some_and(|v| v == "1") {
            eprintln!("SWITCHBOARD_ETCD_KEEP=1: kept {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct MemberStatus {
    member_id: u64,
    leader_id: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ensure_installed() {
    match Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!("{ETCD_MISSING}"),
        Err(e) => panic!("cannot run etcd --version: {e}"),
    }
    if let Err(e) = Command::new("etcdctl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        panic!("etcdctl: {e}; {ETCD_MISSING}");
    }
}

/// A fresh directory path, unique per process, cluster and time.
fn unique_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!(
        "switchboard-etcd-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `n` distinct ports free right now: all bound at once, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}")))
        .collect();
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("local_addr: {e}"))).collect()
}

/// `sh` that waits for EOF on its stdin (the pipe closes when this process
/// dies, however), then SIGKILLs the pids in `<root>/pids` and removes
/// `<root>`. The pipe's write end is close-on-exec, so no other child keeps
/// it open. It ignores SIGHUP, SIGINT and SIGTERM: those come to the whole
/// process group (Ctrl-C, nextest's timeout) and must not kill it before the
/// test process. The removal is retried a few times, since a SIGKILLed etcd
/// may still be writing for a moment.
fn spawn_watchdog(root: &Path) -> Child {
    const SCRIPT: &str = r#"trap '' HUP INT TERM
read -r _
kill -9 $(cat "$1/pids" 2>/dev/null) 2>/dev/null
[ "$2" = keep ] && exit 0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  rm -rf "$1" 2>/dev/null
  [ -e "$1" ] || exit 0
  sleep 0.1
done"#;
    let keep = std::env::var_os("SWITCHBOARD_ETCD_KEEP").is_some_and(|v| v == "1");
    Command::new("sh")
        .args(["-c", SCRIPT, "switchboard-etcd-watchdog"])
        .arg(root)
        .arg(if keep { "keep" } else { "remove" })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn the etcd watchdog (sh): {e}"))
}

fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}; {ETCD_MISSING}"))
}

fn ok_stdout(args: &[&str], out: Output) -> String {
    if !out.status.success() {
        panic!(
            "etcdctl {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `etcdctl get --print-value-only` prints nothing for an absent key, else
/// the value and a newline.
fn parse_value(stdout: &str) -> Option<String> {
    if stdout.is_empty() {
        return None;
    }
    Some(stdout.strip_suffix('\n').unwrap_or(stdout).to_string())
}

/// One HTTP/1.0 exchange with `127.0.0.1:port` (1.0: no chunked body, the
/// server closes); the body if the status is 200.
fn http(port: u16, request: &str) -> Option<String> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    (status_line.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// The first `"field": 123` or `"field": "123"` in `json` (etcd's gateway
/// quotes 64-bit numbers, etcdctl does not).
fn json_u64(json: &str, field: &str) -> Option<u64> {
    let key = format!("\"{field}\":");
    let start = json.find(&key)? + key.len();
    let rest = json[start..].trim_start().trim_start_matches('"');
    let digits: &str = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
    digits.parse().ok()
}
