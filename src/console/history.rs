//! What the console remembers of the last hour (360 samples, one every
//! `console.sample_interval_ms`, 10 s by default), in memory only:
//!
//! - per stream, records/s in and out through this instance: the rates
//!   between two samples of `partlog_records_published_total` and
//!   `partlog_records_delivered_total` (other instances' traffic is not
//!   seen here);
//! - per (stream, group) this instance knows — offsets in its store or
//!   members active here, the groups `ListGroups` lists — each partition's
//!   lag, from the same bounded refresh that sets the lag gauges
//!   ([`crate::log::lag`]), run at the sample interval.
//!
//! Bounded: [`SAMPLES`] samples per series; at most [`MAX_STREAMS`] streams
//! and [`MAX_GROUPS`] groups holding [`MAX_LAG_SERIES`] partitions between
//! them. A stream or group beyond a bound gets no history (its page says
//! so) until a tracked one goes: a deleted stream, a group no longer known
//! here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::log::lag::{self, LagRefresh, LagSink, Pair};
use crate::log::{PartitionOffsets, PartitionedLog};
use crate::sync::lock;
use crate::telemetry::{self, RecordTotals};

/// Samples kept per series: an hour at the default interval.
pub const SAMPLES: usize = 360;
/// Streams with a rate history.
pub const MAX_STREAMS: usize = 1000;
/// (stream, group) pairs with a lag history.
pub const MAX_GROUPS: usize = 1000;
/// Partitions with a lag history, over all groups: 360 samples of 10,000
/// partitions are about 30 MB.
pub const MAX_LAG_SERIES: usize = 10_000;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// Up to [`SAMPLES`] timestamped samples, oldest first; a new one pushes
/// the oldest out.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring<T>(VecDeque<(UnixMillis, T)>);

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring(VecDeque::new())
    }
}

impl<T> Ring<T> {
    pub fn push(&mut self, at: UnixMillis, sample: T) {
        if self.0.len() == SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((at, sample));
    }

    pub fn iter(&self) -> impl Iterator<Item = &(UnixMillis, T)> {
        self.0.iter()
    }

    pub fn last(&self) -> Option<&(UnixMillis, T)> {
        self.0.back()
    }
}

/// Records per second into a stream (stored) and out of it (sent to
/// clients), through this instance, between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Rates {
    pub records_in: f64,
    pub records_out: f64,
}

/// A counter's value at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Count {
    at: UnixMillis,
    records: u64,
}

/// Per second between two samples of a counter. A counter below its
/// earlier value started again (its stream was deleted and created again
/// in between): everything it counts came since.
fn per_second(before: Count, now: Count) -> f64 {
    let millis = now.at - before.at;
    if millis <= 0 {
        return 0.0;
    }
    let records = now
        .records
        .checked_sub(before.records)
        .unwrap_or(now.records);
    records as f64 * 1000.0 / millis as f64
}

/// A stream's counters at its last sample and its rates since.
#[derive(Debug, Default)]
struct StreamHistory {
    last: Option<(Count, Count)>,
    rates: Ring<Rates>,
}

/// The console's history; see the module docs.
#[derive(Debug, Default)]
pub struct History {
    streams: BTreeMap<String, StreamHistory>,
    /// Per pair, each sample's lag per partition, in partition order.
    groups: BTreeMap<Pair, Ring<Vec<u64>>>,
    /// Partitions of the pairs in `groups` (their latest sample's).
    lag_series: usize,
}

impl History {
    /// A sample of every stream's counters at `at`; streams whose counters
    /// are gone (deleted) are forgotten.
    pub fn record_totals(&mut self, at: UnixMillis, totals: &[RecordTotals]) {
        self.streams
            .retain(|stream, _| totals.iter().any(|t| t.stream == *stream));
        for totals in totals {
            if !self.streams.contains_key(&totals.stream) && self.streams.len() >= MAX_STREAMS {
                continue;
            }
            let history = self.streams.entry(totals.stream.clone()).or_default();
            let now = (
                Count {
                    at,
                    records: totals.published,
                },
                Count {
                    at,
                    records: totals.delivered,
                },
            );
            if let Some((published, delivered)) = history.last {
                let rates = Rates {
                    records_in: per_second(published, now.0),
                    records_out: per_second(delivered, now.1),
                };
                history.rates.push(at, rates);
            }
            history.last = Some(now);
        }
    }

    /// A sample of a pair's lag per partition at `at`.
    pub fn record_lag(&mut self, pair: &Pair, at: UnixMillis, lags: Vec<u64>) {
        let held = self.groups.get(pair).and_then(|ring| ring.last());
        let before = held.map_or(0, |(_, lags)| lags.len());
        let tracked = held.is_some() || self.groups.len() < MAX_GROUPS;
        if !tracked || self.lag_series - before + lags.len() > MAX_LAG_SERIES {
            return;
        }
        self.lag_series = self.lag_series - before + lags.len();
        self.groups.entry(pair.clone()).or_default().push(at, lags);
    }

    /// The pair is no longer known here, or its stream is gone.
    pub fn forget_group(&mut self, pair: &Pair) {
        if let Some(ring) = self.groups.remove(pair) {
            self.lag_series -= ring.last().map_or(0, |(_, lags)| lags.len());
        }
    }

    /// The stream's rates over the last hour, oldest first.
    pub fn rates(&self, stream: &str) -> Option<&Ring<Rates>> {
        self.streams.get(stream).map(|history| &history.rates)
    }

    /// The pair's lag per partition over the last hour, oldest first.
    pub fn lag(&self, pair: &Pair) -> Option<&Ring<Vec<u64>>> {
        self.groups.get(pair)
    }
}

/// The history as the sampling tasks and the console share it.
pub type SharedHistory = Arc<Mutex<History>>;

impl LagSink for SharedHistory {
    fn offsets(&mut self, pair: &Pair, rows: &[PartitionOffsets]) {
        let lags = rows.iter().map(|row| row.lag).collect();
        lock(self).record_lag(pair, now(), lags);
    }

    fn forget(&mut self, pair: &Pair) {
        lock(self).forget_group(pair);
    }

    fn round_ended(&mut self, _took: Duration, _partitions: usize, _skipped: u64) {
        // The gauges' refresh reports its rounds; this one is the console's
        // own and adds nothing to them.
    }
}

/// Samples into the history until dropped.
pub struct Sampling {
    _lag: LagRefresh,
    records: JoinHandle<()>,
}

impl Drop for Sampling {
    fn drop(&mut self) {
        self.records.abort();
    }
}

/// Samples every `every` into `history`: record counters, and the lag of
/// the groups this instance knows, `max_partitions` at most per round (as
/// `metrics.lag_max_partitions` bounds the gauges' refresh).
pub fn sample(
    log: Arc<PartitionedLog>,
    history: SharedHistory,
    every: Duration,
    max_partitions: usize,
) -> Sampling {
    let lag = lag::spawn(log, every, max_partitions, history.clone());
    let records = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let totals = telemetry::record_totals();
            lock(&history).record_totals(now(), &totals);
        }
    });
    Sampling { _lag: lag, records }
}

fn now() -> UnixMillis {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(stream: &str, published: u64, delivered: u64) -> RecordTotals {
        RecordTotals {
            stream: stream.into(),
            published,
            delivered,
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_samples_in_order() {
        let mut ring = Ring::default();
        for i in 0..(SAMPLES as i64 + 5) {
            ring.push(i, i * 10);
        }
        let kept: Vec<_> = ring.iter().copied().collect();
        assert_eq!(kept.len(), SAMPLES);
        assert_eq!(kept[0], (5, 50));
        assert_eq!(
            ring.last(),
            Some(&(SAMPLES as i64 + 4, (SAMPLES as i64 + 4) * 10))
        );
    }

    #[test]
    fn rates_are_per_second_between_samples_and_survive_a_restarted_counter() {
        let count = |at, records| Count { at, records };
        assert_eq!(per_second(count(0, 100), count(2_000, 300)), 100.0);
        assert_eq!(per_second(count(0, 100), count(500, 100)), 0.0);
        // The stream was deleted and created again: 40 records since.
        assert_eq!(per_second(count(0, 100), count(1_000, 40)), 40.0);
        // No time passed (a clock step): no rate rather than infinity.
        assert_eq!(per_second(count(1_000, 1), count(1_000, 9)), 0.0);
        assert_eq!(per_second(count(1_000, 1), count(900, 9)), 0.0);
    }

    #[test]
    fn streams_get_rates_from_their_second_sample_and_go_with_their_counters() {
        let mut history = History::default();
        history.record_totals(0, &[totals("a", 10, 0)]);
        assert_eq!(history.rates("a").unwrap().iter().count(), 0);
        history.record_totals(10_000, &[totals("a", 110, 50), totals("b", 7, 0)]);
        let rates: Vec<_> = history.rates("a").unwrap().iter().copied().collect();
        assert_eq!(
            rates,
            [(
                10_000,
                Rates {
                    records_in: 10.0,
                    records_out: 5.0
                }
            )]
        );
        assert!(history.rates("b").is_some());
        history.record_totals(20_000, &[totals("b", 7, 0)]);
        assert!(
            history.rates("a").is_none(),
            "a deleted stream is forgotten"
        );
    }

    #[test]
    fn streams_beyond_the_bound_get_no_history() {
        let mut history = History::default();
        let many: Vec<_> = (0..=MAX_STREAMS)
            .map(|i| totals(&format!("s{i:05}"), 0, 0))
            .collect();
        history.record_totals(0, &many);
        assert_eq!(history.streams.len(), MAX_STREAMS);
        assert!(history.rates(&format!("s{MAX_STREAMS:05}")).is_none());
    }

    #[test]
    fn lag_series_are_bounded_by_groups_and_by_partitions() {
        let pair = |i: usize| (format!("s{i}"), "g".to_owned());
        let mut history = History::default();
        for i in 0..MAX_GROUPS {
            history.record_lag(&pair(i), 0, vec![1]);
        }
        history.record_lag(&pair(MAX_GROUPS), 0, vec![1]);
        assert!(
            history.lag(&pair(MAX_GROUPS)).is_none(),
            "one group too many"
        );
        // A tracked group keeps its history, also with more partitions.
        history.record_lag(&pair(0), 1, vec![2, 3]);
        let samples: Vec<_> = history.lag(&pair(0)).unwrap().iter().cloned().collect();
        assert_eq!(samples, [(0, vec![1]), (1, vec![2, 3])]);
        assert_eq!(history.lag_series, MAX_GROUPS + 1);
        // Too many partitions: the sample is not kept.
        history.record_lag(&pair(1), 1, vec![0; MAX_LAG_SERIES]);
        assert_eq!(history.lag(&pair(1)).unwrap().iter().count(), 1);
        // A forgotten group makes room.
        history.forget_group(&pair(0));
        assert_eq!(history.lag_series, MAX_GROUPS - 1);
        history.record_lag(&pair(MAX_GROUPS), 2, vec![4]);
        assert!(history.lag(&pair(MAX_GROUPS)).is_some());
    }
}
