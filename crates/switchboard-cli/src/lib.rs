//! # switchboard-cli
//!
//! The parts the `switchboard` command is built from, as a library, so that
//! other programs (the examples in `crates/switchboard-examples`, the
//! benchmark harness, your own servers) take the same flags, print the same
//! `listening on ADDR` line and shut down the same way.
//!
//! | module | what it holds |
//! |--------|---------------|
//! | [`flags`] | clap flag groups: [`Announce`] (`--registry`, `--advertise`, instance metadata), [`ServerFlags`] (connection limits), [`Balancing`] (`--balancer`, `--fail-mode`, `--zone`); [`Target`], a channel to `--addr` or through `--registry`; the value parsers [`parse_duration`] and [`parse_size`] |
//! | [`serve`] | [`serve_until`] / [`serve_until_signal`]: bind, print the address, serve, shut down gracefully on a signal |
//! | [`arith`] | the `Arith` service (`Multiply`, `Divide`) that `switchboard demo` and the arith examples serve and call |
//! | [`load`] | the open-loop load generator ([`load::OpenLoop`]) and its outcome counters ([`load::Tally`]) |
//!
//! The subcommands themselves (`call`, `bench`, `registry`, `list`,
//! `config`, `demo`) are in the binary, `src/main.rs` and its modules.
//!
//! A server with the command's flags, in a dozen lines:
//!
//! ```no_run
//! use clap::Parser;
//! use switchboard::Server;
//! use switchboard_cli::arith::{ArithServer, Calculator};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[arg(long, default_value = "127.0.0.1:9000")]
//!     listen: String,
//!     #[command(flatten)]
//!     announce: switchboard_cli::Announce,
//!     #[command(flatten)]
//!     limits: switchboard_cli::ServerFlags,
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let cli = Cli::parse();
//!     switchboard_cli::init_logging("info");
//!     let builder = cli.limits.apply(Server::builder().service(ArithServer::new(Calculator)));
//!     let server = cli.announce.apply(builder)?.build();
//!     switchboard_cli::serve_until_signal(server, &cli.listen).await
//! }
//! ```

#![warn(missing_docs)]

pub mod arith;
pub mod flags;
pub mod load;
pub mod serve;

pub use flags::{parse_duration, parse_size, Announce, Balancing, ServerFlags, Target};
pub use serve::{serve_until, serve_until_signal};

/// Log to stderr at `default` (`"info"`, `"warn"`, `"error"`, ...) unless
/// `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
