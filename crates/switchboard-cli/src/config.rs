//! `switchboard config`: read, write and watch a registry's config keys.
//!
//! ```text
//! switchboard config put routing/Arith '{"zone":"eu-1"}'
//! switchboard config put plugins/list - < plugins.txt      # the value from stdin
//! switchboard config get routing/Arith                     # prints the raw value
//! switchboard config list routing/                         # KEY = VALUE (rev N), one per line
//! switchboard config watch routing/                        # put KEY = VALUE (rev N) / deleted KEY
//! switchboard config delete routing/Arith
//! ```
//!
//! Every command goes through `switchboard_registry::from_url(url)?.config`,
//! the backend-neutral `switchboard::config::ConfigStore` trait, never
//! through the built-in registry's HTTP client, so the same commands work
//! against any backend `--registry` can name.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use switchboard::config::{validate_key, ConfigEvent, ConfigStore};

/// `switchboard config ...`: the registry and the operation.
#[derive(Args)]
pub(crate) struct ConfigArgs {
    /// The registry, e.g. http://127.0.0.1:7700.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7700")]
    registry: String,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a key's value, exactly as stored (exit 1 if there is no such key).
    Get {
        /// The key, e.g. routing/Arith.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key, e.g. routing/Arith.
        key: String,
        /// The value (UTF-8 text); `-` reads it from stdin.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// List the keys under a prefix (all keys by default): `KEY = VALUE (rev
    /// N)`, newlines in values shown as `\n`.
    List {
        /// Only keys starting with this, e.g. routing/.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Follow the keys under a prefix: their current values, then every
    /// change, one line each (`put KEY = VALUE (rev N)` or `deleted KEY`),
    /// until Ctrl-C.
    Watch {
        /// Only keys starting with this, e.g. routing/.
        #[arg(default_value = "")]
        prefix: String,
        /// Exit after this many batches of changes (the current values count
        /// as the first, even when there are none).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Run one `switchboard config` command.
pub(crate) async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let store = switchboard_registry::from_url(&args.registry)?.config;
    let mut out = std::io::stdout().lock();
    match args.command {
        ConfigCommand::Get { key } => {
            let Some(entry) = store.get(&key).await? else { bail!("no config key {key:?}") };
            out.write_all(entry.value.as_bytes())?;
            if !entry.value.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        ConfigCommand::Put { key, value } => {
            let value = if value == "-" { read_stdin()? } else { value };
            let revision = store.put(&key, &value).await?;
            writeln!(out, "put {key} (rev {revision})")?;
        }
        ConfigCommand::Delete { key } => {
            if store.delete(&key).await? {
                writeln!(out, "deleted {key}")?;
            } else {
                writeln!(out, "no config key {key:?}: nothing deleted")?;
            }
        }
        ConfigCommand::List { prefix } => {
            let snapshot = store.list(&prefix).await?;
            if snapshot.entries.is_empty() {
                eprintln!("no config keys under {prefix:?}");
            }
            for entry in snapshot.entries {
                writeln!(out, "{} = {} (rev {})", entry.key, one_line(&entry.value), entry.revision)?;
            }
        }
        ConfigCommand::Watch { prefix, count } => {
            drop(out); // `watch` writes batch by batch
            watch(store.as_ref(), &prefix, count).await?;
        }
    }
    Ok(())
}

async fn watch(store: &dyn ConfigStore, prefix: &str, count: Option<u64>) -> anyhow::Result<()> {
    // The store would only log a bad prefix and end the watch; say it here.
    validate_key(prefix, true)?;
    let mut watch = store.watch(prefix);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut batches = 0u64;
    while count.is_none_or(|n| batches < n) {
        let batch = tokio::select! {
            batch = watch.next() => batch,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(batch) = batch else { bail!("the watch on {prefix:?} ended") };
        let mut out = std::io::stdout().lock();
        for event in batch {
            match event {
                ConfigEvent::Put(e) => writeln!(out, "put {} = {} (rev {})", e.key, one_line(&e.value), e.revision)?,
                ConfigEvent::Deleted { key } => writeln!(out, "deleted {key}")?,
            }
        }
        out.flush()?;
        batches += 1;
    }
    Ok(())
}

fn read_stdin() -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).context("cannot read the value from stdin")?;
    String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("the value on stdin is not UTF-8 text: {}", e.utf8_error()))
}

/// A value on one line: newlines and carriage returns shown as `\n`, `\r`.
fn one_line(value: &str) -> String {
    value.replace('\r', "\\r").replace('\n', "\\n")
}
