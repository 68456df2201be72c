//! `switchboard`: the command-line tool.
//!
//! ```text
//! switchboard call --addr 127.0.0.1:9000 Arith.Multiply '{"A":7,"B":8}'
//! switchboard call --registry http://127.0.0.1:7700 Arith.Multiply '{"A":7,"B":8}'
//! switchboard bench --addr 127.0.0.1:9001 --concurrency 64 --duration 5s Echo.Echo --payload-size 128
//! switchboard registry --listen 127.0.0.1:7700
//! switchboard list --registry http://127.0.0.1:7700
//! switchboard config put routing/Arith '{"zone":"eu-1"}'   # get, put, delete, list, watch
//! switchboard demo                      # the main job: registry, three instances, a SIGKILL, 0 failed calls
//! ```

mod bench;
mod config;
mod demo;
mod registry;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use switchboard::balance::Balanced;
use switchboard::go::{GoClient, GoProtocol};
use switchboard::Channel;
use switchboard::{CallOptions, Client, Codec};
use switchboard_cli::parse_duration;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Switchboard RPC: call services, and more")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call a method with a JSON argument and print the JSON reply.
    Call {
        /// Server address, HOST:PORT.
        #[arg(long, required_unless_present = "registry", conflicts_with = "registry")]
        addr: Option<String>,
        /// Find the service through this registry (http://HOST:PORT for the
        /// built-in one, etcd://HOST:PORT[,HOST:PORT...] for etcd) instead of --addr.
        #[arg(long)]
        registry: Option<String>,
        /// Give up after this long (e.g. 500ms, 5s, 1m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Metadata to send, KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
        /// Speak Go's net/rpc to a Go server at --addr: go-gob (rpc.ServeConn),
        /// go-jsonrpc (jsonrpc.ServeConn) or go-http (rpc.HandleHTTP).
        #[arg(long, requires = "addr", value_parser = parse_go_protocol)]
        protocol: Option<GoProtocol>,
        /// Service.Method, e.g. Arith.Multiply.
        method: String,
        /// The argument as JSON (default: null).
        #[arg(default_value = "null")]
        json: String,
    },
    /// Load-test a method: closed-loop callers, calls/s and latency percentiles.
    Bench {
        /// Server address, HOST:PORT.
        #[arg(long, required_unless_present = "registry", conflicts_with = "registry")]
        addr: Option<String>,
        /// Load the method's service through this registry's discovery
        /// (http://HOST:PORT or etcd://HOST:PORT[,...]) instead of one --addr:
        /// calls are balanced over every instance, and the summary shows the
        /// spread.
        #[arg(long)]
        registry: Option<String>,
        /// Metadata sent with every call, KEY=VALUE (repeatable).
        #[arg(long = "meta", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
        /// Callers running at once (all share one multiplexed connection).
        #[arg(long, short = 'c', default_value_t = 64)]
        concurrency: usize,
        /// How long to measure (e.g. 5s, 1m). Default 10s unless --requests is given.
        #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
        duration: Option<Duration>,
        /// Stop after this many calls instead of after a duration.
        #[arg(long, short = 'n')]
        requests: Option<u64>,
        /// Calls to make before measuring, to warm connections and caches.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        warmup: Duration,
        /// The argument as JSON (sent with the json codec unless --codec says msgpack).
        #[arg(long, conflicts_with = "payload_size")]
        data: Option<String>,
        /// Send an {id, name, payload} message (the Echo example's) with this many payload bytes.
        #[arg(long)]
        payload_size: Option<usize>,
        /// Codec: json, binary, msgpack (default: binary for --payload-size, json for --data).
        #[arg(long, value_parser = parse_codec)]
        codec: Option<Codec>,
        /// Per-call timeout.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Service.Method, e.g. Echo.Echo.
        method: String,
    },
    /// Run the built-in service registry (HTTP/JSON API; see docs/REGISTRY.md).
    Registry {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: String,
        /// How often instances are told to heartbeat.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        heartbeat: Duration,
        /// How long an instance lives without a heartbeat (default TTL).
        #[arg(long, default_value = "6s", value_parser = parse_duration)]
        ttl: Duration,
        /// Evict every instance whose TTL passed, even when most stop
        /// heartbeating at once (self-preservation assumes a partition then,
        /// and keeps them listed as expired).
        #[arg(long)]
        no_self_preservation: bool,
    },
    /// List the services a registry knows, with their instances.
    List {
        /// The registry: http://HOST:PORT (built-in) or etcd://HOST:PORT[,HOST:PORT...].
        #[arg(long, default_value = "http://127.0.0.1:7700")]
        registry: String,
    },
    /// Read, write and watch config keys in a registry (get, put, delete,
    /// list, watch).
    Config(config::ConfigArgs),
    /// The main job, nothing to install: a registry, three Arith instances
    /// (child processes), a client calling them through discovery; one
    /// instance gets SIGKILL and comes back; exits 0 only if no call failed.
    Demo {
        /// How long to run; the kill comes at 30 %, the restart at 60 %.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Calls per second (open loop).
        #[arg(long, default_value_t = 2000)]
        rate: u64,
    },
    /// One instance of `switchboard demo` (started by it): serves Arith,
    /// registered, until stdin closes.
    #[command(hide = true)]
    DemoInstance {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[command(flatten)]
        announce: switchboard_cli::Announce,
    },
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
        format!("unknown codec {s:?} ({})", names.join(", "))
    })
}

/// Exit status for a command that either worked or failed with an error.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Call { addr, registry, timeout, metadata, protocol, method, json } => {
            let target = match (addr, registry, protocol) {
                (_, Some(url), _) => Target::Registry(url),
                (Some(addr), None, Some(protocol)) => Target::Go(addr, protocol),
                (Some(addr), None, None) => Target::Addr(addr),
                (None, None, _) => unreachable!("clap requires --addr or --registry"),
            };
            call(target, timeout, metadata, method, json).await
        }
        Command::Registry { listen, heartbeat, ttl, no_self_preservation } => {
            // A long-running command: what it does, at info.
            switchboard_cli::init_logging("info");
            report(registry::serve(&listen, heartbeat, ttl, !no_self_preservation).await)
        }
        Command::List { registry } => report(registry::list(&registry).await),
        Command::Config(args) => {
            // Its output is the keys; warnings (a watch that lost its registry says so) on stderr.
            switchboard_cli::init_logging("warn");
            report(config::run(args).await)
        }
        Command::Demo { duration, rate } => {
            // The demo's screen is its output: errors only.
            switchboard_cli::init_logging("error");
            match demo::run(demo::Options { duration, rate }).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("error: calls failed (see the summary)");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::DemoInstance { listen, announce } => {
            switchboard_cli::init_logging("error");
            report(demo::instance(listen, announce).await)
        }
        Command::Bench {
            addr,
            registry,
            metadata,
            concurrency,
            duration,
            requests,
            warmup,
            data,
            payload_size,
            codec,
            timeout,
            method,
        } => {
            let body = match (data, payload_size) {
                (Some(json), _) => match serde_json::from_str(&json) {
                    Ok(v) => bench::Body::Json(v),
                    Err(e) => {
                        eprintln!("error: --data is not valid JSON: {e}");
                        return ExitCode::from(2);
                    }
                },
                (None, Some(n)) => bench::Body::Payload(n),
                (None, None) => bench::Body::Json(Value::Null),
            };
            let stop = match (requests, duration) {
                (Some(n), _) => bench::Stop::Requests(n),
                (None, d) => bench::Stop::After(d.unwrap_or(Duration::from_secs(10))),
            };
            let target = match (addr, registry) {
                (_, Some(url)) => bench::Target::Registry(url),
                (Some(addr), None) => bench::Target::Addr(addr),
                (None, None) => unreachable!("clap requires --addr or --registry"),
            };
            let plan = bench::Plan { target, metadata, method, body, codec, concurrency, stop, warmup, timeout };
            match bench::run(plan).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Where `switchboard call` sends its call.
enum Target {
    Addr(String),
    Registry(String),
    Go(String, GoProtocol),
}

fn parse_go_protocol(s: &str) -> Result<GoProtocol, String> {
    s.parse()
}

async fn call(
    target: Target,
    timeout: Duration,
    metadata: Vec<(String, String)>,
    method: String,
    json: String,
) -> ExitCode {
    let arg: Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: the argument is not valid JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let mut opts = CallOptions::new();
    opts.metadata = metadata;
    let result = match target {
        Target::Addr(addr) => {
            let client = Client::builder(addr).codec(Codec::Json).timeout(Some(timeout)).build();
            client.call_with::<Value, Value>(&method, &arg, &opts).await
        }
        Target::Go(addr, protocol) => {
            // JSON in and out: its objects go to Go as structs.
            let client = GoClient::lazy(addr, protocol).with_timeout(Some(timeout));
            client.call_with::<Value, Value>(&method, &arg, &opts.clone().codec(Codec::Json)).await
        }
        Target::Registry(url) => {
            let backend = match switchboard_registry::from_url(&url) {
                Ok(backend) => backend,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some((service, _)) = method.rsplit_once('.') else {
                eprintln!("error: {method:?} is not Service.Method");
                return ExitCode::from(2);
            };
            let channel =
                Balanced::builder(service, backend.discover).codec(Codec::Json).timeout(Some(timeout)).build();
            channel.call_with::<Value, Value>(&method, &arg, &opts).await
        }
    };
    match result {
        Ok(reply) => {
            let text = if reply.is_object() || reply.is_array() {
                serde_json::to_string_pretty(&reply)
            } else {
                serde_json::to_string(&reply)
            };
            println!("{}", text.unwrap_or_else(|_| reply.to_string()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            // An application status prints as "Code: message"; other errors
            // get their code appended so scripts can match on it.
            match e.status() {
                Some(_) => eprintln!("error: {e}"),
                None => eprintln!("error: {e} ({})", e.code()),
            }
            ExitCode::from(1)
        }
    }
}
