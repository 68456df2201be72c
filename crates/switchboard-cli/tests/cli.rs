//! The `switchboard` binary against a real server on a loopback port.

use std::process::Output;

use serde::{Deserialize, Serialize};
use switchboard::server::handler_fn;
use switchboard::{Server, Status};

#[derive(Serialize, Deserialize)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

async fn start_server() -> (Server, String) {
    start_server_with(Server::builder()).await
}

async fn start_server_with(builder: switchboard::server::ServerBuilder) -> (Server, String) {
    let server = builder.build();
    let router = server.router();
    router.add_method("Arith.Multiply", handler_fn(|x: Args| async move { Ok::<_, Status>(x.a * x.b) })).unwrap();
    router
        .add_method(
            "Arith.Divide",
            handler_fn(|x: Args| async move {
                if x.b == 0 {
                    Err(Status::invalid_argument("divide by zero"))
                } else {
                    Ok(x.a / x.b)
                }
            }),
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server.clone().serve(listener));
    (server, addr)
}

async fn run(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args);
    tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
        .await
        .expect("the CLI finished within 20 s")
        .expect("the CLI ran")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

#[tokio::test]
async fn call_prints_the_json_reply() {
    let (_server, addr) = start_server().await;
    let out = run(&["call", "--addr", &addr, "Arith.Multiply", r#"{"A":7,"B":8}"#]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "56");
}

#[tokio::test]
async fn unknown_method_prints_not_found_and_fails() {
    let (_server, addr) = start_server().await;
    let out = run(&["call", "--addr", &addr, "Arith.Power", r#"{"A":7,"B":8}"#]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("NotFound") && err.contains("Power"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[tokio::test]
async fn application_errors_keep_their_code_and_message() {
    let (_server, addr) = start_server().await;
    let out = run(&["call", "--addr", &addr, "Arith.Divide", r#"{"A":7,"B":0}"#]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: InvalidArgument: divide by zero");
}

#[tokio::test]
async fn bad_json_is_refused_before_calling() {
    let (_server, addr) = start_server().await;
    let out = run(&["call", "--addr", &addr, "Arith.Multiply", r#"{"A":7"#]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    // Bind then drop a listener: nothing listens there afterwards.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = run(&["call", "--addr", &addr, "Arith.Multiply", "{}"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Unavailable"), "{}", stderr(&out));
}

#[tokio::test]
async fn bench_reports_rate_and_percentiles() {
    let (server, addr) = start_server().await;
    server
        .router()
        .add_method(
            "Echo.Echo",
            switchboard::server::raw_handler_fn(
                |req| async move { Ok(switchboard::Response::new(req.codec, req.payload)) },
            ),
        )
        .unwrap();
    let out = run(&[
        "bench",
        "--addr",
        &addr,
        "--concurrency",
        "4",
        "--requests",
        "300",
        "--warmup",
        "0s",
        "--payload-size",
        "128",
        "Echo.Echo",
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("calls:        300 ok, 0 failed"), "{text}");
    for needle in ["calls/s:", "p50", "p90", "p99", "p999", "Histogram:"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[tokio::test]
async fn bench_fails_fast_on_an_unknown_method() {
    let (_server, addr) = start_server().await;
    let out = run(&["bench", "--addr", &addr, "--requests", "10", "--warmup", "0s", "Nope.Nothing"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

/// `switchboard list` shows each service with its instances' address,
/// version, zone, weight and health, read from a real registry.
#[tokio::test]
async fn list_shows_services_and_instances_from_the_registry() {
    use switchboard_registry::model::RegisterRequest;
    use switchboard_registry::{RegistryClient, RegistryServer};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = RegistryServer::builder().build().spawn(listener).unwrap();
    let url = format!("http://{}", handle.local_addr());
    let client = RegistryClient::new(&url).unwrap();

    let out = run(&["list", "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "no services registered");

    for (id, port, version, zone) in [("arith-1", 9001, "1.0", "eu-1"), ("arith-2", 9002, "2.0", "us-1")] {
        let mut request = RegisterRequest::new("Arith", id, format!("127.0.0.1:{port}"));
        request.metadata.version = version.into();
        request.metadata.zone = zone.into();
        request.methods = vec!["Multiply".into()];
        client.register(&request).await.unwrap();
    }
    let out = run(&["list", "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("Arith (2 instances)"), "{text}");
    let row = |id: &str| text.lines().find(|l| l.trim_start().starts_with(id)).unwrap_or_default().to_owned();
    for (id, addr, version, zone) in
        [("arith-1", "127.0.0.1:9001", "1.0", "eu-1"), ("arith-2", "127.0.0.1:9002", "2.0", "us-1")]
    {
        let line = row(id);
        for field in [addr, version, zone, "100", "passing"] {
            assert!(line.contains(field), "{field:?} missing from {line:?}");
        }
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_reports_an_unreachable_registry() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = run(&["list", "--registry", &format!("http://{addr}")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    let out = run(&["list", "--registry", "ftp://example"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid registry URL"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_the_registry_and_list_methods_added_at_run_time() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use switchboard_registry::{BuiltinRegistrar, RegistryClient, RegistryServer};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = RegistryServer::builder().build().spawn(listener).unwrap();
    let url = format!("http://{}", handle.local_addr());
    let registrar = Arc::new(BuiltinRegistrar::new(RegistryClient::new(&url).unwrap()));
    let (server, _addr) = start_server_with(Server::builder().registrar(registrar)).await;

    let out = run(&["call", "--registry", &url, "Arith.Multiply", r#"{"A":7,"B":8}"#]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "56");

    // A method added while serving appears in `list` with the others.
    server.router().add_method("Arith.Add", handler_fn(|x: Args| async move { Ok::<_, Status>(x.a + x.b) })).unwrap();
    let began = Instant::now();
    loop {
        let out = run(&["list", "--registry", &url]).await;
        if stdout(&out).contains("methods: Arith.Add, Arith.Divide, Arith.Multiply") {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(5), "list never showed Arith.Add: {}", stdout(&out));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = run(&["call", "--registry", &url, "Arith.Add", r#"{"A":7,"B":8}"#]).await;
    assert_eq!(stdout(&out), "15", "stderr: {}", stderr(&out));

    // A service nobody registered: a clear error, exit code 1.
    let out = run(&["call", "--registry", &url, "Nope.Nothing", "{}"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no instance of Nope available"), "{}", stderr(&out));
    // Neither --addr nor --registry: a usage error.
    let out = run(&["call", "Arith.Add", "{}"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    server.shutdown().await;
    handle.shutdown().await.unwrap();
}

/// `[  4.0s] text`: the seconds and the text, for a demo timeline line.
fn stamped(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (secs, text) = rest.split_once("s]")?;
    Some((secs.trim().parse().ok()?, text.trim()))
}

/// The main job: `switchboard demo` runs a registry and three instances,
/// SIGKILLs one under load and restarts it; no call fails, the killed
/// instance's share goes to the others and comes back after the restart.
#[tokio::test]
async fn demo_rides_through_a_sigkill_and_a_restart_with_no_failed_call() {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["demo", "--duration", "8s", "--rate", "500"]).kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("the demo finished within 60 s")
        .expect("the demo ran");
    let text = stdout(&out);
    let shown = format!("stdout:\n{text}\nstderr:\n{}", stderr(&out));
    assert!(out.status.success(), "{shown}");

    let events: Vec<(f64, &str)> = text.lines().filter_map(stamped).collect();
    let at = |prefix: &str| events.iter().find(|(_, t)| t.starts_with(prefix)).map(|(s, _)| *s);
    let killed = at(">>> SIGKILL instance #3").unwrap_or_else(|| panic!("no kill event: {shown}"));
    let restarted = at(">>> restarted instance #3").unwrap_or_else(|| panic!("no restart event: {shown}"));
    assert!(killed < restarted, "{shown}");

    // Status lines wholly after the kill and before the restart: #3 answers nothing.
    let share_of_3 = |t: &str| {
        let words: Vec<&str> = t.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "#3")?;
        words.get(i + 1)?.strip_suffix('%')?.parse::<f64>().ok()
    };
    let between: Vec<f64> = events
        .iter()
        .filter(|(s, t)| *s >= killed + 1.5 && *s <= restarted && t.contains("calls/s"))
        .filter_map(|(_, t)| share_of_3(t))
        .collect();
    assert!(!between.is_empty(), "no status line between the kill and the restart: {shown}");
    assert!(between.iter().all(|s| *s == 0.0), "#3 still answered after its SIGKILL: {shown}");

    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name:?} in the summary: {shown}"))
    };
    assert_eq!(field("failed calls"), 0, "{shown}");
    assert_eq!(field("calls made"), 4000, "{shown}");
    assert_eq!(field("answered right"), 4000, "{shown}");
    // The restarted instance took calls again.
    let since = text
        .lines()
        .find(|l| l.trim_start().starts_with("#3"))
        .and_then(|l| l.split("restarted; ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no '#3 ... N answered since the restart' row: {shown}"));
    assert!(since > 100, "the restarted instance answered only {since} calls: {shown}");
    assert!(text.contains("PASS: 0 of 4000 calls failed"), "{shown}");
}

/// Runs the CLI with `input` on stdin.
async fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the CLI starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input).await.expect("write stdin");
    drop(stdin);
    tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the CLI finished within 20 s")
        .expect("the CLI ran")
}

/// `switchboard config` puts, gets, lists and deletes keys in a real
/// registry, and the registry's store holds what the CLI says it wrote.
#[tokio::test]
async fn config_put_get_list_delete_against_a_registry() {
    use switchboard_registry::RegistryServer;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = RegistryServer::builder().build().spawn(listener).unwrap();
    let url = format!("http://{}", handle.local_addr());
    let store = handle.store().clone();
    let value = |key: &str| store.config_get(key).unwrap().map(|e| e.value);

    let out = run(&["config", "put", "routing/Arith", r#"{"zone":"eu-1"}"#, "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "put routing/Arith (rev 2)");
    assert_eq!(value("routing/Arith").as_deref(), Some(r#"{"zone":"eu-1"}"#));

    // `-` reads the value from stdin, exactly (two lines, no trailing newline added).
    let out = run_with_stdin(&["config", "--registry", &url, "put", "routing/Echo", "-"], b"line 1\nline 2").await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(value("routing/Echo").as_deref(), Some("line 1\nline 2"));
    store.config_put("plugins/list", "a.wasm").unwrap();

    let out = run(&["config", "get", "routing/Echo", "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "line 1\nline 2\n");

    let out = run(&["config", "list", "routing/", "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "routing/Arith = {\"zone\":\"eu-1\"} (rev 2)\nrouting/Echo = line 1\\nline 2 (rev 3)");
    let out = run(&["config", "list", "--registry", &url]).await;
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));

    let out = run(&["config", "delete", "routing/Arith", "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "deleted routing/Arith");
    assert_eq!(value("routing/Arith"), None);
    let out = run(&["config", "delete", "routing/Arith", "--registry", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("nothing deleted"), "{}", stdout(&out));

    // A missing key, a bad key: a clear error, exit code 1.
    let out = run(&["config", "get", "routing/Arith", "--registry", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: no config key \"routing/Arith\"");
    assert!(stdout(&out).is_empty());
    let out = run(&["config", "put", "/etc/passwd", "x", "--registry", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid config key \"/etc/passwd\""), "{}", stderr(&out));
    let out = run_with_stdin(&["config", "put", "k", "-", "--registry", &url], &[0xff, 0xfe]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
    assert_eq!(value("k"), None);
    handle.shutdown().await.unwrap();

    // The registry is gone: unavailable, exit code 1.
    let out = run(&["config", "get", "routing/Echo", "--registry", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
}

async fn next_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .expect("read")
        .expect("a line, not the end")
}

/// `switchboard config watch --count 3` prints the current keys, then one
/// line per change, and exits after the third batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watch_prints_each_change_and_stops_after_count_batches() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = switchboard_registry::RegistryServer::builder().build().spawn(listener).unwrap();
    let url = format!("http://{}", handle.local_addr());
    let store = handle.store().clone();
    store.config_put("app/a", "1").unwrap();
    store.config_put("other/x", "9").unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["config", "watch", "app/", "--count", "3", "--registry", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the CLI starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert_eq!(next_line(&mut lines).await, "put app/a = 1 (rev 2)");
    store.config_put("other/y", "8").unwrap(); // not under app/: nothing printed
    store.config_put("app/b", "two\nlines").unwrap();
    assert_eq!(next_line(&mut lines).await, "put app/b = two\\nlines (rev 5)");
    store.config_delete("app/a").unwrap();
    assert_eq!(next_line(&mut lines).await, "deleted app/a");

    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits after three batches")
        .expect("wait");
    assert!(status.success());
    assert_eq!(lines.next_line().await.expect("read"), None, "nothing after the third batch");
    handle.shutdown().await.unwrap();
}

/// `bench --registry --meta`: load through discovery, with metadata the
/// service checks, and the per-instance spread in the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_through_discovery_sends_the_metadata_and_reports_the_spread() {
    use switchboard_registry::model::RegisterRequest;
    use switchboard_registry::{RegistryClient, RegistryServer};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = RegistryServer::builder().build().spawn(listener).unwrap();
    let url = format!("http://{}", handle.local_addr());
    let registry = RegistryClient::new(&url).unwrap();
    let mut addrs = Vec::new();
    for id in ["t-1", "t-2"] {
        let server = Server::builder().build();
        server
            .router()
            .add_method(
                "Tenant.Check",
                handler_fn(|(): ()| async {
                    let ctx = switchboard::Context::current().expect("in a handler");
                    match ctx.metadata().get("tenant") {
                        Some("acme") => Ok(()),
                        _ => Err(Status::permission_denied("no tenant")),
                    }
                }),
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(server.serve(listener));
        let mut request = RegisterRequest::new("Tenant", id, addr.clone());
        request.methods = vec!["Check".into()];
        registry.register(&request).await.unwrap();
        addrs.push(addr);
    }
    let bench = |meta: &'static [&'static str]| {
        let mut args = vec!["bench", "--registry", &url, "-c", "4", "--requests", "200", "--warmup", "0s"];
        args.extend_from_slice(meta);
        args.push("Tenant.Check");
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let args = bench(&["--meta", "tenant=acme"]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("calls:        200 ok, 0 failed"), "{text}");
    assert!(text.contains("(discovery)"), "{text}");
    for addr in &addrs {
        let line = text.lines().find(|l| l.contains(addr.as_str())).unwrap_or_else(|| panic!("{addr} not in {text}"));
        let answered: u64 = line.split_whitespace().nth(2).and_then(|n| n.parse().ok()).expect("a count");
        assert!(answered > 0, "{addr} answered none: {text}");
    }
    // Without the metadata the service refuses, and bench says so.
    let args = bench(&[]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("PermissionDenied: no tenant"), "{}", stderr(&out));
    handle.shutdown().await.unwrap();
}
