//! The partitioned log: partlog's core operations, free of any transport.
//!
//! [`PartitionedLog`] is the one entry point of the gRPC edge. Each
//! operation validates its request, looks the stream up (the broker's cached
//! [`SuperStream`]) and hands the work to the module that owns it:
//!
//! - [`read`]: `Read`, a bounded read of one partition, with readers kept
//!   between the calls of a read loop ([`warm_readers`]);
//! - [`publish`]: the write path — routing under [`lease`]s, per-partition
//!   producers, submitted batches; [`source`]: outputs of a group's inputs
//!   written exactly once, and their commits;
//! - [`resize`]: ResizeStream, growing a stream behind a write fence, and
//!   [`epochs`]: the epoch markers it leaves, which readers are told of
//!   and groups cross in order;
//! - [`subscribe`]: tailing partitions, alone or as a single active
//!   consumer of a group, with [`position`] turning start positions into
//!   broker offsets; [`consume`] hands a subscription to one call within
//!   the client's credit and answers the member's commits in their order
//!   (both `Subscribe` and `Consume`);
//! - [`listing`]: ListStreams, the streams a page at a time;
//! - [`groups`]: Commit, ResetOffsets, GetOffsets and ListGroups over
//!   [`committed`] offsets (this instance's store mirrored to the broker)
//!   and the [`members`] the broker made active here;
//! - [`lag`]: the group offset gauges, refreshed in the background;
//! - [`shutdown`]: the signal that ends subscriptions when partlog stops.
//!
//! None of them calls back into the log: they get the broker handle and
//! the shared pieces they need, so every path goes server → log → broker.

mod committed;
mod consume;
mod epochs;
mod groups;
pub(crate) mod lag;
mod lease;
mod listing;
mod members;
mod position;
mod publish;
mod read;
mod resize;
mod shutdown;
mod source;
mod subscribe;
mod warm_readers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::broker::bounds::{partition_bounds, Bounds};
use crate::broker::{Broker, Epoch, Node, StreamSettings, SuperStream};
use crate::config::{Fallback, Limits};
use crate::error::{Error, Kind, Reason, Result};
use crate::offsets::{Committed, OffsetStore};
use crate::record::{NewRecord, RecordFilter};
use crate::validate;
use committed::CommittedOffsets;
use consume::{Committer, Session};
use epochs::History;
use groups::{Groups, PARTITIONS_ASKED_AT_ONCE};
use lease::RoutingLeases;
use members::ActiveMembers;
use publish::Writers;
use resize::Resize;
use shutdown::Shutdown;
use subscribe::{Budget, SubscribeRequest, Subscribers};
use warm_readers::WarmReaders;

pub(crate) use committed::OffsetSource;
pub(crate) use consume::{ClientInput, ConsumeEvent, Credit};
pub(crate) use epochs::EpochMarker;
pub(crate) use groups::{PartitionMembers, PartitionOffsets};
pub(crate) use listing::{ListStreams, StreamPage};
pub(crate) use position::StartPosition;
pub(crate) use publish::{Appended, ProducerId, SubmittedBatch};
pub(crate) use read::{ReadRecords, ReadRequest};
pub(crate) use source::{Output, Source, SourceCommits};
pub(crate) use subscribe::AssignmentState;

/// The events of a `Subscribe` or `Consume` call; an error is the last.
pub(crate) type ConsumeEvents = mpsc::Receiver<Result<ConsumeEvent>>;

/// What the first request of a `Consume` call asks for.
#[derive(Debug, Clone)]
pub struct ConsumeOpen {
    pub stream: String,
    pub group: Option<String>,
    /// Partition indexes; empty means all.
    pub partitions: Vec<u32>,
    pub start: Option<StartPosition>,
    pub credit: Credit,
    /// Only the records it keeps; `None`: every record.
    pub filter: Option<RecordFilter>,
}

/// Events a session may have on their way to the transport: a few, so
/// that records wait in the session (and its credit) rather than here.
const SESSION_EVENTS: usize = 1;

/// A stream's partitions in routing order, with where each lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    pub stream: String,
    pub partitions: Vec<PartitionDescription>,
    /// The stream's `max_chunk_records` setting.
    pub max_chunk_records: Option<u32>,
    /// The stream's growths, oldest first.
    pub epochs: Vec<Epoch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub index: u32,
    pub stream: String,
    pub leader: Node,
    pub replicas: Vec<Node>,
    /// First retained offset and last record's offset, from the broker;
    /// `None` while the partition holds no records (and while a new
    /// stream is awaited: it holds none).
    pub bounds: Option<Bounds>,
}

/// How often CreateStream looks whether the new partitions run.
const MEMBER_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The log of one partlog process, shared by every call.
pub struct PartitionedLog {
    broker: Arc<Broker>,
    limits: Limits,
    writers: Writers,
    warm_readers: WarmReaders,
    groups: Arc<Groups>,
    subscribers: Arc<Subscribers>,
    committed: Arc<CommittedOffsets>,
    /// Identity of the process in member names, e.g. `127.0.0.1:50051`.
    instance: String,
    next_member: AtomicU64,
    shutdown: Shutdown,
}

impl PartitionedLog {
    pub fn new(
        broker: Broker,
        limits: Limits,
        store: OffsetStore,
        fallback: Fallback,
        instance: String,
    ) -> Self {
        let broker = Arc::new(broker);
        let lease = Duration::from_millis(broker.connector().config().routing_lease_ms);
        let leases = Arc::new(RoutingLeases::new(broker.clone(), lease));
        let committed = Arc::new(CommittedOffsets::new(store, broker.clone()));
        let members = Arc::new(ActiveMembers::default());
        let shutdown = Shutdown::default();
        PartitionedLog {
            groups: Arc::new(Groups::new(
                broker.clone(),
                committed.clone(),
                members.clone(),
            )),
            subscribers: Arc::new(Subscribers {
                broker: broker.clone(),
                committed: committed.clone(),
                members,
                shutdown: shutdown.clone(),
                fallback,
            }),
            writers: Writers::new(leases),
            warm_readers: WarmReaders::new(),
            broker,
            limits,
            committed,
            instance,
            next_member: AtomicU64::new(1),
            shutdown,
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub async fn create_stream(
        &self,
        stream: &str,
        partitions: u32,
        settings: &StreamSettings,
    ) -> Result<StreamDescription> {
        validate::partition_count(partitions)?;
        validate::created_stream_name(stream, partitions, &self.broker.connector().config().vhost)?;
        if settings.replicas == Some(0) {
            return Err(Error::field(
                Reason::ValueOutOfRange,
                "replicas",
                "replicas must be at least 1 (the leader) when set",
            ));
        }
        if settings.max_age.is_some_and(|age| age.as_secs() == 0) {
            return Err(Error::field(
                Reason::ValueOutOfRange,
                "retention.max_age",
                "retention.max_age must be at least one second when set",
            ));
        }
        self.broker
            .create_super_stream(stream, partitions, settings)
            .await?;
        let mut description = self.await_members(stream, settings.replicas).await?;
        if let Some(records) = settings.max_chunk_records {
            let streams: Vec<String> = description
                .partitions
                .iter()
                .map(|p| p.stream.clone())
                .collect();
            self.broker.set_max_chunk_records(&streams, records).await?;
            description.max_chunk_records = Some(records);
        }
        Ok(description)
    }

    /// The new stream's description once every partition has a leader and
    /// the `replicas` asked for (the broker starts them asynchronously after
    /// answering the create), or as it is when the request timeout is up.
    ///
    /// A partition without a leader by then is taken as one that cannot
    /// start (its writer failed, e.g. on the broker's file system): the
    /// stream is deleted again, and the answer is FAILED_PRECONDITION, not
    /// a code that invites retrying what cannot work.
    async fn await_members(
        &self,
        stream: &str,
        replicas: Option<u32>,
    ) -> Result<StreamDescription> {
        let followers = replicas.map_or(0, |n| n as usize - 1);
        let deadline = tokio::time::Instant::now() + self.broker.connector().timeout();
        loop {
            let described = match self.describe_placements(stream).await {
                Ok(d) => self.writers_answer(&d).await.map(|()| d),
                failed => failed,
            };
            let running = matches!(&described, Ok(d)
                if d.partitions.iter().all(|p| p.replicas.len() >= followers));
            if running || tokio::time::Instant::now() >= deadline {
                return match described {
                    Err(e) if e.kind() == Kind::Unavailable => {
                        Err(self.abandon_create(stream, e.message()).await)
                    }
                    other => other,
                };
            }
            tokio::time::sleep(MEMBER_POLL_INTERVAL).await;
        }
    }

    /// Every partition's writer answers: the metadata names a leader as
    /// soon as the broker picked one, also while its writer fails to start.
    async fn writers_answer(&self, description: &StreamDescription) -> Result<()> {
        for partition in &description.partitions {
            self.broker.stream_stats(&partition.stream).await?;
        }
        Ok(())
    }

    /// Deletes a stream whose partitions did not start and says why, and
    /// what is left if the deletion failed too.
    async fn abandon_create(&self, stream: &str, why: &str) -> Error {
        let timeout = self.broker.connector().timeout();
        let cause = format!(
            "the broker created stream {stream:?} but could not start its partitions within \
             {timeout:?} ({why})"
        );
        tracing::warn!(stream, %why, "partitions of a new stream did not start; deleting it");
        match self.broker.delete_super_stream(stream).await {
            Err(e) if e.kind() != Kind::NotFound => Error::new(
                Reason::StreamNotStarted,
                format!(
                    "{cause}, and deleting it failed ({e}): the super stream and its partition \
                     streams \"{stream}-0\".. are left on the broker; delete them with \
                     DeleteStream or `rabbitmq-streams delete_super_stream {stream}`"
                ),
            ),
            _ => Error::new(
                Reason::StreamNotStarted,
                format!(
                    "{cause}; partlog deleted it again. The broker's log says why (e.g. its file \
                     system refused the partitions' data directories); retry once that is fixed"
                ),
            ),
        }
    }

    pub async fn delete_stream(&self, stream: &str) -> Result<()> {
        validate::stream_name(stream)?;
        let result = self.broker.delete_super_stream(stream).await;
        self.writers.remove(stream).await;
        if !matches!(&result, Err(e) if e.kind() != Kind::NotFound) {
            crate::telemetry::forget_stream(stream);
        }
        result
    }

    /// Grows `stream` to `partitions` partitions, keeping every key's
    /// order (see [`resize`]); the grown stream's description.
    pub async fn resize_stream(&self, stream: &str, partitions: u32) -> Result<StreamDescription> {
        let resize = Resize {
            broker: &self.broker,
            warm_readers: &self.warm_readers,
            leases: self.writers.leases(),
        };
        resize.run(stream, partitions).await?;
        self.describe_stream(stream).await
    }

    /// The stream's partitions with where they live, their bounds and the
    /// stream's growths.
    pub async fn describe_stream(&self, stream: &str) -> Result<StreamDescription> {
        let mut description = self.describe_placements(stream).await?;
        let super_stream = self.broker.super_stream(stream).await?;
        description.epochs = History::load(&self.broker, &super_stream).await?.epochs;
        // One reader round trip to each partition's leader; many partitions
        // are asked at once.
        let partitions = &super_stream.partitions;
        let bounds: Vec<Option<Bounds>> = futures::stream::iter(0..partitions.len())
            .map(|index| async move { partition_bounds(&self.broker, &partitions[index]).await })
            .buffered(PARTITIONS_ASKED_AT_ONCE)
            .try_collect()
            .await?;
        for (partition, bounds) in description.partitions.iter_mut().zip(bounds) {
            partition.bounds = bounds;
        }
        Ok(description)
    }

    /// The stream's partitions with where they live, without their bounds
    /// (which take a reader round trip each).
    async fn describe_placements(&self, stream: &str) -> Result<StreamDescription> {
        validate::stream_name(stream)?;
        let super_stream = self.broker.super_stream_now(stream).await?;
        let streams: Vec<String> = super_stream
            .partitions
            .iter()
            .map(|p| p.stream.clone())
            .collect();
        let placements = self.broker.placements(&streams).await?;
        // Set on every partition alike at creation.
        let max_chunk_records = match streams.first() {
            Some(first) => self.broker.max_chunk_records(first).await?,
            None => None,
        };
        Ok(StreamDescription {
            stream: stream.to_owned(),
            max_chunk_records: max_chunk_records.map(|n| n as u32),
            epochs: Vec::new(),
            partitions: super_stream
                .partitions
                .iter()
                .zip(placements)
                .map(|(partition, placement)| PartitionDescription {
                    index: partition.index,
                    stream: partition.stream.clone(),
                    leader: placement.leader,
                    replicas: placement.replicas,
                    bounds: None,
                })
                .collect(),
        })
    }

    /// A page of the virtual host's streams that `visible` lets the caller
    /// see; see [`listing`].
    pub async fn list_streams(
        &self,
        request: &ListStreams,
        visible: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<StreamPage> {
        listing::list(&self.broker, request, visible).await
    }

    pub async fn read(&self, request: ReadRequest) -> Result<ReadRecords> {
        validate::stream_name(&request.stream)?;
        let range = request.range(&self.limits)?;
        let stream = self
            .stream_with(&request.stream, &[request.partition])
            .await?;
        let index = validate::partition(request.partition, stream.partitions.len(), &stream.name)?;
        let partition = &stream.partitions[index];
        let read = match request.filter {
            None => read::read(&self.broker, &self.warm_readers, partition, range).await?,
            Some(filter) => {
                let filter =
                    filter.with_epoch_markers(self.broker.routing(&stream).await?.is_some());
                read::read_filtered(&self.broker, partition, range, Arc::new(filter)).await?
            }
        };
        crate::telemetry::stream(&stream.name).delivered(&read.records);
        Ok(read)
    }

    /// Validates, routes and queues the records on their partitions'
    /// producers; [`SubmittedBatch::outcome`] answers for each. Batches
    /// submitted one after the other are written in that order. With a
    /// `producer_id`, records go through that producer's deduplicating
    /// publishers and a sequence stored before is reported as a duplicate
    /// instead of being written again.
    /// Validates and queues a batch; `producer` names its producer id and
    /// the owner the id belongs to (see [`publish::producer_name`]).
    pub async fn submit(
        &self,
        stream: &str,
        producer: Option<ProducerId<'_>>,
        records: Vec<NewRecord>,
    ) -> Result<SubmittedBatch> {
        validate::stream_name(stream)?;
        validate::publish_batch(&records, &self.limits)?;
        validate::producer_sequences(producer.map(|p| p.id), &records)?;
        let name = producer.map(publish::producer_name);
        self.writers
            .submit(&self.broker, stream, name.as_deref(), records)
            .await
    }

    /// Validates and queues outputs of a group's inputs: `records`, each
    /// the output `outputs[i]` of an input of `source`, go through the
    /// source's deduplicating producer for `stream` (its `owner`'s, as a
    /// producer id is), so that an output stored before is reported as a
    /// duplicate instead of being written again (see [`source`]).
    pub async fn submit_outputs(
        &self,
        stream: &str,
        source: &Source,
        owner: Option<&str>,
        mut records: Vec<NewRecord>,
        outputs: &[Output],
    ) -> Result<SubmittedBatch> {
        validate::stream_name(stream)?;
        validate::publish_batch(&records, &self.limits)?;
        if outputs.len() != records.len() {
            return Err(Error::new(
                Reason::Internal,
                "a source batch without one output per record",
            ));
        }
        source.number(&mut records, outputs)?;
        if source.commit_offset.is_some() {
            // A commit that cannot be made is refused before anything is
            // written, not after.
            let named = [source.partition];
            self.group_stream(&source.stream, &source.group, &named)
                .await?;
        }
        let id = source.producer_id(stream);
        let name = publish::producer_name(ProducerId { id: &id, owner });
        self.writers
            .submit(&self.broker, stream, Some(&name), records)
            .await
    }

    /// Each record's outcome of a submitted batch, in request order.
    pub async fn outcome(&self, batch: SubmittedBatch) -> Vec<Appended> {
        batch.outcome(&self.writers, &self.broker).await
    }

    /// Commits the `commit_offset` of a source batch answered with
    /// `results`, once it and every earlier batch of the source in the call
    /// (`commits`, awaited in the batches' order) were stored; `None`
    /// without a commit_offset.
    pub async fn commit_source(
        &self,
        commits: &mut SourceCommits,
        source: &Source,
        results: &[Appended],
    ) -> Option<Result<Committed>> {
        let offset = match commits.decide(source, results) {
            Ok(offset) => offset?,
            Err(e) => return Some(Err(e)),
        };
        let offsets = BTreeMap::from([(source.partition, offset)]);
        let committed = self.commit(&source.stream, &source.group, &offsets).await;
        Some(committed.and_then(|all| {
            all.into_iter()
                .next()
                .ok_or_else(|| Error::new(Reason::Internal, "a commit answered nothing"))
        }))
    }

    /// Tails partitions as a `Subscribe` call: no credit, paced by the
    /// transport, at most `window` records buffered (0: the default).
    pub async fn subscribe(
        &self,
        stream: &str,
        group: Option<&str>,
        partitions: &[u32],
        start: Option<StartPosition>,
        window: u32,
        filter: Option<RecordFilter>,
    ) -> Result<ConsumeEvents> {
        let window = validate::amount(
            "window",
            window,
            self.limits.default_window,
            self.limits.max_window,
            "limits.max_window",
        )?;
        let open = ConsumeOpen {
            stream: stream.to_owned(),
            group: group.map(str::to_owned),
            partitions: partitions.to_vec(),
            start,
            credit: Credit::UNLIMITED,
            filter,
        };
        self.start_session(
            open,
            Budget::Records(window as usize),
            futures::stream::pending(),
        )
        .await
    }

    /// Consumes partitions as a `Consume` call: records within the
    /// client's credit, commits acknowledged in line; see [`consume`]. The
    /// client's further requests come as `inputs`.
    pub async fn consume<I>(&self, open: ConsumeOpen, inputs: I) -> Result<ConsumeEvents>
    where
        I: futures::Stream<Item = Result<ClientInput>> + Unpin + Send + 'static,
    {
        if open.credit.records.is_none_or(|records| records == 0) {
            return Err(Error::field(
                Reason::RequestOutOfOrder,
                "credit_records",
                "the first request grants no credit: set credit_records (and credit_bytes to \
                 limit bytes too) to how many records the client can take",
            ));
        }
        // A chunk per partition on the way to the session at most: with the
        // chunk a partition task holds, two chunks per partition beyond the
        // client's credit.
        let budget = Budget::Chunks(open.partitions.len().max(1));
        self.start_session(open, budget, inputs).await
    }

    /// Validates the request, starts the subscription and the session
    /// reading it; returns the session's events.
    async fn start_session<I>(
        &self,
        open: ConsumeOpen,
        budget: Budget,
        inputs: I,
    ) -> Result<ConsumeEvents>
    where
        I: futures::Stream<Item = Result<ClientInput>> + Unpin + Send + 'static,
    {
        validate::stream_name(&open.stream)?;
        if let Some(group) = &open.group {
            validate::group_name(group)?;
        }
        let start = open.start.unwrap_or(if open.group.is_some() {
            StartPosition::Committed
        } else {
            StartPosition::Next
        });
        start.check(open.group.as_deref())?;
        let stream = self.stream_with(&open.stream, &open.partitions).await?;
        let partitions =
            validate::partition_selection(&open.partitions, stream.partitions.len(), &stream.name)?;
        let budget = match budget {
            // All partitions when the request named none.
            Budget::Chunks(_) => Budget::Chunks(partitions.len()),
            records => records,
        };
        let member = format!(
            "{}#{}",
            self.instance,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let request = SubscribeRequest {
            group: open.group.clone(),
            partitions,
            start,
            budget,
            filter: match open.filter {
                // Group members cross epochs at the markers; other readers
                // are told of them once the stream grew (or grows now).
                Some(filter) => {
                    let markers =
                        open.group.is_some() || self.broker.routing(&stream).await?.is_some();
                    Some(Arc::new(filter.with_epoch_markers(markers)))
                }
                None => None,
            },
            grows: open.partitions.is_empty(),
        };
        let subscription = self.subscribers.start(stream.clone(), request, member);
        let metrics = crate::telemetry::stream(&stream.name);
        let committer = open.group.map(|group| Committer {
            groups: self.groups.clone(),
            stream,
            group,
        });
        let (output, events) = mpsc::channel(SESSION_EVENTS);
        let session = Session::new(
            subscription,
            inputs,
            committer,
            open.credit,
            output,
            metrics,
        );
        // In the call's span: the session's log lines belong to the call.
        tokio::spawn(session.run().in_current_span());
        Ok(events)
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
        let named: Vec<u32> = offsets.keys().copied().collect();
        let stream = self.group_stream(stream, group, &named).await?;
        if offsets.is_empty() {
            return Err(Error::field(
                Reason::FieldRequired,
                "offsets",
                "offsets is empty; name at least one partition",
            ));
        }
        self.groups.commit(&stream, group, offsets).await
    }

    /// Moves a group's positions to `to`, also backwards: the admin reset.
    pub async fn reset_offsets(
        &self,
        stream: &str,
        group: &str,
        selected: &[u32],
        to: StartPosition,
    ) -> Result<Vec<(u32, Option<u64>)>> {
        let stream = self.group_stream(stream, group, selected).await?;
        let selected =
            validate::partition_selection(selected, stream.partitions.len(), &stream.name)?;
        self.groups.reset(&stream, group, &selected, to).await
    }

    /// Committed, first, tail, lag, active member and epoch markers per
    /// partition.
    pub async fn get_offsets(&self, stream: &str, group: &str) -> Result<Vec<PartitionOffsets>> {
        let stream = self.group_stream(stream, group, &[]).await?;
        let mut offsets = self.groups.offsets(&stream, group).await?;
        let history = History::load(&self.broker, &stream).await?;
        for partition in &mut offsets {
            partition.epoch_markers = history.markers_of(partition.partition);
        }
        Ok(offsets)
    }

    /// The group's members on every partition of `stream`, wherever they
    /// are connected (the broker's management API lists them).
    pub async fn describe_group(&self, stream: &str, group: &str) -> Result<Vec<PartitionMembers>> {
        let stream = self.group_stream(stream, group, &[]).await?;
        let mut consumers = self.broker.group_consumers(&stream.name, group).await?;
        consumers.sort_by(|a, b| (!a.active, &a.connection).cmp(&(!b.active, &b.connection)));
        Ok(stream
            .partitions
            .iter()
            .map(|partition| PartitionMembers {
                partition: partition.index,
                members: consumers
                    .iter()
                    .filter(|c| c.partition_stream == partition.stream)
                    .cloned()
                    .collect(),
            })
            .collect())
    }

    /// Groups with offsets in this instance's store or active subscribers
    /// here.
    pub async fn list_groups(&self, stream: &str) -> Result<Vec<String>> {
        validate::stream_name(stream)?;
        self.broker.super_stream(stream).await?;
        self.groups.list(stream)
    }

    /// Validates a group request naming partitions `named` and returns the
    /// stream.
    async fn group_stream(
        &self,
        stream: &str,
        group: &str,
        named: &[u32],
    ) -> Result<Arc<SuperStream>> {
        validate::stream_name(stream)?;
        validate::group_name(group)?;
        let stream = self.stream_with(stream, named).await?;
        validate::partition_selection(named, stream.partitions.len(), &stream.name)?;
        Ok(stream)
    }

    /// The stream, asked of the broker again when the cached one lacks a
    /// partition of `named` (it may have grown since).
    async fn stream_with(&self, name: &str, named: &[u32]) -> Result<Arc<SuperStream>> {
        let stream = self.broker.super_stream(name).await?;
        if named.iter().all(|&p| p < stream.partition_count()) {
            return Ok(stream);
        }
        self.broker.super_stream_now(name).await
    }

    /// Ends every subscription (their calls complete normally) so that a
    /// graceful shutdown does not wait for subscribers to leave.
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
    }

    /// Closes every producer after its queued records were confirmed and
    /// every reader kept for a read loop, then flushes the offset store and
    /// closes the broker connections.
    pub async fn close(&self) {
        self.writers.close().await;
        self.warm_readers.close();
        if let Err(e) = self.committed.flush().await {
            tracing::error!("flushing the offset store failed: {e}");
        }
        self.broker.close().await;
    }
}
