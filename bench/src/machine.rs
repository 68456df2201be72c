//! What the run ran on, for the report's header.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) struct Machine {
    pub(crate) cpus: usize,
    /// MemTotal from /proc/meminfo, in bytes.
    pub(crate) memory: Option<u64>,
    pub(crate) cpu_model: Option<String>,
    pub(crate) kernel: Option<String>,
}

impl Machine {
    pub(crate) fn this() -> Machine {
        let read = |path| std::fs::read_to_string(path).ok();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: read("/proc/meminfo").and_then(|s| mem_total(&s)),
            cpu_model: read("/proc/cpuinfo").and_then(|s| cpu_model(&s)),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
        }
    }

    /// One line: `2 CPUs (Intel ...), 23.4 GiB memory, Linux 6.1.0`.
    pub(crate) fn summary(&self) -> String {
        let mut parts = vec![format!("{} CPUs ({})", self.cpus, self.cpu_model.as_deref().unwrap_or("unknown model"))];
        if let Some(bytes) = self.memory {
            parts.push(format!("{:.1} GiB memory", bytes as f64 / (1u64 << 30) as f64));
        }
        if let Some(kernel) = &self.kernel {
            parts.push(format!("Linux {kernel}"));
        }
        parts.join(", ")
    }
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// The git commit the measured code is at, and the files of the library,
/// the examples (and the CLI library `echo_server` is built from) and the
/// harness that differ from it (`None` outside a git checkout).
pub(crate) fn source_revision() -> Option<String> {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let paths = [
        "crates/switchboard/src",
        "crates/switchboard-cli/src",
        "crates/switchboard-examples",
        "bench",
        "Cargo.toml",
        "Cargo.lock",
    ];
    let status = git(&[&["status", "--porcelain", "--"][..], &paths[..]].concat()).unwrap_or_default();
    let changed: Vec<&str> = status.lines().filter_map(|l| l.get(3..)).collect();
    Some(match changed.len() {
        0 => format!("commit {head}"),
        n if n <= 8 => format!("commit {head} plus uncommitted changes to {}", changed.join(", ")),
        n => format!("commit {head} plus uncommitted changes to {n} files ({}, ...)", changed[..8].join(", ")),
    })
}

/// The current time in UTC, `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
    }

    #[test]
    fn proc_files() {
        assert_eq!(mem_total("MemTotal:       24575188 kB\nMemFree: 1 kB\n"), Some(24_575_188 * 1024));
        assert_eq!(cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n").as_deref(), Some("AMD EPYC 7B13"));
    }
}
