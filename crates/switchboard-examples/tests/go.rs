//! The issue's acceptance, with the binaries users run: `arith_server`
//! answers unmodified Go net/rpc clients (`rpc.Dial`, `jsonrpc.Dial`,
//! `rpc.DialHTTP`) on the port it serves Switchboard on, and `switchboard
//! call --protocol go-gob|go-jsonrpc|go-http` calls a Go net/rpc server.

#[path = "../../switchboard/tests/support/go.rs"]
mod go;

mod common;

use common::workspace_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_get_56_from_arith_server_over_gob_jsonrpc_and_http() {
    // No --registry: arith_server only listens.
    let (mut server, addr) = arith_server_alone().await;
    for proto in ["gob", "jsonrpc", "http"] {
        let printed = {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || go::go_client_ok(proto, &addr, "multiply")).await.expect("go client")
        };
        assert_eq!(printed, "56", "{proto}");
    }
    server.start_kill().expect("kill");
    server.wait().await.expect("reaped");
}

/// `arith_server --listen 127.0.0.1:0` without a registry.
async fn arith_server_alone() -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(common::example("arith_server"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("arith_server starts");
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), BufReader::new(stdout).lines().next_line())
        .await
        .expect("in time")
        .expect("readable")
        .expect("a line");
    let addr = line.strip_prefix("listening on ").expect("'listening on ADDR'").to_owned();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchboard_call_prints_56_from_go_servers() {
    for proto in ["gob", "jsonrpc", "http"] {
        let go_server = tokio::task::spawn_blocking(move || go::GoServer::start(proto)).await.expect("go server");
        let out = tokio::process::Command::new(workspace_binary("switchboard"))
            .args(["call", "--addr", go_server.addr(), "--protocol", &format!("go-{proto}")])
            .args(["Arith.Multiply", r#"{"A":7,"B":8}"#])
            .kill_on_drop(true)
            .output()
            .await
            .expect("switchboard runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{proto}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.trim(), "56", "{proto}");
        // A Go application error comes back as one, with a failing exit code.
        let out = tokio::process::Command::new(workspace_binary("switchboard"))
            .args(["call", "--addr", go_server.addr(), "--protocol", &format!("go-{proto}")])
            .args(["Arith.Divide", r#"{"A":1,"B":0}"#])
            .kill_on_drop(true)
            .output()
            .await
            .expect("switchboard runs");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("divide by zero"), "{proto}");
    }
}
