//! The partitioned log: partlog's core operations, free of any transport.
//!
//! [`PartitionedLog`] validates requests, routes records to partitions and
//! drives the broker adapter. It keeps, per stream that this process has
//! published to, the partition list in routing order, the round-robin
//! cursor for unkeyed records and one [`PartitionProducer`] per partition.
//! That cache is dropped for a stream when it is deleted through this
//! process or when the broker reports it gone.
//!
//! Consumer groups: committed offsets live in the [`OffsetStore`] and are
//! mirrored to the broker's offset tracking under the group's name, so any
//! instance resumes a group from the larger of its own and the broker's
//! value. Which member reads a partition is the broker's single active
//! consumer decision ([`crate::subscription`]); the log only remembers which
//! of its own subscribers are active, for `GetOffsets`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Mutex;

use crate::broker::producer::{PartitionProducer, Stored, Submitted};
use crate::broker::reader::{first_chunk_at, partition_bounds, read_range, ReadRange};
use crate::broker::{Broker, Node, StreamSettings};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::offsets::{Committed, Local, OffsetStore};
use crate::record::{NewRecord, StoredRecord};
use crate::routing::{partition_for_key, RoundRobin};
use crate::subscription::{self, Fallback, StartPosition, SubscribeRequest, Subscription};
use crate::validate;
use rabbitmq_stream_client::types::OffsetSpecification;

/// A stream's partitions in routing order, with where each lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    pub stream: String,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub index: u32,
    pub stream: String,
    pub leader: Node,
    pub replicas: Vec<Node>,
}

/// Where one published record went, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub sequence: Option<u64>,
    pub result: Result<Stored>,
}

/// A bounded read of one partition.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    /// 0 asks for the default.
    pub max_records: u32,
    pub max_wait: Duration,
}

/// Default number of records a Read returns when the request names none.
pub const DEFAULT_READ_RECORDS: u32 = 100;

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

/// Identity of the process in member names, e.g. `127.0.0.1:50051`.
pub type InstanceName = String;

pub struct PartitionedLog {
    broker: Broker,
    limits: Limits,
    store: OffsetStore,
    fallback: Fallback,
    instance: InstanceName,
    writers: Mutex<HashMap<String, Arc<StreamWriter>>>,
    /// (stream, group, partition) → member active on this instance.
    active: std::sync::Mutex<HashMap<(String, String, u32), String>>,
    next_member: AtomicU64,
    /// Set once by [`PartitionedLog::begin_shutdown`]; ends subscriptions.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// A batch queued on its partitions' producers; see
/// [`PartitionedLog::submit`].
pub struct SubmittedBatch {
    stream: String,
    writer: Arc<StreamWriter>,
    /// Partition and sequence of each record, in request order.
    routed: Vec<(u32, Option<u64>)>,
    /// Request indexes of each partition's records and their submission.
    parts: Vec<(Vec<usize>, Result<Submitted>)>,
}

impl SubmittedBatch {
    /// Each record's outcome, in request order, once the broker answered.
    pub async fn outcome(self, log: &PartitionedLog) -> Vec<Appended> {
        let answers = self.parts.into_iter().map(|(indexes, part)| async move {
            let outcome = match part {
                Ok(submitted) => submitted.outcome().await,
                Err(e) => vec![Err(e); indexes.len()],
            };
            (indexes, outcome)
        });
        let mut results: Vec<Option<Result<Stored>>> = vec![None; self.routed.len()];
        let mut stream_gone = false;
        for (indexes, outcome) in join_all(answers).await {
            for (index, result) in indexes.into_iter().zip(outcome) {
                stream_gone |= matches!(result, Err(Error::NotFound(_)));
                results[index] = Some(result);
            }
        }
        if stream_gone {
            log.forget(&self.stream, &self.writer).await;
        }
        self.routed
            .into_iter()
            .zip(results)
            .map(|((partition, sequence), result)| Appended {
                partition,
                sequence,
                result: result.expect("every record belongs to one partition"),
            })
            .collect()
    }
}

/// Publishing state of one stream.
struct StreamWriter {
    partitions: Vec<String>,
    round_robin: RoundRobin,
    producers: Vec<Mutex<Option<Arc<PartitionProducer>>>>,
    /// Deduplicating producers by (client producer id, partition).
    named: Mutex<HashMap<(String, usize), Arc<PartitionProducer>>>,
}

impl PartitionedLog {
    pub fn new(
        broker: Broker,
        limits: Limits,
        store: OffsetStore,
        fallback: Fallback,
        instance: InstanceName,
    ) -> Self {
        PartitionedLog {
            broker,
            limits,
            store,
            fallback,
            instance,
            writers: Mutex::new(HashMap::new()),
            active: std::sync::Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn fallback(&self) -> Fallback {
        self.fallback
    }

    pub async fn create_stream(
        &self,
        stream: &str,
        partitions: u32,
        settings: &StreamSettings,
    ) -> Result<StreamDescription> {
        validate::stream_name(stream)?;
        validate::partition_count(partitions)?;
        if settings.replicas == Some(0) {
            return Err(Error::InvalidArgument(
                "replicas must be at least 1 (the leader) when set".into(),
            ));
        }
        if settings.max_age.is_some_and(|age| age.as_secs() == 0) {
            return Err(Error::InvalidArgument(
                "retention.max_age must be at least one second when set".into(),
            ));
        }
        self.broker
            .create_super_stream(stream, partitions, settings)
            .await?;
        self.describe_stream(stream).await
    }

    pub async fn delete_stream(&self, stream: &str) -> Result<()> {
        validate::stream_name(stream)?;
        let writer = self.writers.lock().await.remove(stream);
        let result = self.broker.delete_super_stream(stream).await;
        if let Some(writer) = writer {
            writer.close().await;
        }
        result
    }

    pub async fn describe_stream(&self, stream: &str) -> Result<StreamDescription> {
        validate::stream_name(stream)?;
        let partitions = self.broker.partitions(stream).await?;
        let placements = self.broker.placements(&partitions).await?;
        Ok(StreamDescription {
            stream: stream.to_owned(),
            partitions: partitions
                .into_iter()
                .zip(placements)
                .enumerate()
                .map(|(index, (stream, placement))| PartitionDescription {
                    index: index as u32,
                    stream,
                    leader: placement.leader,
                    replicas: placement.replicas,
                })
                .collect(),
        })
    }

    /// Appends `records`, answering for each in request order once the
    /// broker confirmed or refused it. An invalid batch writes nothing.
    /// With a `producer_id`, records go through that producer's
    /// deduplicating publishers and a sequence stored before is reported as
    /// a duplicate instead of being written again.
    pub async fn publish(
        &self,
        stream: &str,
        producer_id: Option<&str>,
        records: Vec<NewRecord>,
    ) -> Result<Vec<Appended>> {
        let submitted = self.submit(stream, producer_id, records).await?;
        Ok(submitted.outcome(self).await)
    }

    /// The first half of [`PartitionedLog::publish`]: validates, routes and
    /// queues the records on their partitions' producers. Batches submitted
    /// one after the other are written in that order, whenever their
    /// outcomes are awaited.
    pub async fn submit(
        &self,
        stream: &str,
        producer_id: Option<&str>,
        records: Vec<NewRecord>,
    ) -> Result<SubmittedBatch> {
        validate::stream_name(stream)?;
        validate::publish_batch(&records, &self.limits)?;
        validate::producer_sequences(producer_id, &records)?;
        let writer = self.writer(stream).await?;
        let count = writer.partitions.len() as u32;

        // Group by partition, keeping request order within each group.
        let mut groups: Vec<(Vec<usize>, Vec<NewRecord>)> =
            (0..count).map(|_| (Vec::new(), Vec::new())).collect();
        let mut routed = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let partition = if record.key.is_empty() {
                writer.round_robin.next(count)
            } else {
                partition_for_key(&record.key, count)
            };
            routed.push((partition, record.sequence));
            let group = &mut groups[partition as usize];
            group.0.push(index);
            group.1.push(record);
        }

        let mut parts = Vec::new();
        for (partition, (indexes, records)) in groups.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let part = match writer.producer(self, partition, producer_id).await {
                Ok(producer) => Ok(producer.submit(records).await),
                Err(e) => Err(e),
            };
            parts.push((indexes, part));
        }
        Ok(SubmittedBatch {
            stream: stream.to_owned(),
            writer,
            routed,
            parts,
        })
    }

    pub async fn read(&self, request: ReadRequest) -> Result<Vec<StoredRecord>> {
        validate::stream_name(&request.stream)?;
        let max_records = match request.max_records {
            0 => DEFAULT_READ_RECORDS.min(self.limits.max_read_records),
            n if n > self.limits.max_read_records => {
                return Err(Error::InvalidArgument(format!(
                    "max_records is {n}; at most {} are allowed (limits.max_read_records)",
                    self.limits.max_read_records
                )))
            }
            n => n,
        };
        let max_wait_limit = Duration::from_millis(self.limits.max_read_wait_ms);
        if request.max_wait > max_wait_limit {
            return Err(Error::InvalidArgument(format!(
                "max_wait is {:?}; at most {max_wait_limit:?} is allowed \
                 (limits.max_read_wait_ms)",
                request.max_wait
            )));
        }
        let partitions = self.broker.partitions(&request.stream).await?;
        let Some(partition_stream) = partitions.get(request.partition as usize) else {
            return Err(Error::InvalidArgument(format!(
                "partition {} is out of range: stream {:?} has partitions 0..={}",
                request.partition,
                request.stream,
                partitions.len() - 1
            )));
        };
        let placement = self
            .broker
            .placements(std::slice::from_ref(partition_stream))
            .await?
            .remove(0);
        read_range(
            &self.broker,
            partition_stream,
            &placement.leader,
            ReadRange {
                partition: request.partition,
                from: request.offset,
                max_records: max_records as usize,
                max_wait: request.max_wait,
            },
        )
        .await
    }

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
    /// partition): durable in the store before returning, never moving
    /// backwards, then mirrored to the broker.
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
        // The broker may know a higher offset, committed through another
        // instance; a commit never moves below it either.
        let mut targets = BTreeMap::new();
        let mut on_broker = BTreeMap::new();
        for (&partition, &requested) in offsets {
            let broker = self
                .broker
                .query_offset(group, &partitions[partition as usize])
                .await?;
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
            let next = self.next_offset_at(partition_stream, leader, to).await?;
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

    /// The offset a reader positioned at `to` reads next.
    async fn next_offset_at(
        &self,
        partition_stream: &str,
        leader: &Node,
        to: StartPosition,
    ) -> Result<u64> {
        let Some(bounds) = partition_bounds(&self.broker, partition_stream, leader).await? else {
            return Ok(match to {
                StartPosition::Offset(offset) => offset,
                _ => 0,
            });
        };
        let after_tail = bounds.last + 1;
        Ok(match to {
            StartPosition::First => bounds.first,
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
        let mut rows = Vec::with_capacity(partitions.len());
        for (index, (partition_stream, placement)) in partitions.iter().zip(&placements).enumerate()
        {
            let partition = index as u32;
            let committed = self
                .committed(stream, group, partition, partition_stream)
                .await?;
            let bounds =
                partition_bounds(&self.broker, partition_stream, &placement.leader).await?;
            let lag = match (bounds, committed.offset) {
                (None, _) => 0,
                (Some(b), Some(c)) => b.last.saturating_sub(c),
                (Some(b), None) => b.last + 1 - b.first,
            };
            rows.push(PartitionOffsets {
                partition,
                committed,
                first: bounds.map(|b| b.first),
                tail: bounds.map(|b| b.last),
                lag,
                active_member: self.active_member(stream, group, partition),
            });
        }
        Ok(rows)
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

    /// Ends every subscription (their calls complete normally) so that a
    /// graceful shutdown does not wait for subscribers to leave.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown began.
    pub(crate) async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.subscribe();
        // The sender lives as long as self, so waiting cannot fail.
        let _ = shutdown.wait_for(|down| *down).await;
    }

    /// Closes every producer after its queued records were confirmed, then
    /// flushes the offset store and closes the broker connections.
    pub async fn close(&self) {
        let writers: Vec<_> = self.writers.lock().await.drain().map(|(_, w)| w).collect();
        join_all(writers.iter().map(|w| w.close())).await;
        if let Err(e) = self.store.flush().await {
            tracing::error!("flushing the offset store failed: {e}");
        }
        self.broker.close().await;
    }

    async fn writer(&self, stream: &str) -> Result<Arc<StreamWriter>> {
        if let Some(writer) = self.writers.lock().await.get(stream) {
            return Ok(writer.clone());
        }
        // Looked up outside the lock: a slow broker must not stall
        // publishers of other streams.
        let partitions = self.broker.partitions(stream).await?;
        let mut writers = self.writers.lock().await;
        let writer = writers.entry(stream.to_owned()).or_insert_with(|| {
            Arc::new(StreamWriter {
                producers: partitions.iter().map(|_| Mutex::new(None)).collect(),
                partitions,
                round_robin: RoundRobin::default(),
                named: Mutex::new(HashMap::new()),
            })
        });
        Ok(writer.clone())
    }

    /// Drops the cached writer of a stream the broker reports gone, unless
    /// it was already replaced.
    async fn forget(&self, stream: &str, writer: &Arc<StreamWriter>) {
        let mut writers = self.writers.lock().await;
        if writers.get(stream).is_some_and(|w| Arc::ptr_eq(w, writer)) {
            writers.remove(stream);
        }
    }
}

impl StreamWriter {
    /// The partition's producer (the named one of `producer_id`), opened
    /// (again) when missing or broken.
    async fn producer(
        &self,
        log: &PartitionedLog,
        partition: usize,
        producer_id: Option<&str>,
    ) -> Result<Arc<PartitionProducer>> {
        let Some(producer_id) = producer_id else {
            let mut slot = self.producers[partition].lock().await;
            if let Some(producer) = slot.as_ref().filter(|p| !p.is_closed()) {
                return Ok(producer.clone());
            }
            let producer = Arc::new(self.open(log, partition, None).await?);
            *slot = Some(producer.clone());
            return Ok(producer);
        };
        // Held while opening: a second producer under the same name would
        // take over the broker's publisher and race this one.
        let mut named = self.named.lock().await;
        let key = (producer_id.to_owned(), partition);
        if let Some(producer) = named.get(&key).filter(|p| !p.is_closed()) {
            return Ok(producer.clone());
        }
        let producer = Arc::new(self.open(log, partition, Some(producer_id)).await?);
        named.insert(key, producer.clone());
        Ok(producer)
    }

    async fn open(
        &self,
        log: &PartitionedLog,
        partition: usize,
        name: Option<&str>,
    ) -> Result<PartitionProducer> {
        let stream = &self.partitions[partition];
        let placement = log
            .broker
            .placements(std::slice::from_ref(stream))
            .await?
            .remove(0);
        PartitionProducer::open(&log.broker, stream, &placement.leader, name).await
    }

    async fn close(&self) {
        let mut producers: Vec<Arc<PartitionProducer>> =
            self.named.lock().await.drain().map(|(_, p)| p).collect();
        for slot in &self.producers {
            producers.extend(slot.lock().await.take());
        }
        join_all(producers.iter().map(|p| p.close())).await;
    }
}
