//! The core's dependency direction, checked: every `crate::MODULE` path in
//! the code (comments and doc links aside) of a top-level module must name
//! a module of a lower layer, or of its own layer where the table allows.
//! docs/ARCHITECTURE.md ("Layers") explains the table; change both
//! together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    // The wire and neutral leaves: they use nothing above them.
    &["status", "frame", "codec", "io", "backoff", "batches"],
    // The call model.
    &["call", "error"],
    // What both sides and the registries build on.
    &["middleware", "discovery"],
    &["config"],
    // The two transports: neither knows the other.
    &["server", "client"],
    // A channel to a service by name, over clients and discovery.
    &["balance"],
    // Go's net/rpc, on top of server, client and codec.
    &["go"],
];

/// Pairs within one layer that may refer to each other (importer, imported).
const SAME_LAYER: &[(&str, &str)] = &[("frame", "codec"), ("call", "error"), ("error", "call")];

/// Modules outside the layering: the crate root and the fuzzing hooks.
const EXEMPT: &[&str] = &["lib", "fuzzing"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::NAME` paths in the code of `text` (not in comments).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = match code.find(" //") {
            Some(at) => &code[..at],
            None => code,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            // `switchboard_crate::x` or `$crate::x` are not ours.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn no_module_refers_to_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().expect("a component").as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        if EXEMPT.contains(&module.as_str()) {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            violations.push(format!("{}: module `{module}` is in no layer of tests/layers.rs", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for (line, used) in crate_paths(&text) {
            *seen.entry(format!("{module} -> {used}")).or_default() += 1;
            if used == module {
                continue;
            }
            let Some(theirs) = layer_of(&used) else {
                // A crate-root item (a re-export such as `crate::Status`).
                continue;
            };
            let allowed = theirs < own || theirs == own && SAME_LAYER.contains(&(module.as_str(), used.as_str()));
            if !allowed {
                violations.push(format!(
                    "{}:{line}: `{module}` (layer {own}) uses `crate::{used}` (layer {theirs})",
                    relative.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
    // The check must be looking at something: the known edges are there.
    for edge in ["server -> call", "balance -> client", "go -> server", "client -> backoff"] {
        assert!(seen.contains_key(edge), "no `{edge}` edge found: is the scan reading the sources? {seen:?}");
    }
}

#[test]
fn the_scan_finds_paths_in_code_and_skips_comments() {
    let text = "use crate::server::Server;\n/// see [`crate::go`]\nlet x = crate::balance::X; // crate::client\n$crate::frame::y";
    let got: Vec<String> = crate_paths(text).into_iter().map(|(_, name)| name).collect();
    assert_eq!(got, ["server", "balance"]);
}
