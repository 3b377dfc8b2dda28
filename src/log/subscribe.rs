//! Tailing partitions, alone or as a member of a consumer group.
//!
//! A [`Subscription`] runs one task per partition, each with its own broker
//! subscription ([`ChunkReader`]). With a group, every task subscribes as a
//! *single active consumer* named after the group in super stream mode, so
//! RabbitMQ — not partlog — decides which member reads each partition, also
//! across partlog instances. When the broker makes a task active it asks
//! where to start; the task answers with the group's committed offset + 1
//! (the larger of this instance's store and the broker's stored offset), or
//! the subscriber's explicit start position.
//!
//! Backpressure: all tasks feed one channel, a chunk's records per event,
//! within a [`Budget`] of records or chunks: a task takes its chunk's
//! permits before it sends, and the reader of the subscription gives them
//! back once the records are on their way to the client. A task waiting for
//! permits holds one chunk and gives the broker credit again only once it
//! has sent it, so a stalled client costs at most the budget plus a
//! reader's window per partition (about a MiB, or one chunk when chunks are
//! larger; see [`ChunkReader`]).
//!
//! Assignment events follow the broker's decisions in the order the broker
//! made them: ACTIVE when it activates the member, INACTIVE when it steps
//! the member down or the member's connection breaks (the broker then drops
//! the consumer and may activate another member at once). A member delivers
//! a partition's records only between the two. When the broker steps a
//! member down, the task answers it only once the subscription's reader
//! released the INACTIVE event (see [`Handoff`]) — after the member's
//! commits for the partition were answered — or after the request timeout:
//! the broker activates the next member only then. A step-down is read
//! also while the task waits for room in the budget (a member that takes
//! no records does not hold up the group).
//!
//! The ACTIVE event carries the member's [`Hold`] on the partition: its
//! commits run under it, and the task ends it before the broker may give
//! the partition to another member — a commit either finished before the
//! handoff, and the next member starts after it, or is refused.
//!
//! Epochs: a task never delivers an epoch marker as a record; it tells the
//! subscriber where it was ([`SubscriptionEvent::Marker`]). A group member
//! at its partition's marker waits until the group committed the records
//! it delivered before it, then commits the marker itself; and it delivers
//! a record only once the group crossed every growth the record comes
//! after ([`History::after`]), reading the group's committed offsets of
//! the old partitions from the broker, so members on every instance hold
//! to it. A subscription of all partitions grows with the stream: it looks
//! for new partitions every routing lease (and at once when it passes a
//! marker) and reads each from its first record.
//!
//! Lifetime: the subscription ends when the receiver is dropped (the client
//! went away) or partlog shuts down: every task notices, unsubscribes and
//! closes its connection, and the broker hands its partitions to the
//! group's next member.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::committed::CommittedOffsets;
use super::epochs::{crossed, split_markers, EpochMarker, History};
use super::members::ActiveMembers;
use super::position::{broker_offset, StartPosition};
use super::shutdown::Shutdown;
use crate::broker::{
    Backoff, Broker, Chunk, ChunkReader, Consumer, Node, Partition, ReadFrom, ReaderEvent,
    SuperStream,
};
use crate::config::Fallback;
use crate::error::{Error, Kind, Reason, Result};
use crate::record::{RecordFilter, StoredRecord};

/// What a subscriber receives.
#[derive(Debug)]
pub enum SubscriptionEvent {
    /// Records of one partition in offset order (from one chunk).
    Records {
        partition: u32,
        /// Empty when none of the chunk's records matched the filter.
        records: Vec<StoredRecord>,
        /// With a filter, when the chunk's last records did not match: the
        /// offset after the chunk, read next.
        skipped_to: Option<u64>,
        /// Their share of the subscription's budget, given back on drop.
        budget: OwnedSemaphorePermit,
    },
    /// An epoch marker was passed (it is no record).
    Marker(EpochMarker),
    /// The subscription reads the partitions of `0` now, which grew.
    Grown(Arc<SuperStream>),
    Assignment {
        partition: u32,
        state: AssignmentState,
        /// The offset read next, when the start position names it.
        next_offset: Option<u64>,
        /// Set on the INACTIVE of a step-down: the broker is answered
        /// once it is dropped.
        handoff: Option<Handoff>,
        /// Set on a group member's ACTIVE.
        hold: Option<Hold>,
    },
}

/// Held by the reader of an INACTIVE event that the broker waits for; the
/// partition task answers the broker's step-down once it is dropped.
#[derive(Debug)]
pub struct Handoff {
    _settled: oneshot::Sender<()>,
}

/// A group member's hold on a partition, from the broker's ACTIVE until
/// the partition may have moved. Commits run under it; ending it waits for
/// those running and refuses later ones.
#[derive(Debug, Clone)]
pub struct Hold(Arc<tokio::sync::RwLock<bool>>);

impl Hold {
    fn new() -> Hold {
        Hold(Arc::new(tokio::sync::RwLock::new(true)))
    }

    /// Runs `work` (a commit) while the hold lasts; FAILED_PRECONDITION
    /// once it ended. (A tokio lock: held across the commit's broker
    /// round trip, which `end` waits for.)
    pub async fn run<T>(
        &self,
        partition: u32,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let held = self.0.read().await;
        if !*held {
            return Err(Error::new(
                Reason::PartitionNotHeld,
                format!(
                    "partition {partition} is not held by this member any more: the broker may \
                 have given it to another member, which commits it from now on"
                ),
            ));
        }
        work.await
    }

    /// Ends the hold once the commits running under it finished.
    async fn end(self) {
        *self.0.write().await = false;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentState {
    Active,
    Inactive,
    /// Without a group: reading resumed after a lost broker connection,
    /// after the last delivered record. (A group member is told INACTIVE
    /// when its connection breaks, and ACTIVE when the broker picks it
    /// again.)
    Reattached,
}

/// A validated subscription request.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub group: Option<String>,
    /// Partition indexes, validated against the stream.
    pub partitions: Vec<u32>,
    pub start: StartPosition,
    /// What partlog buffers for the subscriber at most (a chunk more per
    /// partition while a task waits).
    pub budget: Budget,
    /// Only the records it keeps; `None`: every record.
    pub filter: Option<Arc<RecordFilter>>,
    /// The request named no partitions: it reads partitions the stream
    /// grows by too.
    pub grows: bool,
}

/// The unit and size of a subscription's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// At most this many records (a chunk takes as many permits as it has
    /// records, the whole budget at most). At least 1.
    Records(usize),
    /// At most this many chunks, whatever their size.
    Chunks(usize),
}

impl Budget {
    fn permits(self) -> usize {
        match self {
            Budget::Records(n) | Budget::Chunks(n) => n.max(1),
        }
    }

    /// Permits a chunk of `records` records takes.
    fn of(self, records: usize) -> u32 {
        match self {
            Budget::Records(n) => records.min(n.max(1)) as u32,
            Budget::Chunks(_) => 1,
        }
    }
}

/// What partition tasks need of the rest of partlog; one per process.
pub struct Subscribers {
    pub broker: Arc<Broker>,
    pub committed: Arc<CommittedOffsets>,
    pub members: Arc<ActiveMembers>,
    pub shutdown: Shutdown,
    pub fallback: Fallback,
}

/// A running subscription; dropping it ends every partition task.
pub struct Subscription {
    events: mpsc::UnboundedReceiver<Result<SubscriptionEvent>>,
}

impl Subscription {
    /// The next event: records or an assignment; an error is the last
    /// item; `None` once every partition task ended.
    pub async fn next(&mut self) -> Option<Result<SubscriptionEvent>> {
        self.events.recv().await
    }
}

impl Subscribers {
    /// Starts one task per partition of `request` in `stream`, reading as
    /// `member`, and for a request of all partitions the watch for new
    /// ones.
    pub fn start(
        self: &Arc<Self>,
        stream: Arc<SuperStream>,
        request: SubscribeRequest,
        member: String,
    ) -> Subscription {
        // Events are few per chunk: the budget bounds what is buffered.
        let (events, receiver) = mpsc::unbounded_channel();
        let spawner = Arc::new(Spawner {
            subscribers: self.clone(),
            budget: Arc::new(Semaphore::new(request.budget.permits())),
            known: AtomicU32::new(stream.partition_count()),
            grown: tokio::sync::Notify::new(),
            request,
            member,
            events,
        });
        for &index in &spawner.request.partitions {
            spawner.spawn(&stream, index, spawner.request.start, self.fallback);
        }
        if spawner.request.grows {
            tokio::spawn(spawner.clone().watch_growth(stream.name.clone()));
        }
        Subscription { events: receiver }
    }
}

/// What starts a subscription's partition tasks, also those of partitions
/// the stream grows by.
struct Spawner {
    subscribers: Arc<Subscribers>,
    request: SubscribeRequest,
    member: String,
    events: mpsc::UnboundedSender<Result<SubscriptionEvent>>,
    budget: Arc<Semaphore>,
    /// Partitions read (all of the stream's when the subscription grows).
    known: AtomicU32,
    /// A task passed a marker: look for new partitions now.
    grown: tokio::sync::Notify,
}

impl Spawner {
    fn spawn(
        self: &Arc<Self>,
        stream: &Arc<SuperStream>,
        index: u32,
        start: StartPosition,
        fallback: Fallback,
    ) {
        let span = tracing::info_span!(
            "partition",
            stream = %stream.name,
            partition = index,
            member = %self.member
        );
        let task = PartitionTask {
            subscribers: self.subscribers.clone(),
            spawner: self.clone(),
            stream: stream.clone(),
            index: index as usize,
            group: self.request.group.clone(),
            start,
            fallback,
            filter: self.request.filter.clone(),
            member: self.member.clone(),
            events: self.events.clone(),
            budget: self.budget.clone(),
            unit: self.request.budget,
        };
        tokio::spawn(task.run().instrument(span));
    }

    /// Reads the partitions the stream grows by, each from its first record
    /// (a group's committed offset), until the subscriber leaves.
    async fn watch_growth(self: Arc<Self>, name: String) {
        let broker = &self.subscribers.broker;
        let every = Duration::from_millis(broker.connector().config().routing_lease_ms);
        loop {
            tokio::select! {
                () = self.events.closed() => return,
                () = self.subscribers.shutdown.wait() => return,
                () = tokio::time::sleep(every) => {}
                () = self.grown.notified() => {}
            }
            let Ok(stream) = broker.super_stream_now(&name).await else {
                continue;
            };
            let known = self.known.load(Ordering::Acquire);
            let count = stream.partition_count();
            if count <= known {
                continue;
            }
            self.known.store(count, Ordering::Release);
            if self
                .events
                .send(Ok(SubscriptionEvent::Grown(stream.clone())))
                .is_err()
            {
                return;
            }
            let start = match self.request.start {
                StartPosition::Committed => StartPosition::Committed,
                _ => StartPosition::First,
            };
            for index in known..count {
                self.spawn(&stream, index, start, Fallback::First);
            }
        }
    }
}

/// How long a task waits for the broker before it looks again whether its
/// connection is still open.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// How often a group member waiting at an epoch barrier looks at the
/// group's committed offsets again.
const BARRIER_POLL: Duration = Duration::from_millis(100);

/// One partition of a subscription.
struct PartitionTask {
    subscribers: Arc<Subscribers>,
    spawner: Arc<Spawner>,
    stream: Arc<SuperStream>,
    index: usize,
    group: Option<String>,
    start: StartPosition,
    /// Where `Committed` starts without a commit.
    fallback: Fallback,
    filter: Option<Arc<RecordFilter>>,
    member: String,
    events: mpsc::UnboundedSender<Result<SubscriptionEvent>>,
    budget: Arc<Semaphore>,
    unit: Budget,
}

/// What a partition task knows across reconnections.
#[derive(Default)]
struct Progress {
    /// Offset of the last record handed to the subscriber, or with a
    /// filter of the last one it was told it skipped.
    delivered: Option<u64>,
    /// Without a group: the connection broke, the next attachment is a
    /// re-attachment (REATTACHED), reading on after `delivered`.
    reattaching: bool,
    /// In a group: the subscriber was told ACTIVE and not INACTIVE since,
    /// and holds the partition with this. Records are delivered only while
    /// it holds the partition.
    held: Option<Hold>,
    /// Offsets below this were delivered already or lie before the start.
    next_offset: u64,
    /// In a group: the stream's growths as last read from the broker, and
    /// how many of them the group is known to have crossed.
    epochs: Option<(Arc<SuperStream>, History)>,
    crossed: usize,
}

/// A run of a chunk's records, or the epoch marker after it.
enum Part {
    /// Records in offset order, and the offset of the last one read
    /// (filtered out or not).
    Records(Vec<StoredRecord>, u64),
    Marker(EpochMarker),
}

/// A chunk's records cut at its epoch markers.
fn parts(mut records: Vec<StoredRecord>) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut markers = split_markers(&mut records).into_iter().peekable();
    let mut records = records.into_iter().peekable();
    loop {
        let before = markers.peek().map_or(u64::MAX, |m| m.offset);
        let mut run = Vec::new();
        while let Some(record) = records.next_if(|r| r.offset < before) {
            run.push(record);
        }
        if let Some(last) = run.last().map(|r| r.offset) {
            parts.push(Part::Records(run, last));
        }
        match markers.next() {
            Some(marker) => parts.push(Part::Marker(marker)),
            None => return parts,
        }
    }
}

impl PartitionTask {
    fn partition(&self) -> &Partition {
        &self.stream.partitions[self.index]
    }

    /// Reads until the subscriber leaves. A broken broker connection is
    /// re-established with capped exponential backoff and reading resumes;
    /// other errors end the subscription.
    async fn run(self) {
        let mut progress = Progress::default();
        // Retries for as long as the subscriber stays.
        let mut backoff = Backoff::default();
        let result = loop {
            match self.read(&mut progress).await {
                Err(why) if why.kind() == Kind::Unavailable && !self.events.is_closed() => {
                    if !progress.reattaching {
                        // Attached since the last failure: back off anew.
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    crate::telemetry::stream(&self.stream.name).subscription_reconnected();
                    tracing::warn!(
                        %why,
                        "subscription lost its broker connection; reconnecting in {delay:?}"
                    );
                    // The broker dropped the consumer with its connection and
                    // may make another member active at once: the subscriber
                    // holds the partition no longer.
                    let (delivering, hold) = self.let_go(&mut progress, None).await;
                    if let Some(hold) = hold {
                        hold.end().await;
                    }
                    if !delivering {
                        break Ok(());
                    }
                    progress.reattaching = true;
                    tokio::select! {
                        () = self.ended() => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                other => break other,
            }
        };
        if let Some(hold) = progress.held.take() {
            self.set_active_member(false);
            hold.end().await;
        }
        if let Err(e) = result {
            // The subscriber may be gone already; then nobody listens.
            let _ = self.events.send(Err(e));
        }
    }

    /// One attachment to the partition's leader, until the subscriber
    /// leaves or the connection fails.
    async fn read(&self, progress: &mut Progress) -> Result<()> {
        let leader = self.subscribers.broker.leader(self.partition()).await?;
        let mut reader = match &self.group {
            None => self.attach_alone(&leader, progress).await?,
            Some(group) => self.join_group(group, &leader).await?,
        };
        let result = self.pump(&mut reader, progress).await;
        reader.close();
        result
    }

    /// Without a group: reads from the start position, or after the last
    /// record delivered once the connection broke; tells the subscriber
    /// ACTIVE, or REATTACHED after a lost connection.
    async fn attach_alone(&self, leader: &Node, progress: &mut Progress) -> Result<ChunkReader> {
        let (spec, start) = match progress.delivered {
            Some(last) => {
                let next = last.saturating_add(1);
                (ReadFrom::Offset(next), Some(next))
            }
            None => broker_offset(self.start, None, self.fallback),
        };
        let reader = self
            .subscribers
            .broker
            .readers()
            .open(
                self.partition(),
                leader,
                spec,
                Consumer::Alone,
                self.filter.clone(),
            )
            .await?;
        progress.next_offset = start.unwrap_or(0);
        let state = if std::mem::take(&mut progress.reattaching) {
            AssignmentState::Reattached
        } else {
            AssignmentState::Active
        };
        // A subscriber gone meanwhile is noticed by the pump.
        self.send(self.assignment(state, start)).await;
        Ok(reader)
    }

    /// In a group: registers a single active consumer named after the
    /// group; the broker activates it (or not) with a consumer update.
    async fn join_group(&self, group: &str, leader: &Node) -> Result<ChunkReader> {
        // The offset is ignored by the broker until it makes this consumer
        // active; the answer to that update decides.
        let member = Consumer::Member {
            group,
            member: &self.member,
        };
        self.subscribers
            .broker
            .readers()
            .open(
                self.partition(),
                leader,
                ReadFrom::Next,
                member,
                self.filter.clone(),
            )
            .await
    }

    /// Moves records from the broker to the subscriber until the subscriber
    /// leaves or the connection fails.
    async fn pump(&self, reader: &mut ChunkReader, progress: &mut Progress) -> Result<()> {
        loop {
            let event = tokio::select! {
                () = self.ended() => return Ok(()),
                event = reader.next_event(Instant::now() + IDLE_CHECK) => event?,
            };
            let delivering = match event {
                None if reader.is_closed() => {
                    return Err(Error::new(
                        Reason::BrokerUnavailable,
                        "the reading connection closed",
                    ))
                }
                None => true,
                Some(ReaderEvent::Chunk(chunk)) => self.deliver(reader, &chunk, progress).await?,
                Some(ReaderEvent::ConsumerUpdate {
                    active,
                    correlation_id,
                }) => {
                    self.consumer_update(reader, active, correlation_id, progress)
                        .await?
                }
            };
            if !delivering {
                return Ok(());
            }
        }
    }

    /// Hands a chunk's records to the subscriber, within the budget, and
    /// passes its epoch markers. False when the subscriber is gone. A group
    /// member waiting for room or at an epoch barrier reads the broker's
    /// consumer updates meanwhile: stepped down, it drops the chunk.
    async fn deliver(
        &self,
        reader: &mut ChunkReader,
        chunk: &Chunk,
        progress: &mut Progress,
    ) -> Result<bool> {
        if self.group.is_some() && progress.held.is_none() {
            // Sent before the broker made us inactive; the new active
            // member reads it from the committed offset.
            return Ok(true);
        }
        let partition = self.partition();
        partition.saw_record(chunk.last_offset());
        let records: Vec<StoredRecord> = chunk.records(partition, progress.next_offset)?.collect();
        for part in parts(records) {
            let delivering = match part {
                Part::Records(records, last_read) => {
                    self.deliver_records(reader, records, last_read, progress)
                        .await?
                }
                Part::Marker(marker) => self.pass_marker(reader, marker, progress).await?,
            };
            if !delivering {
                return Ok(false);
            }
            if self.group.is_some() && progress.held.is_none() {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Hands a run of records (up to `last_read`) to the subscriber.
    async fn deliver_records(
        &self,
        reader: &mut ChunkReader,
        mut records: Vec<StoredRecord>,
        last_read: u64,
        progress: &mut Progress,
    ) -> Result<bool> {
        let Some(first) = records.first().map(|r| r.offset) else {
            return Ok(true);
        };
        if self.group.is_some() {
            if !self.cross_epochs(reader, first, progress).await? {
                return Ok(false);
            }
            if progress.held.is_none() {
                return Ok(true);
            }
        }
        if let Some(filter) = &self.filter {
            records.retain(|record| filter.keeps(record));
        }
        let last_kept = records.last().map(|r| r.offset);
        let skipped_to = (last_kept != Some(last_read)).then(|| last_read.saturating_add(1));
        // A chunk of nothing but skipped records takes a permit too: a
        // client that stops reading stops the broker also when nothing
        // matches.
        let permits = self.unit.of(records.len().max(1));
        let budget = loop {
            tokio::select! {
                permit = self.budget.clone().acquire_many_owned(permits) => match permit {
                    Ok(permit) => break permit,
                    Err(_) => return Ok(false),
                },
                () = self.ended() => return Ok(false),
                // No credit is given back meanwhile: the chunks of the
                // window wait in the reader, and a consumer update or a
                // failure is what can end the wait.
                update = reader.next_held(), if self.group.is_some() => {
                    let (active, correlation_id) = update?;
                    if !self.consumer_update(reader, active, correlation_id, progress).await? {
                        return Ok(false);
                    }
                    if progress.held.is_none() {
                        return Ok(true);
                    }
                }
            }
        };
        let event = SubscriptionEvent::Records {
            partition: self.partition().index,
            records,
            skipped_to,
            budget,
        };
        if !self.send(event).await {
            return Ok(false);
        }
        progress.next_offset = last_read.saturating_add(1);
        progress.delivered = Some(last_read);
        Ok(true)
    }

    /// Tells the subscriber of an epoch marker and makes the subscription
    /// look for the partitions it added. A group member then waits until
    /// the group committed what it delivered before the marker, and
    /// commits the marker.
    async fn pass_marker(
        &self,
        reader: &mut ChunkReader,
        marker: EpochMarker,
        progress: &mut Progress,
    ) -> Result<bool> {
        self.spawner.grown.notify_one();
        if !self.send(SubscriptionEvent::Marker(marker)).await {
            return Ok(false);
        }
        let delivered_before = progress.delivered;
        progress.next_offset = marker.offset.saturating_add(1);
        progress.delivered = Some(marker.offset);
        let Some(group) = &self.group else {
            return Ok(true);
        };
        let _waiting = EpochWait::new(&self.stream.name, group);
        // The group's commits of what was delivered before the marker.
        if let Some(delivered) = delivered_before {
            while self.committed(self.partition()).await? < Some(delivered) {
                if !self.pause(reader, progress).await? {
                    return Ok(false);
                }
                if progress.held.is_none() {
                    return Ok(true);
                }
            }
        }
        // The marker as recorded (a resize repeated may have appended two).
        let recorded = loop {
            let (_, history) = self.epochs(progress, true).await?;
            let recorded = history
                .growth_to(marker.change.to)
                .and_then(|epoch| epoch.markers.get(self.index).copied());
            if let Some(recorded) = recorded {
                break recorded;
            }
            if !self.pause(reader, progress).await? {
                return Ok(false);
            }
            if progress.held.is_none() {
                return Ok(true);
            }
        };
        self.commit_marker(recorded.max(marker.offset), progress)
            .await?;
        Ok(true)
    }

    /// Waits until the group crossed every growth a record of this
    /// partition at `offset` comes after. False when the subscriber is
    /// gone; a step-down leaves `progress.held` empty.
    async fn cross_epochs(
        &self,
        reader: &mut ChunkReader,
        offset: u64,
        progress: &mut Progress,
    ) -> Result<bool> {
        let index = self.partition().index;
        let mut reload = false;
        let mut waiting = None;
        loop {
            let (stream, history) = self.epochs(progress, reload).await?;
            if history.covers(index) {
                let need = history.after(index, offset);
                if progress.crossed >= need {
                    return Ok(true);
                }
                let epoch = history.epochs[progress.crossed].clone();
                if index < epoch.from {
                    // Read past the partition's marker without passing it:
                    // the member started after it.
                    let marker = epoch.markers[self.index];
                    if self.committed(self.partition()).await? < Some(marker) {
                        self.commit_marker(marker, progress).await?;
                    }
                }
                let mut committed = Vec::with_capacity(epoch.markers.len());
                for partition in stream.partitions.iter().take(epoch.from as usize) {
                    committed.push(self.committed(partition).await?);
                }
                if crossed(&epoch, &committed) {
                    progress.crossed += 1;
                    continue;
                }
            }
            // Not there yet: a partition being added, or a group still
            // committing old records.
            if waiting.is_none() {
                let group = self.group.as_deref().unwrap_or_default();
                waiting = Some(EpochWait::new(&self.stream.name, group));
            }
            if !self.pause(reader, progress).await? {
                return Ok(false);
            }
            if progress.held.is_none() {
                return Ok(true);
            }
            reload = true;
        }
    }

    /// The stream's growths, read from the broker when `reload` or never
    /// read before.
    async fn epochs(
        &self,
        progress: &mut Progress,
        reload: bool,
    ) -> Result<(Arc<SuperStream>, History)> {
        if reload || progress.epochs.is_none() {
            let broker = &self.subscribers.broker;
            let stream = broker.super_stream_now(&self.stream.name).await?;
            let history = History::load(broker, &stream).await?;
            progress.epochs = Some((stream, history));
        }
        progress
            .epochs
            .clone()
            .ok_or_else(|| Error::new(Reason::Internal, "the epochs were not read"))
    }

    /// The group's committed offset in `partition`.
    async fn committed(&self, partition: &Partition) -> Result<Option<u64>> {
        let group = self.group.as_deref().unwrap_or_default();
        let committed = &self.subscribers.committed;
        Ok(committed
            .get(&self.stream.name, group, partition)
            .await?
            .offset)
    }

    /// Commits this partition's epoch marker at `offset` for the group.
    async fn commit_marker(&self, offset: u64, progress: &Progress) -> Result<()> {
        let (Some(group), Some(hold)) = (&self.group, &progress.held) else {
            return Ok(());
        };
        let index = self.partition().index;
        let committed = &self.subscribers.committed;
        hold.run(index, committed.commit(&self.stream, group, index, offset))
            .await
            .map(drop)
    }

    /// Waits a moment at an epoch barrier, reading the broker's consumer
    /// updates meanwhile. False when the subscriber is gone.
    async fn pause(&self, reader: &mut ChunkReader, progress: &mut Progress) -> Result<bool> {
        tokio::select! {
            () = tokio::time::sleep(BARRIER_POLL) => Ok(true),
            () = self.ended() => Ok(false),
            update = reader.next_held() => {
                let (active, correlation_id) = update?;
                self.consumer_update(reader, active, correlation_id, progress).await
            }
        }
    }

    /// The broker made this group member active (it answers where to
    /// start) or inactive. False when the subscriber is gone.
    async fn consumer_update(
        &self,
        reader: &ChunkReader,
        active: bool,
        correlation_id: u32,
        progress: &mut Progress,
    ) -> Result<bool> {
        if !active {
            tracing::debug!("inactive");
            // The member's work on the partition is settled before the
            // broker hands it on.
            let (handoff, settled) = oneshot::channel();
            let (delivering, hold) = self
                .let_go(progress, Some(Handoff { _settled: handoff }))
                .await;
            let timeout = self.subscribers.broker.connector().timeout();
            let _ = tokio::time::timeout(timeout, settled).await;
            // Settled, or the subscriber did not take the INACTIVE in
            // time: commits from now on are refused.
            if let Some(hold) = hold {
                hold.end().await;
            }
            reader.answer_update(correlation_id, ReadFrom::Next).await?;
            return Ok(delivering);
        }
        let committed = match (self.start, &self.group) {
            (StartPosition::Committed, Some(group)) => {
                let committed = &self.subscribers.committed;
                committed
                    .get(&self.stream.name, group, self.partition())
                    .await?
                    .offset
            }
            _ => None,
        };
        let (spec, start) = broker_offset(self.start, committed, self.fallback);
        reader.answer_update(correlation_id, spec).await?;
        tracing::debug!(?start, "active");
        progress.next_offset = start.unwrap_or(0);
        progress.delivered = None;
        // The stream may have grown while another member held the
        // partition: its growths are read again before the first record.
        progress.epochs = None;
        progress.crossed = 0;
        let hold = Hold::new();
        progress.held = Some(hold.clone());
        self.set_active_member(true);
        Ok(self
            .send(SubscriptionEvent::Assignment {
                partition: self.partition().index,
                state: AssignmentState::Active,
                next_offset: start,
                handoff: None,
                hold: Some(hold),
            })
            .await)
    }

    /// A group member stops holding the partition (the broker made it
    /// inactive, or its connection broke): INACTIVE, once. False when the
    /// subscriber is gone; the hold for the caller to end.
    async fn let_go(
        &self,
        progress: &mut Progress,
        handoff: Option<Handoff>,
    ) -> (bool, Option<Hold>) {
        let Some(hold) = progress.held.take() else {
            return (true, None);
        };
        self.set_active_member(false);
        let delivering = self
            .send(SubscriptionEvent::Assignment {
                partition: self.partition().index,
                state: AssignmentState::Inactive,
                next_offset: None,
                handoff,
                hold: None,
            })
            .await;
        (delivering, Some(hold))
    }

    fn assignment(&self, state: AssignmentState, next_offset: Option<u64>) -> SubscriptionEvent {
        SubscriptionEvent::Assignment {
            partition: self.partition().index,
            state,
            next_offset,
            handoff: None,
            hold: None,
        }
    }

    /// Records in the registry whether this member is active here.
    fn set_active_member(&self, active: bool) {
        if let Some(group) = &self.group {
            let index = self.partition().index;
            self.subscribers
                .members
                .set(&self.stream.name, group, index, &self.member, active);
        }
    }

    /// False when the subscriber is gone or partlog shuts down.
    async fn send(&self, event: SubscriptionEvent) -> bool {
        !self.subscribers.shutdown.has_begun() && self.events.send(Ok(event)).is_ok()
    }

    /// Resolves when the subscriber left or partlog shuts down.
    async fn ended(&self) {
        tokio::select! {
            () = self.events.closed() => {}
            () = self.subscribers.shutdown.wait() => {}
        }
    }
}

/// A group member waiting at an epoch barrier, counted in
/// `partlog_group_epoch_waits` while it lives.
struct EpochWait {
    stream: String,
    group: String,
}

impl EpochWait {
    fn new(stream: &str, group: &str) -> EpochWait {
        crate::telemetry::group_epoch_wait(stream, group, 1);
        EpochWait {
            stream: stream.to_owned(),
            group: group.to_owned(),
        }
    }
}

impl Drop for EpochWait {
    fn drop(&mut self) {
        crate::telemetry::group_epoch_wait(&self.stream, &self.group, -1);
    }
}
