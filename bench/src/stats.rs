//! Latency histograms and per-cell results.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Slowest latency recorded exactly; slower calls count as this.
const MAX_NANOS: u64 = 120_000_000_000;

/// Call latencies in nanoseconds, 3 significant digits (HDR histogram).
#[derive(Clone)]
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Latencies {
        // Constant, valid bounds: this cannot fail.
        Latencies(Histogram::new_with_bounds(1, MAX_NANOS, 3).expect("valid histogram bounds"))
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        self.record_n(latency.as_nanos().min(u128::from(MAX_NANOS)) as u64, 1);
    }

    /// Record `count` calls of `nanos` each (clamped to the histogram's range).
    pub(crate) fn record_n(&mut self, nanos: u64, count: u64) {
        self.0.saturating_record_n(nanos.clamp(1, MAX_NANOS), count);
    }

    pub(crate) fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides: `add` cannot fail.
        self.0.add(&other.0).expect("histograms with equal bounds");
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 = median), in microseconds.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub(crate) fn max_us(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}

/// What a closed loop produced: the successful calls that completed in the
/// measured window, with their latencies.
pub(crate) struct Sample {
    pub(crate) latencies: Latencies,
}

/// One system's result in one cell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measurement {
    pub(crate) calls: u64,
    pub(crate) calls_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// The server process's peak resident set size (VmHWM), in bytes.
    pub(crate) server_peak_rss: u64,
}

impl Measurement {
    pub(crate) fn new(sample: &Sample, measured: Duration, server_peak_rss: u64) -> Measurement {
        let l = &sample.latencies;
        Measurement {
            calls: l.count(),
            calls_per_sec: l.count() as f64 / measured.as_secs_f64(),
            p50_us: l.quantile_us(0.50),
            p99_us: l.quantile_us(0.99),
            max_us: l.max_us(),
            server_peak_rss,
        }
    }

    /// Payload echoed per second, in MiB/s (each direction).
    pub(crate) fn mib_per_sec(&self, payload: usize) -> f64 {
        self.calls_per_sec * payload as f64 / (1024.0 * 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_merge() {
        let mut a = Latencies::new();
        for us in 1..=100u64 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Latencies::new();
        b.record_n(1_000_000, 100); // 100 calls of 1 ms
        a.add(&b);
        assert_eq!(a.count(), 200);
        assert!((a.quantile_us(0.25) - 50.0).abs() < 0.1, "{}", a.quantile_us(0.25));
        assert!((a.quantile_us(0.99) - 1000.0).abs() < 1.0, "{}", a.quantile_us(0.99));
        assert!((a.max_us() - 1000.0).abs() < 1.0);

        let m = Measurement::new(&Sample { latencies: a }, Duration::from_secs(2), 42);
        assert_eq!(m.calls, 200);
        assert!((m.calls_per_sec - 100.0).abs() < 1e-9);
        assert!((m.mib_per_sec(1024 * 1024) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record(Duration::from_secs(1000));
        l.record_n(0, 1);
        assert_eq!(l.count(), 2);
    }
}
