//! Consumer groups' offsets: Commit, ResetOffsets, GetOffsets and
//! ListGroups. Which member reads a partition is the broker's single active
//! consumer decision (see [`super::subscribe`]); this module only reports
//! the members of this instance that the broker made active.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::committed::{CommittedOffset, CommittedOffsets};
use super::members::ActiveMembers;
use super::position::{broker_offset, StartPosition};
use crate::broker::bounds::{first_chunk_at, partition_bounds};
use crate::broker::{Broker, Partition, SuperStream};
use crate::config::Fallback;
use crate::error::{Error, Kind, Reason, Result};
use crate::offsets::Committed;

/// How many partitions Commit, GetOffsets and DescribeStream ask about
/// concurrently.
pub(super) const PARTITIONS_ASKED_AT_ONCE: usize = 16;

/// The subscriptions of a group to one partition, on any connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMembers {
    pub partition: u32,
    /// The active one first, then by connection.
    pub members: Vec<crate::broker::GroupConsumer>,
}

/// One partition's row of `GetOffsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: u32,
    pub committed: CommittedOffset,
    /// First retained offset, from the broker; `None` while empty.
    pub first: Option<u64>,
    /// Last offset, from the broker; `None` while empty.
    pub tail: Option<u64>,
    /// Records after the committed one (all retained ones without a commit).
    pub lag: u64,
    /// The subscriber of this instance that is active for the partition.
    pub active_member: Option<String>,
    /// Offsets of the partition's epoch markers, oldest first.
    pub epoch_markers: Vec<u64>,
}

/// The group operations over the broker, the committed offsets and the
/// registry of active members; one per process.
pub struct Groups {
    broker: Arc<Broker>,
    committed: Arc<CommittedOffsets>,
    members: Arc<ActiveMembers>,
}

impl Groups {
    pub fn new(
        broker: Arc<Broker>,
        committed: Arc<CommittedOffsets>,
        members: Arc<ActiveMembers>,
    ) -> Groups {
        Groups {
            broker,
            committed,
            members,
        }
    }

    /// Commits the offsets of the last processed record per partition:
    /// each must name a record the partition holds, none moves backwards,
    /// durable in the store and visible on the broker before returning.
    pub async fn commit(
        &self,
        stream: &Arc<SuperStream>,
        group: &str,
        offsets: &BTreeMap<u32, u64>,
    ) -> Result<Vec<Committed>> {
        let requests: Vec<(u32, u64)> = offsets.iter().map(|(p, o)| (*p, *o)).collect();
        futures::stream::iter(requests)
            .map(|(partition, offset)| self.commit_one(stream, group, partition, offset))
            .buffered(PARTITIONS_ASKED_AT_ONCE)
            .try_collect()
            .await
    }

    /// Commits one partition's offset; see [`Groups::commit`].
    pub async fn commit_one(
        &self,
        stream: &Arc<SuperStream>,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Committed> {
        self.prove_record(stream, &stream.partitions[partition as usize], offset)
            .await?;
        self.committed
            .commit(stream, group, partition, offset)
            .await
    }

    /// `offset` names a record `partition` holds: known from what this
    /// instance saw, else asked of the broker. A commit past the end would
    /// skip records not yet written.
    async fn prove_record(
        &self,
        stream: &SuperStream,
        partition: &Partition,
        offset: u64,
    ) -> Result<()> {
        if partition
            .last_record_seen()
            .is_some_and(|last| offset <= last)
        {
            return Ok(());
        }
        let index = partition.index;
        let name = &stream.name;
        let Some(bounds) = partition_bounds(&self.broker, partition).await? else {
            return Err(Error::new(
                Reason::PartitionEmpty,
                format!(
                    "partition {index} of stream {name:?} holds no records yet; commit the offset \
                 of a record the group processed"
                ),
            ));
        };
        if offset > bounds.last {
            return Err(Error::field(
                Reason::OffsetPastTail,
                format!("offsets[{index}]"),
                format!(
                    "offset {offset} is past the last record of partition {index} of stream \
                 {name:?} (offset {})",
                    bounds.last
                ),
            ));
        }
        Ok(())
    }

    /// Moves a group's positions in `selected` partitions to `to`, also
    /// backwards: the admin reset. Returns each partition's committed
    /// offset after the reset (the one before where the group resumes).
    pub async fn reset(
        &self,
        stream: &SuperStream,
        group: &str,
        selected: &[u32],
        to: StartPosition,
    ) -> Result<Vec<(u32, Option<u64>)>> {
        if matches!(to, StartPosition::Committed | StartPosition::Next) {
            return Err(Error::field(
                Reason::PositionInvalid,
                "to",
                "a reset goes to FIRST, LAST, an offset or a timestamp",
            ));
        }
        let mut positions = BTreeMap::new();
        for &index in selected {
            let partition = &stream.partitions[index as usize];
            let next = self.next_offset_at(partition, to).await.map_err(|e| {
                if e.kind() != Kind::InvalidArgument {
                    return e;
                }
                let message = format!("partition {index} of stream {:?}: {e}", stream.name);
                e.with_message(message)
            })?;
            // The last processed record is the one before `next`.
            positions.insert(index, next.checked_sub(1));
        }
        self.committed.reset(stream, group, &positions).await?;
        Ok(positions.into_iter().collect())
    }

    /// The offset a reader positioned at `to` reads next. An offset past
    /// the record after the last one is refused, as Commit refuses it: the
    /// group would skip records not yet written.
    async fn next_offset_at(&self, partition: &Partition, to: StartPosition) -> Result<u64> {
        let Some(bounds) = partition_bounds(&self.broker, partition).await? else {
            return match to {
                StartPosition::Offset(offset @ 1..) => Err(Error::field(
                    Reason::OffsetPastTail,
                    "to.offset",
                    format!(
                        "offset {offset} is past the end: the partition holds no records yet, so \
                     the only offset to reset to is 0 (or FIRST, LAST)"
                    ),
                )),
                _ => Ok(0),
            };
        };
        let after_tail = bounds.last + 1;
        Ok(match to {
            StartPosition::First => bounds.first,
            StartPosition::Offset(offset) if offset > after_tail => {
                return Err(Error::field(
                    Reason::OffsetPastTail,
                    "to.offset",
                    format!(
                        "offset {offset} is past the end: the last record is at offset {} (the \
                     tail), so the furthest reset is to offset {after_tail}, where the next \
                     record will be (LAST goes there too)",
                        bounds.last
                    ),
                ))
            }
            StartPosition::Offset(offset) => offset,
            // The broker attaches at the first chunk stored at or after the
            // time; after the last chunk there is none and the reset goes
            // to the end.
            StartPosition::Timestamp(ms) if ms > bounds.last_timestamp_ms => after_tail,
            StartPosition::Timestamp(_) => {
                // No commit and no fallback: the position is explicit.
                let (spec, _) = broker_offset(to, None, Fallback::First);
                first_chunk_at(&self.broker, partition, spec)
                    .await?
                    .first_offset
            }
            StartPosition::Last | StartPosition::Next | StartPosition::Committed => after_tail,
        })
    }

    /// Committed, first, tail, lag and active member per partition.
    pub async fn offsets(
        &self,
        stream: &SuperStream,
        group: &str,
    ) -> Result<Vec<PartitionOffsets>> {
        // Each partition's bounds take a reader round trip to its leader;
        // many partitions are asked at once.
        futures::stream::iter(0..stream.partitions.len())
            .map(|index| async move {
                let partition = &stream.partitions[index];
                let committed = self.committed.get(&stream.name, group, partition).await?;
                let bounds = partition_bounds(&self.broker, partition).await?;
                let lag = match (bounds, committed.offset) {
                    (None, _) => 0,
                    (Some(b), Some(c)) => b.last.saturating_sub(c),
                    (Some(b), None) => b.last + 1 - b.first,
                };
                Ok(PartitionOffsets {
                    partition: partition.index,
                    committed,
                    first: bounds.map(|b| b.first),
                    tail: bounds.map(|b| b.last),
                    lag,
                    active_member: self.members.get(&stream.name, group, partition.index),
                    epoch_markers: Vec::new(),
                })
            })
            .buffered(PARTITIONS_ASKED_AT_ONCE)
            .try_collect()
            .await
    }

    /// Groups with offsets in this instance's store or active subscribers
    /// here. Groups known only to other instances are not listed: the
    /// broker offers no way to enumerate offset references.
    pub fn list(&self, stream: &str) -> Result<Vec<String>> {
        let mut groups: BTreeSet<String> = self.committed.groups(stream)?.into_iter().collect();
        groups.extend(self.members.groups(stream));
        Ok(groups.into_iter().collect())
    }
}
