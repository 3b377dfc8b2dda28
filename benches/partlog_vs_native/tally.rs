//! Checking what consumers received: every published record exactly once
//! (or at least once, for groups), in its key's partition, in offset order,
//! and each key's records in sequence order where they were published so.
//! A bench that measured a broken path would be worse than none, so every
//! consuming measurement ends with [`Tally::verify`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::records::{decode, now_nanos, Dataset};
use crate::setup::Result;
use crate::stats::Latencies;

pub struct Tally {
    dataset: Dataset,
    first: u64,
    count: u64,
    /// One bit per expected sequence.
    seen: Vec<AtomicU64>,
    distinct: AtomicU64,
    /// Per partition: records expected and distinct records seen.
    expected: Vec<u64>,
    distinct_in: Vec<AtomicU64>,
    deliveries: AtomicU64,
    /// Sequences outside the expected range or undecodable values.
    foreign: AtomicU64,
    /// Records in a partition their key does not route to.
    misrouted: AtomicU64,
    /// Per partition: the last offset delivered.
    last_offset: Vec<Mutex<Option<u64>>>,
    /// Deliveries whose offset was not above the partition's last one.
    out_of_order: AtomicU64,
    /// Per key index: the highest sequence delivered, when its records
    /// were published in sequence order.
    key_last: Option<Vec<Mutex<Option<u64>>>>,
    /// First deliveries of a record whose key had a later sequence
    /// delivered before.
    key_out_of_order: AtomicU64,
    /// Publish → delivery latency, when asked for.
    latency: Option<Mutex<Latencies>>,
    progress: Notify,
}

/// Longest time without a new record before a consumer counts as stuck.
pub const STALL: Duration = Duration::from_secs(30);

/// How the records a tally expects were published, which says in what
/// order each key's records are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// In sequence order through one producer ([`crate::lines::prefill`]):
    /// each key's records are stored, and must arrive, in sequence order.
    InOrder,
    /// By concurrent calls (the delivery line's publishers): two calls
    /// that overlap may store a key's records in either order.
    Concurrently,
}

impl Tally {
    /// Expects sequences `first..first + count` of `dataset`.
    pub fn new(
        dataset: &Dataset,
        first: u64,
        count: u64,
        published: Published,
        with_latency: bool,
    ) -> Tally {
        Tally {
            dataset: dataset.clone(),
            first,
            count,
            seen: (0..count.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            distinct: AtomicU64::new(0),
            expected: dataset.expected_per_partition(first, count),
            distinct_in: (0..dataset.partitions).map(|_| AtomicU64::new(0)).collect(),
            deliveries: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            last_offset: (0..dataset.partitions).map(|_| Mutex::new(None)).collect(),
            out_of_order: AtomicU64::new(0),
            key_last: (published == Published::InOrder)
                .then(|| (0..dataset.keys()).map(|_| Mutex::new(None)).collect()),
            key_out_of_order: AtomicU64::new(0),
            latency: with_latency.then(|| Mutex::new(Latencies::default())),
            progress: Notify::new(),
        }
    }

    /// Counts one delivered record by its value.
    pub fn record(&self, partition: u32, offset: u64, value: &[u8]) {
        self.record_decoded(partition, offset, decode(value));
    }

    /// Counts one delivered record by its decoded sequence and sending
    /// time (`None`: the value was not one of ours).
    pub fn record_decoded(&self, partition: u32, offset: u64, decoded: Option<(u64, u64)>) {
        let received = now_nanos();
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let Some((seq, sent)) = decoded.filter(|(seq, _)| {
            (self.first..self.first + self.count).contains(seq)
                && (partition as usize) < self.last_offset.len()
        }) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.dataset.partition_of(seq) != partition {
            self.misrouted.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut last = self.last_offset[partition as usize].lock().unwrap();
            if last.is_some_and(|l| offset <= l) {
                self.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            *last = Some(offset);
        }
        if let Some(latency) = &self.latency {
            let nanos = received.saturating_sub(sent);
            latency
                .lock()
                .unwrap()
                .record(Duration::from_nanos(nanos), 1);
        }
        // Under the key's lock, so that the first delivery of a record and
        // its key's highest sequence change together.
        let mut key_last = self
            .key_last
            .as_ref()
            .map(|last| last[self.dataset.key_index(seq)].lock().unwrap());
        let index = seq - self.first;
        let bit = 1u64 << (index % 64);
        let before = self.seen[(index / 64) as usize].fetch_or(bit, Ordering::Relaxed);
        let first_delivery = before & bit == 0;
        if let Some(last) = key_last.as_deref_mut() {
            // A redelivery (a group's handover) may go back; a record
            // delivered for the first time must have a higher sequence
            // than every record of its key delivered before.
            if first_delivery && last.is_some_and(|l| l > seq) {
                self.key_out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            *last = Some(last.map_or(seq, |l| l.max(seq)));
        }
        drop(key_last);
        if first_delivery {
            self.distinct_in[partition as usize].fetch_add(1, Ordering::Relaxed);
            let distinct = self.distinct.fetch_add(1, Ordering::Relaxed) + 1;
            if distinct == self.count {
                self.progress.notify_waiters();
            }
        }
    }

    pub fn partitions(&self) -> u32 {
        self.last_offset.len() as u32
    }

    pub fn is_complete(&self) -> bool {
        self.distinct.load(Ordering::Relaxed) >= self.count
    }

    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Waits until every expected record arrived; fails when none arrives
    /// for [`STALL`].
    pub async fn complete(&self) -> Result<()> {
        let mut last = (self.deliveries(), Instant::now());
        loop {
            let notified = self.progress.notified();
            if self.is_complete() {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            let deliveries = self.deliveries();
            if deliveries != last.0 {
                last = (deliveries, Instant::now());
            } else if last.1.elapsed() > STALL {
                return Err(format!("consumers stalled for {STALL:?}: {}", self.summary()).into());
            }
        }
    }

    /// Every expected record arrived, each in its key's partition, nothing
    /// else, and (when published in order) each key's records for the first
    /// time in sequence order; with `exactly_once`, no record twice and
    /// offsets increasing within each partition (a group hands partitions
    /// over with redeliveries, so it checks neither).
    pub fn verify(&self, exactly_once: bool) -> Result<()> {
        let distinct = self.distinct.load(Ordering::Relaxed);
        let deliveries = self.deliveries();
        let foreign = self.foreign.load(Ordering::Relaxed);
        let misrouted = self.misrouted.load(Ordering::Relaxed);
        let out_of_order = self.out_of_order.load(Ordering::Relaxed);
        let key_out_of_order = self.key_out_of_order.load(Ordering::Relaxed);
        let broken = distinct != self.count
            || foreign != 0
            || misrouted != 0
            || key_out_of_order != 0
            || (exactly_once && (deliveries != self.count || out_of_order != 0));
        if broken {
            return Err(format!("wrong records consumed: {}", self.summary()).into());
        }
        Ok(())
    }

    pub fn summary(&self) -> String {
        let missing: Vec<String> = self
            .expected
            .iter()
            .zip(&self.distinct_in)
            .enumerate()
            .filter_map(|(p, (expected, seen))| {
                let missing = expected.saturating_sub(seen.load(Ordering::Relaxed));
                (missing > 0).then(|| format!("{p}: {missing}"))
            })
            .collect();
        let key_order = match self.key_last {
            Some(_) => self.key_out_of_order.load(Ordering::Relaxed).to_string(),
            None => "unchecked (published concurrently)".into(),
        };
        format!(
            "expected {}, distinct {}, deliveries {}, foreign {}, misrouted {}, out of order {}, \
             out of key order {key_order}, missing per partition {{{}}}",
            self.count,
            self.distinct.load(Ordering::Relaxed),
            self.deliveries(),
            self.foreign.load(Ordering::Relaxed),
            self.misrouted.load(Ordering::Relaxed),
            self.out_of_order.load(Ordering::Relaxed),
            missing.join(", ")
        )
    }

    /// Counts for the JSON.
    pub fn extra(&self) -> Map<String, Value> {
        let deliveries = self.deliveries();
        let mut extra = Map::new();
        extra.insert("deliveries".into(), json!(deliveries));
        extra.insert(
            "redeliveries".into(),
            json!(deliveries.saturating_sub(self.distinct.load(Ordering::Relaxed))),
        );
        extra
    }

    pub fn latency(&self) -> Option<Latencies> {
        self.latency.as_ref().map(|l| l.lock().unwrap().clone())
    }
}
