//! The group offset gauges: committed offset, tail and lag per (group,
//! stream, partition), for the groups this instance knows — offsets in its
//! store, or members the broker made active here — exactly as `GetOffsets`
//! answers them, refreshed every `metrics.lag_refresh_ms`.
//!
//! A refresh hands its answers to a [`LagSink`]: the gauges ([`Gauges`]),
//! or the web console's lag history, which runs a refresh of its own at
//! its sample interval.
//!
//! Bounded cost: rounds run one after the other on one task (a tick that
//! comes while a round runs is skipped, and counted); a round asks about
//! `metrics.lag_max_partitions` partitions at most — it starts no further
//! group once that many were asked about — and the next round goes on with
//! the groups after the last one refreshed, so that with many groups each
//! is refreshed in turn. A broker that does not answer ends the round (the
//! gauges keep their last values; `partlog_broker_up` says why). Gauges of
//! a group no longer known here, or of a stream that no longer exists, are
//! removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{PartitionOffsets, PartitionedLog};
use crate::error::Kind;
use crate::telemetry::{self, GroupPartition, PartitionLag};

/// (stream, group).
pub(crate) type Pair = (String, String);

/// Where a refresh's answers go.
pub(crate) trait LagSink: Send + 'static {
    /// `rows` are the pair's partitions as `GetOffsets` answers them now.
    fn offsets(&mut self, pair: &Pair, rows: &[PartitionOffsets]);
    /// The pair is no longer known here, or its stream is gone.
    fn forget(&mut self, pair: &Pair);
    /// A round ended after `took`, having asked about `partitions`
    /// partitions; `skipped` ticks came while it ran.
    fn round_ended(&mut self, took: Duration, partitions: usize, skipped: u64);
}

/// Refreshes until dropped.
pub struct LagRefresh(JoinHandle<()>);

impl Drop for LagRefresh {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts refreshing every `every` into `sink`, asking about
/// `max_partitions` partitions per round at most.
pub fn spawn(
    log: Arc<PartitionedLog>,
    every: Duration,
    max_partitions: usize,
    sink: impl LagSink,
) -> LagRefresh {
    LagRefresh(tokio::spawn(async move {
        let mut refresher = Refresher {
            log,
            max_partitions,
            sink,
            shown: BTreeSet::new(),
            last: None,
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let started = Instant::now();
            let partitions = refresher.round().await;
            let took = started.elapsed();
            let skipped = took.as_nanos() / every.as_nanos().max(1);
            refresher.sink.round_ended(took, partitions, skipped as u64);
        }
    }))
}

struct Refresher<S> {
    log: Arc<PartitionedLog>,
    max_partitions: usize,
    sink: S,
    /// The pairs handed to the sink.
    shown: BTreeSet<Pair>,
    /// The pair refreshed last; the next round starts after it.
    last: Option<Pair>,
}

impl<S: LagSink> Refresher<S> {
    /// One round; returns the partitions asked about.
    async fn round(&mut self) -> usize {
        let known = match self.known() {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the groups for the lag gauges");
                return 0;
            }
        };
        let gone: Vec<Pair> = self
            .shown
            .iter()
            .filter(|pair| !known.contains(*pair))
            .cloned()
            .collect();
        for pair in gone {
            self.forget(&pair);
        }
        // In turn: the pairs after the last one refreshed, then from the
        // start.
        let after = |pair: &&Pair| self.last.as_ref().is_none_or(|last| *pair > last);
        let order: Vec<Pair> = known
            .iter()
            .filter(after)
            .chain(known.iter().filter(|p| !after(p)))
            .cloned()
            .collect();
        let mut asked = 0;
        for pair in order {
            if asked >= self.max_partitions {
                tracing::debug!(
                    asked,
                    "lag refresh reached metrics.lag_max_partitions; the other groups follow \
                     in the next rounds"
                );
                break;
            }
            let (stream, group) = &pair;
            match self.log.get_offsets(stream, group).await {
                Ok(rows) => {
                    asked += rows.len();
                    self.shown.insert(pair.clone());
                    self.sink.offsets(&pair, &rows);
                }
                Err(why) if why.kind() == Kind::Unavailable => {
                    tracing::debug!(%why, "lag refresh stopped: the broker does not answer");
                    break;
                }
                Err(e) => {
                    // The stream is gone (or was never valid): nothing to show.
                    tracing::debug!(stream, group, error = %e, "no lag gauges for the group");
                    self.forget(&pair);
                }
            }
            self.last = Some(pair);
        }
        asked
    }

    /// The pairs with offsets in the store or members active here, sorted.
    fn known(&self) -> crate::error::Result<BTreeSet<Pair>> {
        let mut known: BTreeSet<Pair> = self.log.committed.stream_groups()?.into_iter().collect();
        known.extend(self.log.subscribers.members.stream_groups());
        Ok(known)
    }

    fn forget(&mut self, pair: &Pair) {
        if self.shown.remove(pair) {
            self.sink.forget(pair);
        }
    }
}

/// The gauges: the partitions whose gauges are set, per pair.
#[derive(Default)]
pub(crate) struct Gauges(BTreeMap<Pair, BTreeSet<u32>>);

impl LagSink for Gauges {
    fn offsets(&mut self, pair: &Pair, rows: &[PartitionOffsets]) {
        let shown = self.0.entry(pair.clone()).or_default();
        let now: BTreeSet<u32> = rows.iter().map(|r| r.partition).collect();
        for partition in shown.difference(&now) {
            telemetry::metrics().forget_group_offsets(&at(pair, *partition));
        }
        for row in rows {
            let lag = PartitionLag {
                committed: row.committed.offset,
                tail: row.tail,
                lag: row.lag,
            };
            telemetry::metrics().group_offsets(&at(pair, row.partition), lag);
        }
        *shown = now;
    }

    fn forget(&mut self, pair: &Pair) {
        for partition in self.0.remove(pair).unwrap_or_default() {
            telemetry::metrics().forget_group_offsets(&at(pair, partition));
        }
    }

    fn round_ended(&mut self, took: Duration, partitions: usize, skipped: u64) {
        telemetry::lag_refreshed(took, partitions, skipped);
    }
}

fn at((stream, group): &Pair, partition: u32) -> GroupPartition {
    GroupPartition {
        group: group.clone(),
        stream: stream.clone(),
        partition,
    }
}
