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
    let (mut server, addr) = common::start_arith_server(&["--listen", "127.0.0.1:0"]).await;
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
