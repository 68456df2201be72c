//! The Go peers of the net/rpc interop tests, checked against each other:
//! every `netrpcpeer client` case (tests/go/netrpc) against a real Go
//! net/rpc server, over gob (`rpc.Dial`), JSON-RPC (`jsonrpc.Dial`) and HTTP
//! CONNECT (`rpc.DialHTTP`). This pins down what Go's own server answers
//! (`NETRPC_CASES` in support/go.rs), which a Switchboard server must match,
//! and proves the clients can tell a right answer from a wrong one.
//! Needs `go` on PATH (scripts/test.sh installs Debian's golang-go): without
//! it these tests fail, they do not skip.

#[path = "support/go.rs"]
mod go;

use std::time::{Duration, Instant};

use go::{check_case, go_client, GoServer, NETRPC_CASES};

/// Every case against a Go server speaking `proto`, the client dialling it
/// the same way.
fn every_case(proto: &str) {
    let server = GoServer::start(proto);
    for (case, _) in NETRPC_CASES {
        let printed = check_case(proto, server.addr(), case);
        eprintln!("{proto} {case}: {printed}");
    }
    // After all that (a garbage connection included), it still serves.
    check_case(proto, server.addr(), "multiply");
    let status = server.shutdown();
    assert!(status.success(), "the Go {proto} server exited with {status} when its stdin closed");
}

#[test]
fn go_gob_client_against_go_gob_server() {
    every_case("gob");
}

#[test]
fn go_jsonrpc_client_against_go_jsonrpc_server() {
    every_case("jsonrpc");
}

#[test]
fn go_dialhttp_client_against_go_http_server() {
    every_case("http");
}

/// A client speaking the wrong protocol fails (exit 1, reason on stderr):
/// the cases cannot pass against a server that does not answer properly.
#[test]
fn go_client_fails_against_the_wrong_protocol() {
    let server = GoServer::start("jsonrpc");
    for proto in ["gob", "http"] {
        let out = go_client(proto, server.addr(), "multiply");
        assert_eq!(out.status.code(), Some(1), "{proto} client against a JSON-RPC server: {out:?}");
        assert!(out.stdout.is_empty(), "{proto} client printed {:?}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("case multiply over"), "{proto} client stderr: {stderr}");
    }
}

/// Nobody listening: the client fails at once with the dial error.
#[test]
fn go_client_reports_a_refused_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    drop(listener);
    let out = go_client("gob", &addr, "multiply");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connection refused"), "stderr: {stderr}");
}

/// A server that accepts and never answers: the client's own watchdog ends
/// it with a message, well inside the harness's kill timeout.
#[test]
fn go_client_gives_up_on_a_silent_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let started = Instant::now();
    let out = go::run_peer(
        &["client", "-proto", "gob", "-addr", &addr, "-case", "garbage", "-timeout", "1s"],
        Duration::from_secs(30),
    );
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no result after 1s"), "stderr: {stderr}");
}

/// Dropping a `GoServer` ends the process (no orphans).
#[test]
fn dropping_a_go_server_ends_it() {
    let server = GoServer::start("gob");
    let addr = server.addr().to_owned();
    drop(server);
    assert!(std::net::TcpStream::connect(&addr).is_err(), "the Go server at {addr} still accepts after drop");
}

#[test]
#[should_panic(expected = "unknown -proto")]
fn a_go_server_that_cannot_start_fails_the_test_with_its_reason() {
    let _ = GoServer::start("carrier-pigeon");
}

#[test]
fn a_missing_go_fails_with_how_to_install_it() {
    let err = go::build("netrpc", std::ffi::OsStr::new("switchboard-test-no-such-go")).expect_err("built without go");
    assert_eq!(err, "go not found: scripts/test.sh installs Debian's golang-go");
}
