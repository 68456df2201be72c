//! The workload every system runs: echo `{id, name: "benchmark", payload}`
//! in a closed loop, over a grid of cells (payload size × concurrent callers).

use std::fmt;

use anyhow::{bail, Context as _};

/// The `name` field of every message.
pub(crate) const NAME: &str = "benchmark";

/// Bytes the raw TCP floors echo on top of the payload: about what the
/// frameworks add for `id` and `name`. The first 8 carry the id.
pub(crate) const RAW_EXTRA: usize = 20;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// The largest payload a cell may ask for: what the raw floors' frames
/// carry (`systems::raw_tokio::MAX_FRAME`, less [`RAW_EXTRA`]).
const MAX_PAYLOAD: usize = crate::systems::raw_tokio::MAX_FRAME - RAW_EXTRA;

/// One cell of the grid: how big each payload is and how many callers call
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) payload: usize,
    pub(crate) callers: usize,
}

impl Cell {
    const fn new(payload: usize, callers: usize) -> Cell {
        Cell { payload, callers }
    }

    /// The full grid: latency and concurrency cells at 128 B and 16 KiB,
    /// throughput cells at 1 MiB.
    pub(crate) fn full_grid() -> Vec<Cell> {
        let mut cells = Vec::new();
        for payload in [128, 16 * KIB] {
            for callers in [1, 64, 256] {
                cells.push(Cell::new(payload, callers));
            }
        }
        cells.extend([Cell::new(MIB, 1), Cell::new(MIB, 16)]);
        cells
    }

    /// What `--quick` runs.
    pub(crate) fn quick_grid() -> Vec<Cell> {
        vec![Cell::new(128, 64)]
    }

    /// Throughput cells also report MiB/s.
    pub(crate) fn is_throughput(&self) -> bool {
        self.payload >= MIB
    }

    /// The `--cells` spelling, e.g. `16KiB/64`.
    pub(crate) fn spec(&self) -> String {
        format!("{}/{}", size_label(self.payload).replace(' ', ""), self.callers)
    }

    /// Parse `SIZE/CALLERS`, e.g. `128B/64`, `16KiB/1`, `1MiB/16`.
    pub(crate) fn parse(spec: &str) -> anyhow::Result<Cell> {
        let (size, callers) =
            spec.split_once('/').with_context(|| format!("cell {spec:?}: expected SIZE/CALLERS, e.g. 16KiB/64"))?;
        let callers: usize = callers.trim().parse().with_context(|| format!("cell {spec:?}: bad caller count"))?;
        if callers == 0 {
            bail!("cell {spec:?}: needs at least one caller");
        }
        let payload =
            switchboard_cli::parse_size(size).map_err(anyhow::Error::msg).with_context(|| format!("cell {spec:?}"))?;
        if payload > MAX_PAYLOAD {
            bail!(
                "cell {spec:?}: payloads over {} cannot be measured (the raw floors' frame limit)",
                size_label(MAX_PAYLOAD)
            );
        }
        Ok(Cell::new(payload, callers))
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.callers == 1 { "" } else { "s" };
        write!(f, "{} payload, {} caller{plural}", size_label(self.payload), self.callers)
    }
}

/// `128 B`, `16 KiB`, `1 MiB`, or plain bytes when not a whole unit.
pub(crate) fn size_label(bytes: usize) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// A payload of `len` bytes with a fixed, non-constant pattern.
pub(crate) fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31).wrapping_add(7)) as u8).collect()
}

/// The first id caller `caller` sends; each call adds one. Ids of different
/// callers never collide.
pub(crate) fn first_id(caller: usize) -> u64 {
    (caller as u64) << 40
}

/// Check an answer: the id we sent, and a payload of the length we sent.
pub(crate) fn check_echo(sent_id: u64, expected_len: usize, got_id: u64, got_len: usize) -> anyhow::Result<()> {
    if got_id != sent_id || got_len != expected_len {
        bail!("bad echo: got id {got_id} with {got_len} payload bytes, sent id {sent_id} with {expected_len}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_parse_and_print() {
        for cell in Cell::full_grid() {
            assert_eq!(Cell::parse(&cell.spec()).ok(), Some(cell), "{}", cell.spec());
        }
        assert_eq!(Cell::parse("16KiB/64").ok(), Some(Cell::new(16 * KIB, 64)));
        assert_eq!(Cell::parse("1000/3").ok(), Some(Cell::new(1000, 3)));
        assert!(Cell::parse("16KiB").is_err());
        assert_eq!(Cell::parse("16K/2").ok(), Some(Cell::new(16 * KIB, 2)));
        assert!(Cell::parse("16GiB/2").is_err_and(|e| e.to_string().contains("cannot be measured")));
        assert!(Cell::parse("16KB/2").is_err());
        assert!(Cell::parse("128B/0").is_err());
        assert_eq!(Cell::new(MIB, 16).to_string(), "1 MiB payload, 16 callers");
    }

    #[test]
    fn echo_check_catches_wrong_answers() {
        assert!(check_echo(5, 128, 5, 128).is_ok());
        assert!(check_echo(5, 128, 6, 128).is_err());
        assert!(check_echo(5, 128, 5, 127).is_err());
    }
}
