//! The records every workload publishes, identical for partlog and native.
//!
//! A value starts with the record's sequence number (8 bytes) and the
//! wall-clock time it was handed to the client library or partlog (8 bytes,
//! nanoseconds since the Unix epoch, written just before sending), both
//! little-endian; filler bytes make up the rest. Consumers identify records
//! by sequence, so a bench run notices a record lost, duplicated or routed
//! to a foreign partition; the timestamp gives delivery latency (publisher
//! and consumer share this machine's clock).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use partlog::routing::partition_for_key;

/// One record to publish.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
}

/// What a workload publishes: `count` records over `keys` distinct keys.
#[derive(Clone)]
pub struct Dataset {
    pub value_size: usize,
    pub partitions: u32,
    keys: Arc<Vec<String>>,
    /// The partition of each key index.
    key_partition: Arc<Vec<u32>>,
}

/// Sequences of the batches that open every publishing path before timing
/// starts, far above any measured sequence: consumers tell them apart.
pub const PRIME_FIRST: u64 = 1 << 40;

/// Record `seq` has key `seq × KEY_STRIDE mod keys`: a prime stride spreads
/// consecutive records (one batch) over the keys and partitions instead of
/// walking the keys in order, and visits every key when the key count is
/// not a multiple of it.
const KEY_STRIDE: u64 = 7_919;

impl Dataset {
    pub fn new(keys: u32, value_size: usize, partitions: u32) -> Dataset {
        let keys: Vec<String> = (0..keys).map(|k| format!("key-{k:05}")).collect();
        let key_partition = keys
            .iter()
            .map(|k| partition_for_key(k, partitions))
            .collect();
        Dataset {
            value_size,
            partitions,
            keys: Arc::new(keys),
            key_partition: Arc::new(key_partition),
        }
    }

    /// Distinct keys.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Which of the keys record `seq` has.
    pub fn key_index(&self, seq: u64) -> usize {
        ((seq.wrapping_mul(KEY_STRIDE)) % self.keys.len() as u64) as usize
    }

    pub fn key(&self, seq: u64) -> &str {
        &self.keys[self.key_index(seq)]
    }

    /// The partition record `seq` belongs in, by partlog's routing
    /// function (the prefill routes with the native client's own, so that
    /// the lines reading prefilled streams check that the two agree).
    pub fn partition_of(&self, seq: u64) -> u32 {
        self.key_partition[self.key_index(seq)]
    }

    pub fn record(&self, seq: u64) -> Record {
        let mut value = vec![b'x'; self.value_size];
        value[..8].copy_from_slice(&seq.to_le_bytes());
        Record {
            key: self.key(seq).to_owned(),
            value,
        }
    }

    /// Records `first..first + count` in batches of `batch`.
    pub fn batches(&self, first: u64, count: u64, batch: usize) -> Vec<Vec<Record>> {
        let seqs: Vec<u64> = (first..first + count).collect();
        seqs.chunks(batch)
            .map(|chunk| chunk.iter().map(|s| self.record(*s)).collect())
            .collect()
    }

    /// Records per partition among sequences `first..first + count`.
    pub fn expected_per_partition(&self, first: u64, count: u64) -> Vec<u64> {
        let mut counts = vec![0; self.partitions as usize];
        for seq in first..first + count {
            counts[self.partition_of(seq) as usize] += 1;
        }
        counts
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes the sending time into each record of a batch.
pub fn stamp(batch: &mut [Record]) {
    let now = now_nanos().to_le_bytes();
    for record in batch {
        record.value[8..16].copy_from_slice(&now);
    }
}

/// Sequence number and sending time of a value written by [`Dataset`].
pub fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}
