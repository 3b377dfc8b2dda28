//! Latency histograms and summaries over rounds.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in microseconds, 3 significant digits, up to 10 minutes.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

const MAX_MICROS: u64 = 600_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    /// Records `count` records that took `latency` each.
    pub fn record(&mut self, latency: Duration, count: u64) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.0
            .record_n(micros, count)
            .expect("clamped into the histogram's range");
    }

    pub fn add(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("histograms of the same bounds");
    }

    /// p50, p99, p99.9 and max in milliseconds; `None` when empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Percentiles {
            p50_ms: ms(self.0.value_at_quantile(0.5)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            count: self.0.len(),
        })
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub count: u64,
}

/// Which percentile a latency line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Percentile {
    P50,
    P99,
    P999,
}

impl Percentile {
    pub fn of(self, p: &Percentiles) -> f64 {
        match self {
            Percentile::P50 => p.p50_ms,
            Percentile::P99 => p.p99_ms,
            Percentile::P999 => p.p999_ms,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P99 => "p99",
            Percentile::P999 => "p99.9",
        }
    }
}

/// The median of the values (the mean of the middle two for an even count);
/// `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}
