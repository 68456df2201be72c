//! The registry as a real process (`examples/registry_server.rs`) under
//! 100,000 registrations over HTTP: its memory stays under 200 MB, watchers
//! never get an answer past the listing cap (not even one that fell far
//! behind), discovery still sees every instance, and past its caps the
//! registry refuses with the documented errors.
//!
//! The example binary is built by `cargo test` / `cargo nextest run` with
//! the tests (`cargo build -p switchboard-registry --examples` otherwise).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use switchboard::discovery::{Change, Discover};
use switchboard_registry::{BuiltinDiscover, RegistryClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const SERVICES: usize = 100;
const PER_SERVICE: usize = 1_000;
const TOTAL: usize = SERVICES * PER_SERVICE;
const LISTING_CAP: usize = 64 * 1024;
const RSS_LIMIT_KB: u64 = 200 * 1024;
const WATCHED: &str = "svc-000";

/// `target/<profile>/examples/<name>`, as cargo builds it for the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let profile = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let dir = profile.join("examples");
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
        panic!("{} missing: build it with `cargo build -p switchboard-registry --examples`", plain.display())
    })
}

/// Peak and current resident memory of `pid`, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn start_registry() -> (Child, String) {
    let mut child = Command::new(example("registry_server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--max-instances", &TOTAL.to_string()])
        .args(["--max-instances-per-service", &PER_SERVICE.to_string()])
        .args(["--max-listing-bytes", &LISTING_CAP.to_string()])
        .stdin(Stdio::piped()) // closing it stops the registry
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("registry_server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("registry_server prints its address in time")
        .expect("stdout readable")
        .expect("a line");
    let base = line.strip_prefix("registry listening on ").unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, base.to_owned())
}

/// What one raw blocking-query watcher saw.
#[derive(Debug, Default)]
struct Watched {
    answers: usize,
    largest: usize,
    paged: usize,
    ids: std::collections::BTreeSet<String>,
}

/// A blocking-query loop on `WATCHED` through raw GETs, keeping its own
/// view and noting every answer's size. With `behind`, it stops after its
/// first answer until `behind` says the registrations are done: then what
/// it missed is the whole service, which must come in pages under the cap.
async fn watcher(
    http: Client,
    base: String,
    behind: Option<tokio::sync::watch::Receiver<bool>>,
    stop: Arc<AtomicBool>,
) -> Watched {
    let mut seen = Watched::default();
    let (mut index, mut epoch) = (0u64, 0u64);
    let mut behind = behind;
    loop {
        let url = format!("{base}/v1/services/{WATCHED}?index={index}&epoch={epoch}&wait=2s");
        let Ok(resp) = http.get(&url).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await; // transient: try again
            continue;
        };
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.bytes().await.expect("answer body");
        assert!(body.len() <= LISTING_CAP, "an answer of {} bytes, past the cap of {LISTING_CAP}", body.len());
        let page: Value = serde_json::from_slice(&body).expect("JSON");
        seen.answers += 1;
        seen.largest = seen.largest.max(body.len());
        seen.paged += usize::from(page["more"] == true);
        if page["reset"] == true {
            seen.ids.clear();
        }
        for id in page["removed"].as_array().expect("removed") {
            seen.ids.remove(id.as_str().expect("id"));
        }
        for instance in page["instances"].as_array().expect("instances") {
            seen.ids.insert(instance["id"].as_str().expect("id").to_owned());
        }
        (index, epoch) = (page["index"].as_u64().expect("index"), page["epoch"].as_u64().expect("epoch"));
        if stop.load(Ordering::SeqCst) && page["more"] == false {
            return seen;
        }
        if let Some(mut done) = behind.take() {
            let _ = done.wait_for(|done| *done).await;
        }
    }
}

/// A registration request as raw HTTP/1.1.
fn request(i: usize) -> String {
    let body = format!(
        r#"{{"service":"svc-{:03}","id":"i-{i:06}","address":"127.0.0.1:{}","metadata":{{"version":"1.4.2","zone":"eu-1"}},"methods":["Arith.Multiply","Arith.Divide"],"ttl_ms":3600000}}"#,
        i % SERVICES,
        10_000 + i % 50_000
    );
    format!(
        "PUT /v1/instances HTTP/1.1\r\nhost: registry\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Registers `TOTAL` instances over `connections` keep-alive connections,
/// each sending its requests in pipelined batches and reading the answers:
/// cheap for this process, so the registry's own cost is what the run takes.
async fn register_all(addr: &str, connections: usize) {
    const BATCH: usize = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, next) = (addr.to_owned(), next.clone());
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                let mut answers = Vec::new();
                loop {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    if from >= TOTAL {
                        return;
                    }
                    let batch = from..(from + BATCH).min(TOTAL);
                    let wire: String = batch.clone().map(request).collect();
                    stream.write_all(wire.as_bytes()).await.expect("send");
                    for i in batch {
                        let status = read_answer(&mut stream, &mut answers).await;
                        assert_eq!(status, 200, "registration {i}");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Reads one answer (head and `content-length` body) off `stream`, keeping
/// what follows it in `buf`; returns its status.
async fn read_answer(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> u16 {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("content-length"));
            if buf.len() >= end + 4 + length {
                let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("status line");
                buf.drain(..end + 4 + length);
                return status;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("an answer within 30 s")
            .expect("read");
        assert!(n > 0, "the registry closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_process_holds_100k_registrations_under_200_mb_and_bounds_every_answer() {
    let began = Instant::now();
    let (mut child, base) = start_registry().await;
    let pid = child.id().expect("pid");
    let http = Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let client = RegistryClient::new(&base).unwrap();

    // Watchers of one service: two prompt, one left behind for the whole
    // run, and discovery.
    let stop = Arc::new(AtomicBool::new(false));
    let (loaded, loaded_rx) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = [None, None, Some(loaded_rx)]
        .into_iter()
        .map(|behind| tokio::spawn(watcher(http.clone(), base.clone(), behind, stop.clone())))
        .collect();
    let mut discovery = BuiltinDiscover::new(client.clone()).discover(WATCHED);

    // 100,000 registrations over 8 connections.
    let load = Instant::now();
    register_all(base.trim_start_matches("http://"), 8).await;
    let registered = load.elapsed();
    loaded.send_replace(true);
    let (peak_after_load, _) = memory_kb(pid);
    println!("{TOTAL} registrations in {registered:?}; registry VmHWM {} MB", peak_after_load / 1024);
    assert_eq!(client.status().await.unwrap().instances, TOTAL);

    // Past the caps: the documented refusals, naming the limit.
    let refuse = |body: Value, status: StatusCode, code: &'static str, limit: String| {
        let (http, url) = (http.clone(), format!("{base}/v1/instances"));
        async move {
            let resp = http.put(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), status);
            let answer: Value = resp.json().await.unwrap();
            assert_eq!(answer["code"], code, "{answer}");
            let message = answer["error"].as_str().unwrap();
            assert!(message.contains(&limit), "{message:?} does not name {limit:?}");
        }
    };
    let new = json!({"service": "svc-new", "id": "x", "address": "127.0.0.1:1"});
    refuse(new, StatusCode::CONFLICT, "too_many_instances", format!("at most {TOTAL} (max_instances)")).await;
    let resp = http.delete(format!("{base}/v1/instances/svc-001/i-000001")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let full = json!({"service": WATCHED, "id": "one-more", "address": "127.0.0.1:1"});
    refuse(full, StatusCode::CONFLICT, "service_full", format!("at most {PER_SERVICE} instances")).await;
    let big = json!({"service": "svc-001", "id": "big", "address": "127.0.0.1:1", "metadata": {"kv": {"b": "x".repeat(9000)}}});
    refuse(big, StatusCode::PAYLOAD_TOO_LARGE, "metadata_too_large", "max_metadata_bytes".to_owned()).await;
    let resp = http.put(format!("{base}/v1/instances/{WATCHED}/i-000000/heartbeat")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "heartbeats at the cap");

    // A fresh listing of the full service: pages under the cap, all 1,000.
    let listed = client.instances(WATCHED).await.unwrap();
    assert_eq!(listed.instances.len(), PER_SERVICE);
    let (mut pages, mut largest) = (0, 0);
    let mut url = format!("{base}/v1/services/{WATCHED}");
    loop {
        let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
        assert!(body.len() <= LISTING_CAP, "a page of {} bytes", body.len());
        largest = largest.max(body.len());
        pages += 1;
        let page: Value = serde_json::from_slice(&body).unwrap();
        if page["more"] == false {
            break;
        }
        url = format!("{base}/v1/services/{WATCHED}?index={}&epoch={}&wait=0s", page["index"], page["epoch"]);
    }
    println!("a full listing of {PER_SERVICE} instances: {pages} pages, the largest {largest} bytes");
    assert!(pages > 1, "the listing did not need pages: raise PER_SERVICE or lower the cap");

    // The watchers end with the whole service, having never seen more than the cap.
    stop.store(true, Ordering::SeqCst);
    for (n, w) in watchers.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(20), w).await.expect("watcher ends").unwrap();
        println!(
            "watcher {n}: {} answers, the largest {} bytes, {} cut at the cap",
            seen.answers, seen.largest, seen.paged
        );
        assert_eq!(seen.ids.len(), PER_SERVICE, "watcher {n} lost track");
        if n == 2 {
            assert!(seen.paged > 0, "the watcher left behind caught up without paging: {seen:?}");
        }
    }
    let mut known = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while known.len() < PER_SERVICE {
        let batch = tokio::time::timeout_at(deadline, discovery.next()).await.expect("discovery keeps up").unwrap();
        for change in batch {
            match change {
                Change::Added(i) | Change::Updated(i) => {
                    known.insert(i.id);
                }
                Change::Removed(id) => {
                    known.remove(&id);
                }
            }
        }
    }

    let (peak, rss) = memory_kb(pid);
    println!("registry memory: VmHWM {} MB, VmRSS {} MB; whole run {:?}", peak / 1024, rss / 1024, began.elapsed());
    assert!(peak < RSS_LIMIT_KB, "the registry's peak RSS was {} MB", peak / 1024);

    drop(child.stdin.take()); // the registry shuts down when its stdin closes
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("registry exits").unwrap();
    assert!(status.success(), "{status}");
}
