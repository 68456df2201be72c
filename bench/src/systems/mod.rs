//! The systems under test, one module each: how to start its server and how
//! its callers call.
//!
//! | system | server process | client |
//! |--------|----------------|--------|
//! | `switchboard` | the `echo_server` example | one shared [`switchboard::Client`], binary codec |
//! | `switchboard-json` | the `echo_server` example | the same, JSON codec |
//! | `switchboard+log` | `echo_server --log`, `RUST_LOG=warn` | as `switchboard` |
//! | `tonic` | `switchboard-bench serve tonic` | one shared tonic `Channel` |
//! | `tarpc` | `switchboard-bench serve tarpc` | one shared tarpc client, bincode over TCP |
//! | `go` | `go-echo-server` (net/rpc, gob) | `go-echo-client`, its own process, one shared `rpc.Client` |
//! | `switchboard-gob` | the `echo_server` example | `go-echo-client`: Go's net/rpc client calling Switchboard |
//! | `raw-tokio` | `switchboard-bench serve raw-tokio` | a tokio connection per caller |
//! | `raw-std` | `switchboard-bench serve raw-std` | a thread and blocking socket per caller |

pub(crate) mod go;
pub(crate) mod raw_std;
pub(crate) mod raw_tokio;
pub(crate) mod switchboard;
pub(crate) mod tarpc;
pub(crate) mod tonic;

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;

use anyhow::{bail, Context as _};

/// Everything the harness can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    Switchboard,
    SwitchboardJson,
    SwitchboardLog,
    SwitchboardGob,
    Tonic,
    Tarpc,
    Go,
    RawTokio,
    RawStd,
}

/// What a system is in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Switchboard itself, in one of its configurations.
    Subject,
    /// Another RPC framework.
    Peer,
    /// No framework: the cost of the TCP round trip itself.
    Floor,
}

impl System {
    /// In the order they run and are listed.
    pub(crate) const ALL: [System; 9] = [
        System::Switchboard,
        System::SwitchboardJson,
        System::SwitchboardLog,
        System::SwitchboardGob,
        System::Tonic,
        System::Tarpc,
        System::Go,
        System::RawTokio,
        System::RawStd,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Switchboard => "switchboard",
            System::SwitchboardJson => "switchboard-json",
            System::SwitchboardLog => "switchboard+log",
            System::SwitchboardGob => "switchboard-gob",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::Go => "go",
            System::RawTokio => "raw-tokio",
            System::RawStd => "raw-std",
        }
    }

    pub(crate) fn role(self) -> Role {
        match self {
            System::Switchboard | System::SwitchboardJson | System::SwitchboardLog | System::SwitchboardGob => {
                Role::Subject
            }
            System::Tonic | System::Tarpc | System::Go => Role::Peer,
            System::RawTokio | System::RawStd => Role::Floor,
        }
    }

    /// One line on what is measured.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            System::Switchboard => "Switchboard, binary codec (postcard): echo_server example, one shared Client",
            System::SwitchboardJson => "Switchboard, JSON codec: same server and client set-up",
            System::SwitchboardLog => {
                "Switchboard, binary codec, server with the Logging middleware and RUST_LOG=warn (info events off)"
            }
            System::SwitchboardGob => {
                "Switchboard serving Go: echo_server answering Go's own net/rpc client (gob), the Go client process of `go`"
            }
            System::Tonic => "tonic gRPC (HTTP/2, prost message): one shared Channel",
            System::Tarpc => "tarpc, bincode over TCP (length-delimited): one shared client",
            System::Go => "Go net/rpc, gob codec: Go server, Go client process with one shared rpc.Client",
            System::RawTokio => "floor: length-prefixed echo on tokio, one connection per caller",
            System::RawStd => "floor: length-prefixed echo on blocking std sockets, a thread per connection",
        }
    }

    pub(crate) fn parse(name: &str) -> anyhow::Result<System> {
        let name = name.trim();
        match System::ALL.into_iter().find(|s| s.name() == name) {
            Some(system) => Ok(system),
            None => {
                let known: Vec<_> = System::ALL.iter().map(|s| s.name()).collect();
                bail!("unknown system {name:?}; known: {}", known.join(", "))
            }
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// `switchboard-bench serve SYSTEM`: serve one of the harness's own servers
/// on `listen` until standard input closes.
pub(crate) fn serve(system: System, listen: SocketAddr) -> anyhow::Result<()> {
    if !matches!(system, System::Tonic | System::Tarpc | System::RawTokio | System::RawStd) {
        bail!("`serve` runs tonic, tarpc, raw-tokio and raw-std; {system} has its own server");
    }
    if system == System::RawStd {
        // No async runtime at all for this floor.
        let listener = std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        announce(listener.local_addr()?)?;
        exit_when_stdin_closes();
        return raw_std::serve(listener);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        announce(listener.local_addr()?)?;
        exit_when_stdin_closes();
        match system {
            System::Tonic => tonic::serve(listener).await,
            System::Tarpc => tarpc::serve(listener).await,
            System::RawTokio => raw_tokio::serve(listener).await,
            other => bail!("no server for {other}"),
        }
    })
}

/// The one line of stdout: the harness reads the bound address from it.
fn announce(addr: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    Ok(())
}

/// The harness holds our stdin open while it needs us; when it closes (the
/// harness is done, or died), exit.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for system in System::ALL {
            assert_eq!(System::parse(system.name()).ok(), Some(system));
        }
        assert!(System::parse("grpc").is_err());
    }
}
