//! The hostile-peer suite: each attack of the hostile-peer report, made on a
//! real `echo_server` process over loopback, with the bound it must now keep
//! (peak RSS from `/proc/PID/status`, CPU time from `/proc/PID/stat`, and
//! the latency of a legitimate call made while the attack runs).
//!
//! Attackers connect from 127.0.0.2 and up (the whole of 127/8 is
//! loopback), the legitimate client from 127.0.0.1. Bounds carry generous
//! margins: a loaded 2-core machine must not make them flaky. docs/RELIABILITY.md
//! has the numbers measured on a release build.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use switchboard::frame::{Head, Kind, Metadata, FLAG_COMPRESSED, HEADER_LEN};
use switchboard::Channel;
use switchboard::{Client, Codec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

/// `echo_server` as a child process, with the limits given as flags.
struct Target {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Target {
    /// Starts `echo_server --listen 127.0.0.1:0 ARGS`, under `ulimit -n` if
    /// `max_fds` is set.
    async fn start(args: &[&str], max_fds: Option<u32>) -> Target {
        let bin = common::example("echo_server");
        let mut command = match max_fds {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("echo_server starts");
        let pid = child.id().expect("a pid");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("echo_server prints its address in time")
            .expect("readable stdout")
            .expect("a line");
        let addr = line.strip_prefix("listening on ").expect("'listening on ADDR'").parse().expect("an address");
        Target { child, pid, addr }
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("/proc/PID/status");
        let line = status.lines().find(|l| l.starts_with(field)).expect("the field");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of kB")
    }

    /// Resident memory now, MiB.
    fn rss_mib(&self) -> f64 {
        self.status_kb("VmRSS:") as f64 / 1024.0
    }

    /// Peak resident memory so far, MiB.
    fn peak_mib(&self) -> f64 {
        self.status_kb("VmHWM:") as f64 / 1024.0
    }

    /// File descriptors open in the server.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map(|d| d.count()).unwrap_or(0)
    }

    /// User + system CPU time so far, seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("/proc/PID/stat");
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / 100.0 // USER_HZ
    }

    /// A client from 127.0.0.1.
    async fn client(&self) -> Client {
        Client::builder(self.addr.to_string())
            .timeout(Some(Duration::from_secs(10)))
            .connect()
            .await
            .expect("the legitimate client connects")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message {
    id: u64,
    name: String,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// One legitimate call; returns how long it took.
async fn legit_call(client: &Client, id: u64) -> Duration {
    let msg = Message { id, name: "legit".into(), payload: vec![7; 64] };
    let start = Instant::now();
    let back: Message = client.call("Echo.Echo", &msg).await.expect("the legitimate call answers");
    assert_eq!(back, msg);
    start.elapsed()
}

/// The most file descriptors this test process may open.
fn raise_own_fd_limit() {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
}

/// A connection from `from` (a loopback address other than 127.0.0.1).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("an address"))?;
    socket.connect(to).await
}

/// Waits until the server closes `stream` (end of stream or reset),
/// discarding whatever it sends; `None` if it is still open at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: tokio::time::Instant) -> Option<Instant> {
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

fn frame(head: Head, meta: &Metadata, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    head.encode(&mut buf, meta, payload).expect("encodes");
    buf
}

fn echo_request(id: u64, payload_len: usize) -> BytesMut {
    let msg = Message { id, name: "x".into(), payload: vec![1; payload_len] };
    let body = switchboard::codec::encode_to_bytes(&msg, Codec::Binary).expect("encodes");
    let mut meta = Metadata::default();
    meta.set_method("Echo.Echo");
    let head = Head { codec: Codec::Binary.id(), ..Head::new(Kind::Request, id) };
    frame(head, &meta, &body)
}

/// A valid ping, so a connection counts as a client that spoke.
fn ping() -> BytesMut {
    frame(Head::new(Kind::Ping, 1), &Metadata::default(), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_prefixes_of_every_protocol_are_closed_within_the_handshake_timeout() {
    raise_own_fd_limit();
    let target = Target::start(&[], None).await; // default handshake timeout: 10 s
    let limit = Duration::from_secs(10);
    let mut header = frame(Head::new(Kind::Request, 1), &Metadata::default(), b"abcd");
    header.truncate(20);
    let kinds: [(&str, &[u8]); 4] =
        [("{", b"{"), ("GET ", b"GET "), ("C5 B0", &[0xC5, 0xB0]), ("20 header bytes", &header)];
    let started = Instant::now();
    let mut attackers = Vec::new();
    for (i, (name, prefix)) in kinds.iter().enumerate() {
        let from = format!("127.0.0.{}", i + 2);
        for _ in 0..300 {
            let mut stream = connect_from(&from, target.addr).await.expect("attacker connects");
            stream.write_all(prefix).await.expect("attacker writes");
            attackers.push((*name, stream));
        }
    }
    // Meanwhile a legitimate client is served.
    let client = target.client().await;
    let took = legit_call(&client, 1).await;
    assert!(took < Duration::from_millis(500), "a legitimate call took {took:?} during the attack");

    let deadline = tokio::time::Instant::from_std(started) + limit + Duration::from_secs(5);
    let mut latest = Duration::ZERO;
    for (name, stream) in &mut attackers {
        let at = closed_by(stream, deadline).await;
        let at = at
            .unwrap_or_else(|| panic!("a connection stalled on {name:?} is still open after {:?}", started.elapsed()));
        latest = latest.max(at - started);
    }
    assert!(latest >= limit - Duration::from_millis(500), "closed after {latest:?}: before the handshake timeout");
    println!("1,200 stalled connections closed, the last {latest:?} after the first was opened; legit call {took:?}");
    legit_call(&client, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_from_one_address_do_not_lock_out_another() {
    raise_own_fd_limit();
    let target = Target::start(&[], None).await; // 10,000 in all, 1,024 per address
    let mut attackers = Vec::new();
    let mut refused = 0;
    for _ in 0..10_050 {
        match connect_from("127.0.0.2", target.addr).await {
            Ok(mut stream) => {
                // A client that spoke once and then sits idle.
                if stream.write_all(&ping()).await.is_err() {
                    refused += 1;
                    continue;
                }
                attackers.push(stream);
            }
            Err(_) => refused += 1,
        }
    }
    let client = target.client().await;
    let took = legit_call(&client, 1).await;
    assert!(took < Duration::from_millis(500), "a legitimate call took {took:?}");
    // The server turned all but 1,024 of them away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut closed = 0;
    for stream in attackers.iter_mut().skip(1_024) {
        if closed_by(stream, deadline).await.is_some() {
            closed += 1;
        }
    }
    println!("{} attacker connections open, {closed} of those past the first 1,024 closed by the server, {refused} failed to connect; legit call {took:?}", attackers.len());
    assert!(closed + refused >= 10_050 - 1_024 - 50, "only {closed} closed and {refused} refused");
    legit_call(&client, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_a_new_client_is_answered_or_refused_fast() {
    raise_own_fd_limit();
    let target = Target::start(&[], Some(1024)).await;
    let mut attackers = Vec::new();
    for i in 0..1_100 {
        let from = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" };
        if let Ok(mut stream) = connect_from(from, target.addr).await {
            if stream.write_all(&ping()).await.is_ok() {
                attackers.push(stream);
            }
        }
    }
    // Some of those are waiting in the listen backlog: the server is out of
    // descriptors. A new client must not hang until its deadline.
    let start = Instant::now();
    let result = async {
        let client = Client::builder(target.addr.to_string()).timeout(Some(Duration::from_secs(5))).connect().await?;
        let msg = Message { id: 1, name: "legit".into(), payload: vec![1; 16] };
        client.call::<_, Message>("Echo.Echo", &msg).await
    }
    .await;
    let took = start.elapsed();
    println!("out of descriptors: the legitimate call took {took:?}: {:?}", result.as_ref().map(|m| m.id));
    match &result {
        Ok(msg) => assert_eq!(msg.id, 1),
        Err(e) => assert!(e.to_string().contains("file descriptors"), "unclear error: {e}"),
    }
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_frames_stay_within_the_memory_budget() {
    let budget_mib = 256.0; // the default
    let target = Target::start(&[], None).await;
    let client = target.client().await;
    legit_call(&client, 1).await;
    let base = target.rss_mib();
    // 32 connections each send all but 2 bytes of a 16 MiB frame, then stall.
    let whole = echo_request(7, (16 << 20) - 200);
    let len = whole.len().min(16 << 20);
    let mut attackers = Vec::new();
    for _ in 0..32 {
        let mut stream = connect_from("127.0.0.2", target.addr).await.expect("connects");
        let part = whole[..len - 2].to_vec();
        attackers.push(tokio::spawn(async move {
            let _ = stream.write_all(&part).await;
            stream
        }));
    }
    let mut streams = Vec::new();
    for attacker in attackers {
        streams.push(attacker.await.expect("writer"));
    }
    let took = legit_call(&client, 2).await;
    let peak = target.peak_mib();
    println!("32 stalled 16 MiB frames: peak RSS {peak:.1} MiB (before {base:.1} MiB); legit call {took:?}");
    assert!(peak < budget_mib + 30.0 + base, "peak RSS {peak:.1} MiB");
    assert!(took < Duration::from_millis(500), "a legitimate call took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_millions_of_empty_metadata_entries_is_refused_cheaply() {
    let target = Target::start(&[], None).await;
    let client = target.client().await;
    legit_call(&client, 1).await;
    // 5.6 M entries of three bytes each (tag, length 1, key length 0).
    let entries = 5_592_000; // 3 bytes each: just under 16 MiB
    let mut buf = BytesMut::new();
    Head::new(Kind::Request, 9).encode_prefix(&mut buf, &Metadata::default(), 0).expect("head");
    buf[16..20].copy_from_slice(&((entries * 3) as u32).to_be_bytes());
    for _ in 0..entries {
        buf.put_slice(&[6, 1, 0]);
    }
    assert!(buf.len() <= (16 << 20) + HEADER_LEN);
    let mut stream = connect_from("127.0.0.2", target.addr).await.expect("connects");
    stream.write_all(&buf).await.expect("writes");
    // The answer: ResourceExhausted for id 9, and the connection carries on.
    let answer = read_frame(&mut stream).await;
    assert_eq!((answer.id, answer.status), (9, switchboard::Code::ResourceExhausted.as_u16()));
    stream.write_all(&ping()).await.expect("writes");
    assert_eq!(read_frame(&mut stream).await.kind, Kind::Pong);
    let peak = target.peak_mib();
    println!("5.6 M metadata entries: refused; peak RSS {peak:.1} MiB");
    assert!(peak < 80.0, "peak RSS {peak:.1} MiB");
    legit_call(&client, 2).await;
}

/// The next frame's head from `stream` (its metadata and payload skipped).
async fn read_frame(stream: &mut TcpStream) -> Head {
    let mut head = [0u8; HEADER_LEN];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .expect("in time")
        .expect("a frame");
    let meta = u32::from_be_bytes([head[16], head[17], head[18], head[19]]) as usize;
    let payload = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
    let mut rest = vec![0u8; meta + payload];
    stream.read_exact(&mut rest).await.expect("the rest of the frame");
    let mut whole = BytesMut::from(&head[..]);
    whole.extend_from_slice(&rest);
    match switchboard::frame::FrameDecoder::new(16 << 20).decode(&mut whole) {
        Ok(Some(switchboard::frame::Decoded::Frame(f))) => f.head,
        other => panic!("not a frame: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_lz4_size_claims_costs_little_cpu() {
    let target = Target::start(&[], None).await;
    let client = target.client().await;
    legit_call(&client, 1).await;
    // 20,000 frames of 80 bytes, each claiming 16 MiB decompressed.
    let mut meta = Metadata::default();
    meta.set_method("Echo.Echo");
    let mut flood = BytesMut::new();
    for id in 0..20_000u64 {
        let mut payload = (16u32 << 20).to_le_bytes().to_vec();
        let room = 80 - HEADER_LEN - meta.encoded_len() - payload.len();
        payload.extend(std::iter::repeat_n(0xffu8, room));
        let head = Head { codec: Codec::Binary.id(), flags: FLAG_COMPRESSED, ..Head::new(Kind::Request, id + 1) };
        flood.extend_from_slice(&frame(head, &meta, &payload));
    }
    assert_eq!(flood.len(), 20_000 * 80);
    let cpu = target.cpu_secs();
    let mut stream = connect_from("127.0.0.2", target.addr).await.expect("connects");
    let (mut rd, mut wr) = stream.split();
    let drain = async {
        // Read the 20,000 error answers.
        let mut sink = vec![0u8; 64 << 10];
        while rd.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
    };
    let send = async {
        wr.write_all(&flood).await.expect("writes");
        // A legitimate call right behind the flood.
        let took = legit_call(&client, 2).await;
        let _ = wr.shutdown().await;
        took
    };
    let (took, ()) = tokio::join!(send, drain);
    let spent = target.cpu_secs() - cpu;
    println!("LZ4 size-claim flood: {spent:.2} CPU-s in the server; legit call {took:?}");
    assert!(spent < 3.0, "{spent:.2} CPU-s");
    assert!(took < Duration::from_millis(500), "a legitimate call took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_read_no_answers_hold_a_bounded_total() {
    let budget_mib = 64;
    let target = Target::start(&["--memory-budget", "64MiB", "--frame-timeout", "5s"], None).await;
    let client = target.client().await;
    legit_call(&client, 1).await;
    let base = target.rss_mib();
    let base_fds = target.open_fds();
    // 40 connections ask for 1 MiB echoes, 32 each, and read none.
    let mut attackers = Vec::new();
    for c in 0..40u64 {
        let mut stream = connect_from("127.0.0.2", target.addr).await.expect("connects");
        attackers.push(tokio::spawn(async move {
            for i in 0..32 {
                if stream.write_all(&echo_request(c * 100 + i + 1, 1 << 20)).await.is_err() {
                    break;
                }
            }
            stream
        }));
    }
    // Writers block once the server stops reading them: wait until the
    // server's memory stops growing, then check the bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = 0.0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = target.rss_mib();
        if (now - last).abs() < 1.0 || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let took = legit_call(&client, 2).await;
    let peak = target.peak_mib();
    println!("40 clients reading no answers: peak RSS {peak:.1} MiB (base {base:.1}, budget {budget_mib} MiB); legit call {took:?}");
    // Beyond the budget: each connection's uncharged 64 KiB of input and
    // of output, and per connection one 1 MiB request held by its running
    // call while its answer waits (charged, but past the limit: a call
    // already running is not refused), plus what the allocator keeps
    // around them. Measured 85 MiB over the base in release, 92–105 MiB in
    // debug builds on a loaded machine.
    let slack = 40.0 * (1.0 + 2.0 * 64.0 / 1024.0) + 24.0;
    assert!(peak < base + budget_mib as f64 + slack, "peak RSS {peak:.1} MiB (base {base:.1})");
    assert!(took < Duration::from_millis(500), "a legitimate call took {took:?}");
    // Those whose answers did not fit the kernel's socket buffers are
    // dropped after the frame timeout (5 s); the others hold nothing in the
    // server. When they all go, every descriptor is given back.
    let streams: Vec<TcpStream> = futures_streams(attackers).await;
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(30);
    while target.open_fds() > base_fds + 1 {
        assert!(Instant::now() < deadline, "{} descriptors still open", target.open_fds());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = target.rss_mib();
    println!("after they left: RSS {after:.1} MiB, {} descriptors open", target.open_fds());
    legit_call(&client, 3).await;
}

async fn futures_streams(tasks: Vec<tokio::task::JoinHandle<TcpStream>>) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for task in tasks {
        if let Ok(stream) = task.await {
            streams.push(stream);
        }
    }
    streams
}
