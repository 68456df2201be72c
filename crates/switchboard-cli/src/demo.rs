//! `switchboard demo`: the main job in one command, nothing to install.
//!
//! What it runs, all on 127.0.0.1:
//!
//! | part | how |
//! |------|-----|
//! | the built-in registry | in this process, heartbeat 500 ms and TTL 1.5 s so a dead instance leaves quickly |
//! | three `Arith` instances | child processes (this binary again, `switchboard demo-instance`), so the kill is a real SIGKILL; #1 version 1 zone a, #2 version 2 zone a, #3 version 1 zone b |
//! | a client | in this process: `Balanced` over the registry's list, `Arith.Multiply` at `--rate` calls/s, open loop, every product checked |
//!
//! The timeline (fractions of `--duration`): at 30 % instance #3 gets
//! SIGKILL; at 60 % it is started again on the same address (so it rejoins
//! under the same id); at the end a summary. A status line a second shows
//! calls/s, each instance's share, failed calls so far and the second's p99.
//! The exit status is 0 only if no call failed.
//!
//! Children never outlive the demo: each holds a pipe from it on stdin and
//! shuts down when that closes (which also happens when the demo is killed),
//! and every exit path kills what is left (`kill_on_drop`). They run in their
//! own process group, so Ctrl-C reaches only the demo, which then stops them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use switchboard::balance::{Balanced, InstanceStats, RoundRobin};
use switchboard::discovery::Discover;
use switchboard::Server;
use switchboard_cli::arith::{multiply_checked, ArithClient, ArithServer, Calculator};
use switchboard_cli::load::{micros, Counts, OpenLoop, Tally};
use switchboard_cli::Announce;
use switchboard_registry::{RegistryConfig, RegistryServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The instances: (version, zone).
const FLEET: [(&str, &str); 3] = [("1", "a"), ("2", "a"), ("1", "b")];
/// The one killed and restarted (index into `FLEET`): the zone-b one.
const VICTIM: usize = 2;
const HEARTBEAT: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_millis(1500);
const SWEEP: Duration = Duration::from_millis(100);
/// One call, every failover attempt included.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_IN_FLIGHT: usize = 1000;
/// How long an instance may take to print `listening on ADDR`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `switchboard demo` flags.
pub(crate) struct Options {
    pub(crate) duration: Duration,
    pub(crate) rate: u64,
}

/// The client's channel to `Arith`. Round robin rather than the library's
/// default (P2C on peak-EWMA latency): at this light load the latency-aware
/// balancer sends nearly everything to whichever instance answered fastest
/// lately, which is right for latency but hides what the demo shows, the
/// shares moving when an instance dies and comes back. Failover (3
/// attempts), circuit breakers and ejection are the defaults.
fn channel(discover: Arc<dyn Discover>) -> Balanced {
    Balanced::builder("Arith", discover).balancer(RoundRobin::new()).timeout(Some(CALL_TIMEOUT)).build()
}

/// Run the demo; `Ok(false)` when calls failed (the summary says how many).
pub(crate) async fn run(opts: Options) -> anyhow::Result<bool> {
    if opts.rate == 0 {
        bail!("--rate must be at least 1");
    }
    if opts.duration < Duration::from_secs(2) {
        bail!("--duration must be at least 2s (the kill comes at 30 %, the restart at 60 %)");
    }
    let exe = std::env::current_exe().context("cannot find the switchboard binary to start the instances")?;
    let config = RegistryConfig::default().heartbeat_interval(HEARTBEAT).default_ttl(TTL).sweep_interval(SWEEP);
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("the registry cannot listen on 127.0.0.1:0")?;
    let registry = RegistryServer::builder().config(config).build().spawn(listener).context("starting the registry")?;
    let url = format!("http://{}", registry.local_addr());

    let mut fleet = Fleet { exe, registry: url.clone(), instances: Vec::new() };
    let result = demo(&mut fleet, &url, &opts).await;
    // Every path ends here: the children first (they deregister on the way
    // out), then the registry.
    fleet.stop().await;
    if let Err(e) = registry.shutdown().await {
        eprintln!("warning: the registry did not shut down cleanly: {e}");
    }
    result
}

/// The hidden `switchboard demo-instance`: serve `Arith` with registration
/// until stdin closes (the demo went away) or a signal arrives.
pub(crate) async fn instance(listen: String, announce: Announce) -> anyhow::Result<()> {
    if announce.registry.is_none() {
        bail!("demo-instance needs --registry");
    }
    let builder = Server::builder().service(ArithServer::new(Calculator));
    let server = announce.apply(builder)?.build();
    switchboard_cli::serve_until(server, &listen, stdin_closed()).await
}

/// Completes when stdin reaches end of file (or fails).
fn stdin_closed() -> impl std::future::Future<Output = ()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// One instance: its metadata, the addresses it has had, its process.
struct Instance {
    version: &'static str,
    zone: &'static str,
    /// Every address it listened on, the current one last.
    addresses: Vec<String>,
    child: Option<Child>,
    pid: Option<u32>,
}

impl Instance {
    fn address(&self) -> &str {
        self.addresses.last().map(String::as_str).unwrap_or("-")
    }
}

/// The child processes. Dropping it kills them all (`kill_on_drop`).
struct Fleet {
    exe: PathBuf,
    registry: String,
    instances: Vec<Instance>,
}

impl Fleet {
    /// Start `demo-instance` on `listen`; returns its process and the
    /// address it printed.
    async fn spawn(&self, listen: &str, version: &str, zone: &str) -> anyhow::Result<(Child, String)> {
        let mut command = Command::new(&self.exe);
        command
            .args(["demo-instance", "--listen", listen, "--registry", &self.registry])
            .args(["--app-version", version, "--zone", zone])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "error");
        }
        #[cfg(unix)]
        command.process_group(0); // Ctrl-C goes to the demo, which stops them
        let mut child = command.spawn().with_context(|| format!("cannot start {}", self.exe.display()))?;
        let stdout = child.stdout.take().context("the instance's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Err(_) => bail!("the instance did not print its address within {START_TIMEOUT:?}"),
            Ok(Err(e)) => bail!("cannot read the instance's stdout: {e}"),
            Ok(Ok(None)) => {
                let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                bail!("the instance exited before listening on {listen} ({status})")
            }
            Ok(Ok(Some(line))) => line,
        };
        let address = line
            .strip_prefix("listening on ")
            .with_context(|| format!("the instance's first line is {line:?}, not 'listening on ADDR'"))?
            .trim()
            .to_owned();
        // Keep reading, so the child never writes into a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, address))
    }

    async fn start_all(&mut self) -> anyhow::Result<()> {
        for (n, (version, zone)) in FLEET.iter().enumerate() {
            let (child, address) = self
                .spawn("127.0.0.1:0", version, zone)
                .await
                .with_context(|| format!("starting instance #{}", n + 1))?;
            let pid = child.id();
            self.instances.push(Instance { version, zone, addresses: vec![address], child: Some(child), pid });
        }
        Ok(())
    }

    /// SIGKILL instance `i` and reap it.
    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let instance = self.instances.get_mut(i).context("no such instance")?;
        if let Some(mut child) = instance.child.take() {
            child.kill().await.with_context(|| format!("cannot kill instance #{}", i + 1))?;
        }
        Ok(())
    }

    /// Start instance `i` again, on its old address if that can be bound
    /// again (it rejoins under the same id), else on a new port. Returns
    /// whether the address is the same.
    async fn restart(&mut self, i: usize) -> anyhow::Result<bool> {
        let instance = self.instances.get(i).context("no such instance")?;
        let (old, version, zone) = (instance.address().to_owned(), instance.version, instance.zone);
        let (child, address) = match self.spawn(&old, version, zone).await {
            Ok(started) => started,
            Err(e) => {
                eprintln!("note: cannot listen on {old} again ({e:#}); using a new port");
                self.spawn("127.0.0.1:0", version, zone)
                    .await
                    .with_context(|| format!("restarting instance #{}", i + 1))?
            }
        };
        let same = address == old;
        let instance = self.instances.get_mut(i).context("no such instance")?;
        instance.pid = child.id();
        instance.child = Some(child);
        if !same {
            instance.addresses.push(address);
        }
        Ok(same)
    }

    /// Stop every instance still running: close its stdin (it deregisters
    /// and drains), give it 5 s, then kill it.
    async fn stop(&mut self) {
        let mut running: Vec<Child> = self.instances.iter_mut().filter_map(|i| i.child.take()).collect();
        for child in &mut running {
            drop(child.stdin.take());
        }
        for mut child in running {
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    /// Which instance (0-based) `address` belongs to.
    fn owner(&self, address: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.addresses.iter().any(|a| a == address))
    }

    /// Per instance: (attempts answered, attempts failed), from the client's
    /// stats (an instance that left and came back has two entries).
    fn per_instance(&self, stats: &[InstanceStats]) -> Vec<(u64, u64)> {
        let mut out = vec![(0, 0); self.instances.len()];
        for s in stats {
            if let Some(slot) = self.owner(&s.instance.address).and_then(|i| out.get_mut(i)) {
                slot.0 += s.answered;
                slot.1 += s.failed;
            }
        }
        out
    }
}

/// Prints the timeline: event lines, and a status line a second that
/// overwrites itself on a terminal.
struct Screen {
    started: Instant,
    terminal: bool,
    /// A status line is showing (terminal only) and must be cleared first.
    dirty: bool,
}

impl Screen {
    fn stamp(&self) -> String {
        format!("[{:>5.1}s]", self.started.elapsed().as_secs_f64())
    }

    fn event(&mut self, text: &str) {
        let clear = if self.dirty { "\r\x1b[2K" } else { "" };
        println!("{clear}{} {text}", self.stamp());
        self.dirty = false;
    }

    fn status(&mut self, text: &str) {
        let line = format!("{} {text}", self.stamp());
        if self.terminal {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
            self.dirty = true;
        } else {
            println!("{line}");
        }
    }

    fn end_status(&mut self) {
        if self.dirty {
            println!();
            self.dirty = false;
        }
    }
}

/// What the last status line saw, to show the next second's differences.
struct Window {
    at: Instant,
    counts: Counts,
    answered: Vec<u64>,
}

fn status_line(fleet: &Fleet, balanced: &Balanced, tally: &Tally, window: &mut Window) -> String {
    let now = Instant::now();
    let counts = tally.counts();
    let per_instance = fleet.per_instance(&balanced.stats());
    let answered: Vec<u64> = per_instance.iter().map(|(a, _)| *a).collect();
    let deltas: Vec<u64> = answered
        .iter()
        .enumerate()
        .map(|(i, a)| a.saturating_sub(window.answered.get(i).copied().unwrap_or(0)))
        .collect();
    let sum: u64 = deltas.iter().sum();
    let secs = now.duration_since(window.at).as_secs_f64().max(1e-3);
    let rate = (counts.issued() - window.counts.issued()) as f64 / secs;
    let p99 = tally.take_window().value_at_quantile(0.99);
    let mut line = format!("{rate:>6.0} calls/s ");
    for (i, d) in deltas.iter().enumerate() {
        let share = if sum == 0 { 0.0 } else { *d as f64 * 100.0 / sum as f64 };
        let _ = write!(line, " #{} {share:>3.0}%", i + 1);
    }
    let _ = write!(line, "   failed calls: {}   p99: {}", counts.failed, micros(p99));
    *window = Window { at: now, counts, answered };
    line
}

async fn demo(fleet: &mut Fleet, url: &str, opts: &Options) -> anyhow::Result<bool> {
    let (duration, rate) = (opts.duration, opts.rate);
    let kill_at = duration.mul_f64(0.3);
    let restart_at = duration.mul_f64(0.6);
    println!("switchboard demo: a registry, three Arith instances that register with it, and a client");
    println!(
        "calling Arith.Multiply through discovery at {rate} calls/s for {:.0} s; instance #3 gets SIGKILL at {:.1} s",
        duration.as_secs_f64(),
        kill_at.as_secs_f64()
    );
    println!(
        "and comes back at {:.1} s. Every product is checked; the goal is 0 failed calls.",
        restart_at.as_secs_f64()
    );
    println!();
    println!("  registry     {url}  (in this process; heartbeat {HEARTBEAT:?}, TTL {TTL:?})");
    fleet.start_all().await?;
    for (n, i) in fleet.instances.iter().enumerate() {
        let pid = i.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        println!(
            "  instance #{}  {:<21} version {}  zone {}  (child process {pid})",
            n + 1,
            i.address(),
            i.version,
            i.zone
        );
    }

    let backend = switchboard_registry::from_url(url)?;
    let balanced = channel(backend.discover);
    let waiting = Instant::now();
    while balanced.instances().len() < FLEET.len() {
        if waiting.elapsed() > START_TIMEOUT {
            bail!(
                "only {} of {} instances registered within {START_TIMEOUT:?}",
                balanced.instances().len(),
                FLEET.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  client       Balanced over the registry's list: round-robin, failover, {CALL_TIMEOUT:?} per call");
    println!();

    let tally = Arc::new(Tally::new());
    let plan = OpenLoop { rate, duration, max_in_flight: MAX_IN_FLIGHT };
    let arith = ArithClient::new(balanced.clone());
    let load = tokio::spawn({
        let tally = Arc::clone(&tally);
        async move {
            plan.run(tally, move |i| {
                let arith = arith.clone();
                async move { multiply_checked(&arith, i).await }
            })
            .await
        }
    });

    let started = Instant::now();
    let mut screen = Screen { started, terminal: std::io::stdout().is_terminal(), dirty: false };
    let mut window = Window { at: started, counts: Counts::default(), answered: vec![0; fleet.instances.len()] };
    let mut next_status = started + Duration::from_secs(1);
    let mut listed: BTreeSet<String> = balanced.instances().into_iter().map(|i| i.address).collect();
    let (mut killed, mut restarted) = (false, false);
    let mut answered_before_restart = 0;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let interrupted = loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = &mut ctrl_c => break true,
        }
        let elapsed = started.elapsed();
        if !killed && elapsed >= kill_at {
            let victim = fleet.instances.get(VICTIM).context("no victim")?;
            let what = format!(
                "SIGKILL instance #{} (pid {}, {}, version {}, zone {})",
                VICTIM + 1,
                victim.pid.map(|p| p.to_string()).unwrap_or_default(),
                victim.address(),
                victim.version,
                victim.zone
            );
            fleet.kill(VICTIM).await?;
            screen.event(&format!(">>> {what}"));
            killed = true;
        }
        if killed && !restarted && elapsed >= restart_at {
            answered_before_restart = fleet.per_instance(&balanced.stats()).get(VICTIM).map_or(0, |t| t.0);
            let same = fleet.restart(VICTIM).await?;
            let victim = fleet.instances.get(VICTIM).context("no victim")?;
            let how = if same { "the same address: it rejoins under the same id" } else { "a new port" };
            screen.event(&format!(
                ">>> restarted instance #{} (pid {}) on {}, {how}",
                VICTIM + 1,
                victim.pid.map(|p| p.to_string()).unwrap_or_default(),
                victim.address()
            ));
            restarted = true;
        }
        // What the client's list looks like now (discovery, not our own bookkeeping).
        let now_listed: BTreeSet<String> = balanced.instances().into_iter().map(|i| i.address).collect();
        let name = |a: &str| fleet.owner(a).map(|i| format!("#{}", i + 1)).unwrap_or_else(|| "?".into());
        for gone in listed.difference(&now_listed) {
            screen.event(&format!("--- the registry dropped {} {gone} (no heartbeat within the TTL)", name(gone)));
        }
        for back in now_listed.difference(&listed) {
            screen.event(&format!("+++ {} {back} is listed again", name(back)));
        }
        listed = now_listed;
        if Instant::now() >= next_status {
            let line = status_line(fleet, &balanced, &tally, &mut window);
            screen.status(&line);
            next_status += Duration::from_secs(1);
        }
        if elapsed >= duration {
            break false;
        }
    };
    if interrupted {
        load.abort();
        screen.end_status();
        bail!("interrupted");
    }
    load.await.context("the load generator failed")?;
    // The calls that answered after the last full second, if that is a
    // meaningful stretch (a sliver would show a silly rate).
    if window.counts != tally.counts() && window.at.elapsed() >= Duration::from_millis(500) {
        let line = status_line(fleet, &balanced, &tally, &mut window);
        screen.status(&line);
    }
    screen.end_status();

    let counts = tally.counts();
    summary(fleet, &balanced, &tally, opts, started.elapsed(), answered_before_restart);
    if counts.failed > 0 {
        println!();
        println!("errors:");
        for (what, n) in tally.errors() {
            println!("  {n:>8} × {what}");
        }
    }
    Ok(counts.failed == 0)
}

fn summary(fleet: &Fleet, balanced: &Balanced, tally: &Tally, opts: &Options, took: Duration, before_restart: u64) {
    let per_instance = fleet.per_instance(&balanced.stats());
    let listed: BTreeSet<String> = balanced.instances().into_iter().map(|i| i.address).collect();
    let answered_total: u64 = per_instance.iter().map(|t| t.0).sum();
    let counts = tally.counts();
    let h: Histogram<u64> = tally.latencies();
    println!();
    println!("summary ({:.1} s at {} calls/s)", took.as_secs_f64(), opts.rate);
    println!(
        "  {:<9} {:<21} {:<8} {:<5} {:>9} {:>6} {:>16}  listed now",
        "instance", "address", "version", "zone", "answered", "share", "failed attempts"
    );
    for (n, (instance, (answered, failed))) in fleet.instances.iter().zip(&per_instance).enumerate() {
        let share = if answered_total == 0 { 0.0 } else { *answered as f64 * 100.0 / answered_total as f64 };
        let now = if listed.contains(instance.address()) { "yes" } else { "no" };
        let note = if n == VICTIM {
            format!("   (killed and restarted; {} answered since the restart)", answered.saturating_sub(before_restart))
        } else {
            String::new()
        };
        println!(
            "  #{:<8} {:<21} {:<8} {:<5} {:>9} {:>5.1}% {:>16}  {now}{note}",
            n + 1,
            instance.address(),
            instance.version,
            instance.zone,
            answered,
            share,
            failed
        );
    }
    let failovers: u64 = per_instance.iter().map(|t| t.1).sum();
    println!();
    println!("  calls made        {}", counts.issued());
    println!("  answered right    {}", counts.ok);
    println!("  failed calls      {}", counts.failed);
    println!("  failed attempts   {failovers} (transport failures the client failed over from)");
    if counts.shed > 0 {
        println!("  not sent          {} (more than {MAX_IN_FLIGHT} calls were in flight)", counts.shed);
    }
    println!(
        "  latency           p50 {}  p99 {}  max {}",
        micros(h.value_at_quantile(0.5)),
        micros(h.value_at_quantile(0.99)),
        micros(h.max())
    );
    println!();
    if counts.failed == 0 {
        println!(
            "PASS: 0 of {} calls failed through a SIGKILL and a restart of instance #{}",
            counts.issued(),
            VICTIM + 1
        );
    } else {
        println!("FAIL: {} of {} calls failed", counts.failed, counts.issued());
    }
}
