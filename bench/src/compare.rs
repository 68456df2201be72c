//! Switchboard's ratios to its peers and floors in one cell: what the
//! report prints under each table and what the targets are judged on.

use crate::stats::Measurement;
use crate::systems::{Role, System};

/// Everything measured in one cell, keyed by system.
pub(crate) struct CellMeasurements<'a>(pub(crate) Vec<(System, &'a Measurement)>);

/// A measurement of a named system.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Of<'a> {
    pub(crate) system: System,
    pub(crate) m: &'a Measurement,
}

/// Switchboard (binary codec) against the rest of one cell. Every field is
/// `None` when one side of it was not measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Comparison<'a> {
    pub(crate) subject: Option<&'a Measurement>,
    /// The framework peer with the most calls/s.
    pub(crate) fastest_peer: Option<Of<'a>>,
    /// The framework peer with the lowest p99.
    pub(crate) lowest_p99_peer: Option<Of<'a>>,
    /// The raw floor with the most calls/s.
    pub(crate) better_floor: Option<Of<'a>>,
    pub(crate) raw_std: Option<&'a Measurement>,
    pub(crate) tonic: Option<&'a Measurement>,
    pub(crate) with_log: Option<&'a Measurement>,
}

impl<'a> Comparison<'a> {
    pub(crate) fn new(cell: &CellMeasurements<'a>) -> Comparison<'a> {
        let get = |system| cell.0.iter().find(|(s, _)| *s == system).map(|(_, m)| *m);
        let of_role = |role| cell.0.iter().filter(move |(s, _)| s.role() == role).map(|&(system, m)| Of { system, m });
        let by = |a: &Of<'_>, b: &Of<'_>, key: fn(&Measurement) -> f64| key(a.m).total_cmp(&key(b.m));
        Comparison {
            subject: get(System::Switchboard),
            fastest_peer: of_role(Role::Peer).max_by(|a, b| by(a, b, |m| m.calls_per_sec)),
            lowest_p99_peer: of_role(Role::Peer).min_by(|a, b| by(a, b, |m| m.p99_us)),
            better_floor: of_role(Role::Floor).max_by(|a, b| by(a, b, |m| m.calls_per_sec)),
            raw_std: get(System::RawStd),
            tonic: get(System::Tonic),
            with_log: get(System::SwitchboardLog),
        }
    }

    /// Switchboard's calls/s ÷ the fastest peer's.
    pub(crate) fn calls_vs_peer(&self) -> Option<f64> {
        Some(self.subject?.calls_per_sec / self.fastest_peer?.m.calls_per_sec)
    }

    /// Switchboard's p99 ÷ the lowest peer p99 (below 1 is better).
    pub(crate) fn p99_vs_peer(&self) -> Option<f64> {
        Some(self.subject?.p99_us / self.lowest_p99_peer?.m.p99_us)
    }

    /// Switchboard's calls/s ÷ the better raw floor's.
    pub(crate) fn calls_vs_floor(&self) -> Option<f64> {
        Some(self.subject?.calls_per_sec / self.better_floor?.m.calls_per_sec)
    }

    /// Switchboard's p50 ÷ the blocking std floor's (below 1 is better).
    pub(crate) fn p50_vs_raw_std(&self) -> Option<f64> {
        Some(self.subject?.p50_us / self.raw_std?.p50_us)
    }

    /// Switchboard's server peak RSS ÷ tonic's (below 1 is better).
    pub(crate) fn rss_vs_tonic(&self) -> Option<f64> {
        Some(self.subject?.server_peak_rss as f64 / self.tonic?.server_peak_rss as f64)
    }

    /// switchboard+log's calls/s ÷ switchboard's.
    pub(crate) fn log_ratio(&self) -> Option<f64> {
        Some(self.with_log?.calls_per_sec / self.subject?.calls_per_sec)
    }
}

/// `1.23x`, or `n/a`.
pub(crate) fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(calls_per_sec: f64, p50_us: f64, p99_us: f64, rss: u64) -> Measurement {
        Measurement { calls: 1, calls_per_sec, p50_us, p99_us, max_us: p99_us, server_peak_rss: rss }
    }

    #[test]
    fn picks_the_right_references() {
        let (sb, log, tonic, tarpc, go) = (
            m(120.0, 10.0, 50.0, 10),
            m(114.0, 11.0, 55.0, 10),
            m(80.0, 20.0, 40.0, 20),
            m(100.0, 15.0, 60.0, 5),
            m(90.0, 12.0, 45.0, 8),
        );
        let (rt, rs) = (m(200.0, 5.0, 30.0, 2), m(150.0, 8.0, 20.0, 2));
        let cell = CellMeasurements(vec![
            (System::Switchboard, &sb),
            (System::SwitchboardLog, &log),
            (System::Tonic, &tonic),
            (System::Tarpc, &tarpc),
            (System::Go, &go),
            (System::RawTokio, &rt),
            (System::RawStd, &rs),
        ]);
        let c = Comparison::new(&cell);
        assert_eq!(c.fastest_peer.map(|p| p.system), Some(System::Tarpc));
        assert_eq!(c.lowest_p99_peer.map(|p| p.system), Some(System::Tonic));
        assert_eq!(c.better_floor.map(|p| p.system), Some(System::RawTokio));
        assert_eq!(ratio(c.calls_vs_peer()), "1.20x");
        assert_eq!(ratio(c.p99_vs_peer()), "1.25x");
        assert_eq!(ratio(c.calls_vs_floor()), "0.60x");
        assert_eq!(ratio(c.p50_vs_raw_std()), "1.25x");
        assert_eq!(ratio(c.rss_vs_tonic()), "0.50x");
        assert_eq!(ratio(c.log_ratio()), "0.95x");
    }

    #[test]
    fn missing_sides_are_none() {
        let sb = m(1.0, 1.0, 1.0, 1);
        let c = Comparison::new(&CellMeasurements(vec![(System::Switchboard, &sb)]));
        assert!(c.calls_vs_peer().is_none() && c.log_ratio().is_none() && c.rss_vs_tonic().is_none());
        assert_eq!(ratio(None), "n/a");
    }
}
