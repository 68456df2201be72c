//! The performance targets Switchboard is held to, judged on one run.
//!
//! Most targets are met when every cell they apply to was measured and meets
//! them. The logging target asks about a difference (5%) smaller than the
//! run-to-run noise of one 5 s cell on a 2-core machine, so it is judged on
//! the geometric mean of its ratio over all cells; the cells are still listed.
//! A target is "not measured" when no applicable cell has the numbers (a
//! `--quick` or filtered run).

use crate::compare::{ratio, Comparison};
use crate::report::mib;
use crate::workload::Cell;

const SMALL: usize = 128;
const MEDIUM: usize = 16 * 1024;

/// How one target fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Met,
    NotMet,
    NotMeasured,
}

impl Verdict {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "NOT met",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One cell's check of a target: what was measured, and whether it meets
/// the target (`None`: a side of the comparison is missing).
pub(crate) struct Check {
    pub(crate) cell: Cell,
    pub(crate) measured: String,
    pub(crate) met: Option<bool>,
}

pub(crate) struct Target {
    pub(crate) number: usize,
    pub(crate) title: &'static str,
    pub(crate) checks: Vec<Check>,
    /// For targets judged over all cells: the overall figure and whether it
    /// meets the target. The cells' own marks are then for information.
    pub(crate) overall: Option<(String, bool)>,
}

impl Target {
    /// Whether each cell's mark decides the verdict.
    pub(crate) fn judged_per_cell(&self) -> bool {
        self.overall.is_none()
    }

    pub(crate) fn verdict(&self) -> Verdict {
        if let Some((_, met)) = &self.overall {
            return if *met { Verdict::Met } else { Verdict::NotMet };
        }
        if self.checks.iter().any(|c| c.met == Some(false)) {
            Verdict::NotMet
        } else if !self.checks.is_empty() && self.checks.iter().all(|c| c.met == Some(true)) {
            Verdict::Met
        } else {
            Verdict::NotMeasured
        }
    }
}

/// A target: its text, which cells it applies to, how a cell is judged
/// (`None` when a side of the comparison is missing), and how the verdict
/// is reached.
struct Spec {
    title: &'static str,
    applies: fn(Cell) -> bool,
    judge: fn(&Comparison<'_>) -> Option<(String, bool)>,
    rule: Rule,
}

enum Rule {
    /// Every cell must meet the target.
    EveryCell,
    /// The geometric mean of `ratio` over the measured cells must be above
    /// `min`.
    MeanAbove { ratio: fn(&Comparison<'_>) -> Option<f64>, min: f64 },
}

fn concurrent(c: Cell) -> bool {
    [SMALL, MEDIUM].contains(&c.payload) && [64, 256].contains(&c.callers)
}

fn single(c: Cell) -> bool {
    [SMALL, MEDIUM].contains(&c.payload) && c.callers == 1
}

const SPECS: [Spec; 5] = [
    Spec {
        title: "64 and 256 callers (128 B, 16 KiB): calls/s >= 1.2x the best of tonic, tarpc, Go, and p99 no worse than the best peer's p99",
        applies: concurrent,
        judge: |c| {
            let (calls, p99) = (c.calls_vs_peer()?, c.p99_vs_peer()?);
            let text = format!(
                "calls/s {} of {} (need >= 1.20x); p99 {} of {}'s (need <= 1.00x)",
                ratio(Some(calls)),
                c.fastest_peer?.system,
                ratio(Some(p99)),
                c.lowest_p99_peer?.system
            );
            Some((text, calls >= 1.2 && p99 <= 1.0))
        },
        rule: Rule::EveryCell,
    },
    Spec {
        title: "1 caller (128 B, 16 KiB): calls/s >= the best peer's, and p50 within 1.1x of the blocking std floor",
        applies: single,
        judge: |c| {
            let (calls, p50) = (c.calls_vs_peer()?, c.p50_vs_raw_std()?);
            let text = format!(
                "calls/s {} of {} (need >= 1.00x); p50 {} of raw-std's (need <= 1.10x)",
                ratio(Some(calls)),
                c.fastest_peer?.system,
                ratio(Some(p50))
            );
            Some((text, calls >= 1.0 && p50 <= 1.1))
        },
        rule: Rule::EveryCell,
    },
    Spec {
        title: "16 KiB at 64 callers: calls/s >= 0.8x the better raw floor's",
        applies: |c| c.payload == MEDIUM && c.callers == 64,
        judge: |c| {
            let calls = c.calls_vs_floor()?;
            let text = format!("calls/s {} of {} (need >= 0.80x)", ratio(Some(calls)), c.better_floor?.system);
            Some((text, calls >= 0.8))
        },
        rule: Rule::EveryCell,
    },
    Spec {
        title: "server peak RSS no more than tonic's",
        applies: |_| true,
        judge: |c| {
            let r = c.rss_vs_tonic()?;
            let text = format!(
                "{} vs tonic's {}: {} (need <= 1.00x)",
                mib(c.subject?.server_peak_rss),
                mib(c.tonic?.server_peak_rss),
                ratio(Some(r))
            );
            Some((text, r <= 1.0))
        },
        rule: Rule::EveryCell,
    },
    Spec {
        title: "logging middleware installed, info level off: calls/s cost < 5% (geometric mean over the cells)",
        applies: |_| true,
        judge: |c| {
            let r = c.log_ratio()?;
            Some((format!("switchboard+log calls/s {}", log_cost(r)), r > 0.95))
        },
        rule: Rule::MeanAbove { ratio: |c| c.log_ratio(), min: 0.95 },
    },
];

fn log_cost(ratio: f64) -> String {
    format!("{ratio:.3}x of switchboard's: {:.1}% cost (need < 5%)", (1.0 - ratio) * 100.0)
}

/// Judge every target on `cells` (each cell with its comparison).
pub(crate) fn judge(cells: &[(Cell, Comparison<'_>)]) -> Vec<Target> {
    SPECS
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let applicable: Vec<_> = cells.iter().filter(|(cell, _)| (spec.applies)(*cell)).collect();
            let checks = applicable
                .iter()
                .map(|(cell, comparison)| match (spec.judge)(comparison) {
                    Some((measured, met)) => Check { cell: *cell, measured, met: Some(met) },
                    None => Check { cell: *cell, measured: "not measured".to_owned(), met: None },
                })
                .collect();
            let overall = match spec.rule {
                Rule::EveryCell => None,
                Rule::MeanAbove { ratio, min } => {
                    let ratios: Vec<f64> = applicable.iter().filter_map(|(_, c)| ratio(c)).collect();
                    geometric_mean(&ratios).map(|mean| {
                        let cells =
                            if ratios.len() == 1 { "1 cell".to_owned() } else { format!("{} cells", ratios.len()) };
                        (format!("geometric mean over {cells}: {}", log_cost(mean)), mean > min)
                    })
                }
            };
            Target { number: i + 1, title: spec.title, checks, overall }
        })
        .collect()
}

fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| *v <= 0.0) {
        return None;
    }
    Some((values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::CellMeasurements;
    use crate::stats::Measurement;
    use crate::systems::System;

    fn m(calls_per_sec: f64, p50_us: f64, p99_us: f64, rss: u64) -> Measurement {
        Measurement { calls: 1, calls_per_sec, p50_us, p99_us, max_us: p99_us, server_peak_rss: rss }
    }

    #[test]
    fn verdicts() {
        let cell = Cell::parse("128B/64").expect("cell");
        let (sb, log, tonic, std) =
            (m(130.0, 10.0, 40.0, 10), m(120.0, 10.0, 40.0, 10), m(100.0, 9.0, 50.0, 20), m(500.0, 5.0, 9.0, 1));
        let measured = CellMeasurements(vec![
            (System::Switchboard, &sb),
            (System::SwitchboardLog, &log),
            (System::Tonic, &tonic),
            (System::RawStd, &std),
        ]);
        let targets = judge(&[(cell, Comparison::new(&measured))]);
        let verdicts: Vec<_> = targets.iter().map(Target::verdict).collect();
        // 1: 1.3x and a better p99: met. 2, 3: no 1-caller or 16 KiB cell.
        // 4: half of tonic's RSS. 5: 120/130 = 0.92: not met.
        assert_eq!(verdicts, [Verdict::Met, Verdict::NotMeasured, Verdict::NotMeasured, Verdict::Met, Verdict::NotMet]);
        assert!(targets[0].checks[0].measured.contains("1.30x of tonic"), "{}", targets[0].checks[0].measured);
    }

    #[test]
    fn logging_target_is_judged_on_the_mean() {
        let (a, b) = (Cell::parse("128B/64").expect("cell"), Cell::parse("16KiB/64").expect("cell"));
        let (sb, slower, faster) = (m(100.0, 1.0, 1.0, 1), m(93.0, 1.0, 1.0, 1), m(105.0, 1.0, 1.0, 1));
        let one = CellMeasurements(vec![(System::Switchboard, &sb), (System::SwitchboardLog, &slower)]);
        let two = CellMeasurements(vec![(System::Switchboard, &sb), (System::SwitchboardLog, &faster)]);
        let targets = judge(&[(a, Comparison::new(&one)), (b, Comparison::new(&two))]);
        let logging = &targets[4];
        // One cell alone is 7% slower, but the mean (0.988x) is within 5%.
        assert_eq!(logging.checks[0].met, Some(false));
        assert_eq!(logging.verdict(), Verdict::Met);
        assert!(!logging.judged_per_cell());
        assert!((geometric_mean(&[0.93, 1.05]).expect("mean") - 0.98818).abs() < 1e-4);
        assert_eq!(geometric_mean(&[]), None);
    }
}
