//! Consumer groups: subscriptions, committed offsets and the offsets query.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use rabbitmq_stream_client::types::OffsetSpecification;

use super::PartitionedLog;
use crate::broker::reader::{first_chunk_at, partition_bounds};
use crate::broker::Node;
use crate::error::{Error, Result};
use crate::offsets::{Committed, Local};
use crate::subscription::{self, StartPosition, SubscribeRequest, Subscription};
use crate::validate;

/// How many partitions Commit and GetOffsets ask about concurrently.
const PARTITIONS_ASKED_AT_ONCE: usize = 16;

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
}

impl PartitionedLog {
    /// Starts tailing partitions; see [`crate::subscription`].
    pub async fn subscribe(
        self: &Arc<Self>,
        stream: &str,
        group: Option<&str>,
        partitions: &[u32],
        start: Option<StartPosition>,
        window: u32,
    ) -> Result<Subscription> {
        validate::stream_name(stream)?;
        if let Some(group) = group {
            validate::group_name(group)?;
        }
        let start = start.unwrap_or(if group.is_some() {
            StartPosition::Committed
        } else {
            StartPosition::Next
        });
        subscription::check_start(start, group)?;
        let window = match window {
            0 => self.limits.default_window,
            w if w > self.limits.max_window => {
                return Err(Error::InvalidArgument(format!(
                    "window is {w}; at most {} is allowed (limits.max_window)",
                    self.limits.max_window
                )))
            }
            w => w,
        };
        let all = self.broker.partitions(stream).await?;
        let partitions = validate::partition_selection(partitions, all.len(), stream)?;
        let partition_streams = partitions
            .iter()
            .map(|p| all[*p as usize].clone())
            .collect();
        let member = format!(
            "{}#{}",
            self.instance,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        Ok(subscription::start(
            self.clone(),
            SubscribeRequest {
                stream: stream.to_owned(),
                group: group.map(str::to_owned),
                partitions,
                start,
                window: window as usize,
            },
            partition_streams,
            member,
        ))
    }

    /// A group's committed offset in one partition: the larger of this
    /// instance's and the broker's.
    pub async fn committed(
        &self,
        stream: &str,
        group: &str,
        partition: u32,
        partition_stream: &str,
    ) -> Result<CommittedOffset> {
        let local = self.store.get(stream, group, partition)?;
        if local == Some(Local::ResetToStart) {
            // Reset to the start here; the broker cannot express it.
            return Ok(CommittedOffset {
                offset: None,
                source: Some(OffsetSource::Local),
            });
        }
        let local = local.and_then(Local::committed);
        let broker = self.broker.query_offset(group, partition_stream).await?;
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

    /// Commits a group's offsets (offset of the last processed record per
    /// partition, which must exist): durable in the store before returning,
    /// never moving backwards, then mirrored to the broker.
    pub async fn commit(
        &self,
        stream: &str,
        group: &str,
        offsets: &BTreeMap<u32, u64>,
    ) -> Result<Vec<Committed>> {
        let partitions = self.group_partitions(stream, group, offsets.keys()).await?;
        if offsets.is_empty() {
            return Err(Error::InvalidArgument(
                "offsets is empty; name at least one partition".into(),
            ));
        }
        let partitions = &partitions;
        let requests: Vec<(u32, u64)> = offsets.iter().map(|(p, o)| (*p, *o)).collect();
        // Each offset must name a record the partition holds (a commit past
        // the end would skip records not yet written). The broker may know a
        // higher offset, committed through another instance; a commit never
        // moves below it either.
        let checked: Vec<(u32, u64, Option<u64>)> = futures::stream::iter(requests)
            .map(|(partition, requested)| async move {
                let partition_stream = &partitions[partition as usize];
                let known = self.known_last_record(partition_stream);
                if known.is_none_or(|last| requested > last) {
                    let placement = self
                        .broker
                        .placements(std::slice::from_ref(partition_stream))
                        .await?
                        .remove(0);
                    let bounds =
                        partition_bounds(&self.broker, partition_stream, &placement.leader).await?;
                    let Some(bounds) = bounds else {
                        return Err(Error::FailedPrecondition(format!(
                            "partition {partition} of stream {stream:?} holds no records yet; \
                             commit the offset of a record the group processed"
                        )));
                    };
                    self.note_record(partition_stream, bounds.last);
                    if requested > bounds.last {
                        return Err(Error::InvalidArgument(format!(
                            "offset {requested} is past the last record of partition \
                             {partition} of stream {stream:?} (offset {})",
                            bounds.last
                        )));
                    }
                }
                let broker = self.broker.query_offset(group, partition_stream).await?;
                Ok((partition, requested, broker))
            })
            .buffered(PARTITIONS_ASKED_AT_ONCE)
            .try_collect()
            .await?;
        let mut targets = BTreeMap::new();
        let mut on_broker = BTreeMap::new();
        for (partition, requested, broker) in checked {
            targets.insert(partition, broker.map_or(requested, |b| b.max(requested)));
            on_broker.insert(partition, broker);
        }
        let mut results = self.store.commit(stream, group, &targets).await?;
        for result in &mut results {
            let requested = offsets[&result.partition];
            result.ignored_lower = requested < result.offset;
            if on_broker[&result.partition].is_none_or(|b| b < result.offset) {
                self.broker
                    .store_offset(group, &partitions[result.partition as usize], result.offset)
                    .await?;
            }
        }
        Ok(results)
    }

    /// Moves a group's positions to `to`, also backwards: the admin reset.
    pub async fn reset_offsets(
        &self,
        stream: &str,
        group: &str,
        selected: &[u32],
        to: StartPosition,
    ) -> Result<Vec<(u32, Option<u64>)>> {
        validate::stream_name(stream)?;
        validate::group_name(group)?;
        if matches!(to, StartPosition::Committed | StartPosition::Next) {
            return Err(Error::InvalidArgument(
                "a reset goes to FIRST, LAST, an offset or a timestamp".into(),
            ));
        }
        let all = self.broker.partitions(stream).await?;
        let selected = validate::partition_selection(selected, all.len(), stream)?;
        let placements = self.broker.placements(&all).await?;
        let mut positions = BTreeMap::new();
        for &partition in &selected {
            let partition_stream = &all[partition as usize];
            let leader = &placements[partition as usize].leader;
            let next = self
                .next_offset_at(partition_stream, leader, to)
                .await
                .map_err(|e| match e {
                    Error::InvalidArgument(why) => Error::InvalidArgument(format!(
                        "partition {partition} of stream {stream:?}: {why}"
                    )),
                    other => other,
                })?;
            // The last processed record is the one before `next`.
            positions.insert(partition, next.checked_sub(1));
        }
        self.store.reset(stream, group, &positions).await?;
        for (&partition, position) in &positions {
            if let Some(offset) = position {
                self.broker
                    .store_offset(group, &all[partition as usize], *offset)
                    .await?;
            }
        }
        Ok(positions.into_iter().collect())
    }

    /// The offset a reader positioned at `to` reads next. An offset past
    /// the record after the last one is refused, as Commit refuses it: the
    /// group would skip records not yet written.
    async fn next_offset_at(
        &self,
        partition_stream: &str,
        leader: &Node,
        to: StartPosition,
    ) -> Result<u64> {
        let Some(bounds) = partition_bounds(&self.broker, partition_stream, leader).await? else {
            return match to {
                StartPosition::Offset(offset @ 1..) => Err(Error::InvalidArgument(format!(
                    "offset {offset} is past the end: the partition holds no records yet, so \
                     the only offset to reset to is 0 (or FIRST, LAST)"
                ))),
                _ => Ok(0),
            };
        };
        self.note_record(partition_stream, bounds.last);
        let after_tail = bounds.last + 1;
        Ok(match to {
            StartPosition::First => bounds.first,
            StartPosition::Offset(offset) if offset > after_tail => {
                return Err(Error::InvalidArgument(format!(
                    "offset {offset} is past the end: the last record is at offset {} (the \
                     tail), so the furthest reset is to offset {after_tail}, where the next \
                     record will be (LAST goes there too)",
                    bounds.last
                )))
            }
            StartPosition::Offset(offset) => offset,
            // The broker attaches at the first chunk stored at or after the
            // time; after the last chunk there is none and the reset goes
            // to the end.
            StartPosition::Timestamp(ms) if ms > bounds.last_timestamp_ms => after_tail,
            StartPosition::Timestamp(ms) => {
                first_chunk_at(
                    &self.broker,
                    partition_stream,
                    leader,
                    OffsetSpecification::Timestamp(ms),
                )
                .await?
                .first_offset
            }
            StartPosition::Last | StartPosition::Next | StartPosition::Committed => after_tail,
        })
    }

    /// Committed, first, tail, lag and active member per partition.
    pub async fn get_offsets(&self, stream: &str, group: &str) -> Result<Vec<PartitionOffsets>> {
        let partitions = self
            .group_partitions(stream, group, std::iter::empty())
            .await?;
        let placements = self.broker.placements(&partitions).await?;
        // Each partition's bounds take a reader round trip to its leader;
        // many partitions are asked at once.
        let (partitions, placements) = (&partitions, &placements);
        futures::stream::iter(0..partitions.len())
            .map(|index| async move {
                let partition = index as u32;
                let partition_stream = &partitions[index];
                let committed = self
                    .committed(stream, group, partition, partition_stream)
                    .await?;
                let leader = &placements[index].leader;
                let bounds = partition_bounds(&self.broker, partition_stream, leader).await?;
                if let Some(b) = bounds {
                    self.note_record(partition_stream, b.last);
                }
                let lag = match (bounds, committed.offset) {
                    (None, _) => 0,
                    (Some(b), Some(c)) => b.last.saturating_sub(c),
                    (Some(b), None) => b.last + 1 - b.first,
                };
                Ok(PartitionOffsets {
                    partition,
                    committed,
                    first: bounds.map(|b| b.first),
                    tail: bounds.map(|b| b.last),
                    lag,
                    active_member: self.active_member(stream, group, partition),
                })
            })
            .buffered(PARTITIONS_ASKED_AT_ONCE)
            .try_collect()
            .await
    }

    /// Groups with offsets in this instance's store or active subscribers
    /// here. Groups known only to other instances are not listed: the
    /// broker offers no way to enumerate offset references.
    pub async fn list_groups(&self, stream: &str) -> Result<Vec<String>> {
        validate::stream_name(stream)?;
        self.broker.partitions(stream).await?;
        let mut groups: BTreeSet<String> = self.store.groups(stream)?.into_iter().collect();
        let active = self.active.lock().expect("registry poisoned");
        groups.extend(
            active
                .keys()
                .filter(|(s, _, _)| s == stream)
                .map(|(_, g, _)| g.clone()),
        );
        Ok(groups.into_iter().collect())
    }

    pub(crate) fn set_active_member(
        &self,
        stream: &str,
        group: &str,
        partition: u32,
        member: &str,
        active: bool,
    ) {
        let mut registry = self.active.lock().expect("registry poisoned");
        let key = (stream.to_owned(), group.to_owned(), partition);
        if active {
            registry.insert(key, member.to_owned());
        } else if registry.get(&key).is_some_and(|m| m == member) {
            registry.remove(&key);
        }
    }

    fn active_member(&self, stream: &str, group: &str, partition: u32) -> Option<String> {
        let registry = self.active.lock().expect("registry poisoned");
        registry
            .get(&(stream.to_owned(), group.to_owned(), partition))
            .cloned()
    }

    /// Validates a group request and returns the stream's partitions.
    async fn group_partitions<'a>(
        &self,
        stream: &str,
        group: &str,
        named: impl Iterator<Item = &'a u32>,
    ) -> Result<Vec<String>> {
        validate::stream_name(stream)?;
        validate::group_name(group)?;
        let partitions = self.broker.partitions(stream).await?;
        let named: Vec<u32> = named.copied().collect();
        validate::partition_selection(&named, partitions.len(), stream)?;
        Ok(partitions)
    }
}
