//! A consumer group's committed offsets: this instance's store, mirrored to
//! the broker's offset tracking under the group's name so that any
//! instance (and native consumers of the group) resume from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::{Broker, Partition};
use crate::error::Result;
use crate::offsets::{Committed, Local, OffsetStore};

/// A group's committed offset in one partition and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: Option<u64>,
    pub source: Option<OffsetSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSource {
    /// This instance's offset store.
    Local,
    /// The broker's offset tracking (committed through another instance).
    Broker,
}

/// Reads and writes committed offsets; one per process.
pub struct CommittedOffsets {
    store: OffsetStore,
    broker: Arc<Broker>,
}

impl CommittedOffsets {
    pub fn new(store: OffsetStore, broker: Arc<Broker>) -> CommittedOffsets {
        CommittedOffsets { store, broker }
    }

    /// The group's committed offset in `partition` of `stream`: the larger
    /// of this instance's and the broker's.
    pub async fn get(
        &self,
        stream: &str,
        group: &str,
        partition: &Partition,
    ) -> Result<CommittedOffset> {
        let local = self.store.get(stream, group, partition.index)?;
        if local == Some(Local::ResetToStart) {
            // Reset to the start here; the broker cannot express it.
            return Ok(CommittedOffset {
                offset: None,
                source: Some(OffsetSource::Local),
            });
        }
        let local = local.and_then(Local::committed);
        let broker = self.broker.query_offset(group, &partition.stream).await?;
        Ok(match (local, broker) {
            (None, None) => CommittedOffset {
                offset: None,
                source: None,
            },
            (Some(l), b) if b.is_none_or(|b| l >= b) => CommittedOffset {
                offset: Some(l),
                source: Some(OffsetSource::Local),
            },
            (_, b) => CommittedOffset {
                offset: b,
                source: Some(OffsetSource::Broker),
            },
        })
    }

    /// The offset stored on the broker for the group in `partition`.
    pub async fn on_broker(&self, group: &str, partition: &Partition) -> Result<Option<u64>> {
        self.broker.query_offset(group, &partition.stream).await
    }

    /// Moves the group's offsets forward (never back), durably in the store,
    /// then on the broker where the broker's is lower. `on_broker` holds
    /// what the broker had, per partition.
    pub async fn commit(
        &self,
        stream: &str,
        group: &str,
        partitions: &[Partition],
        targets: &BTreeMap<u32, u64>,
        on_broker: &BTreeMap<u32, Option<u64>>,
    ) -> Result<Vec<Committed>> {
        let results = self.store.commit(stream, group, targets).await?;
        for result in &results {
            if on_broker[&result.partition].is_none_or(|b| b < result.offset) {
                let partition = &partitions[result.partition as usize];
                self.broker
                    .store_offset(group, &partition.stream, result.offset)
                    .await?;
            }
        }
        Ok(results)
    }

    /// Sets positions unconditionally (the admin reset): in the store, and
    /// on the broker where it can express them (not "before the first
    /// record").
    pub async fn reset(
        &self,
        stream: &str,
        group: &str,
        partitions: &[Partition],
        positions: &BTreeMap<u32, Option<u64>>,
    ) -> Result<()> {
        self.store.reset(stream, group, positions).await?;
        for (&partition, position) in positions {
            if let Some(offset) = position {
                let partition = &partitions[partition as usize];
                self.broker
                    .store_offset(group, &partition.stream, *offset)
                    .await?;
            }
        }
        Ok(())
    }

    /// Groups with offsets in this instance's store for `stream`.
    pub fn groups(&self, stream: &str) -> Result<Vec<String>> {
        self.store.groups(stream)
    }

    /// Writes the store to disk.
    pub async fn flush(&self) -> Result<()> {
        self.store.flush().await
    }
}
