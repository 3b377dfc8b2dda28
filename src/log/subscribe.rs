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
//! Backpressure: all tasks feed one channel of `window` events. A task
//! blocked on a full channel holds one chunk and has asked the broker for
//! one more, no further, so a stalled client costs at most `window` events
//! plus two chunks per partition.
//!
//! Assignment events follow the broker's decisions in the order the broker
//! made them: ACTIVE when it activates the member, INACTIVE when it steps
//! the member down or the member's connection breaks (the broker then drops
//! the consumer and may activate another member at once). A member delivers
//! a partition's records only between the two.
//!
//! Lifetime: the subscription ends when the receiver is dropped (the client
//! went away) or partlog shuts down: every task notices, unsubscribes and
//! closes its connection, and the broker hands its partitions to the
//! group's next member.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rabbitmq_stream_client::types::OffsetSpecification;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::committed::CommittedOffsets;
use super::members::ActiveMembers;
use super::position::{broker_offset, StartPosition};
use super::shutdown::Shutdown;
use crate::broker::reader::{Chunk, ChunkReader, ReaderEvent};
use crate::broker::{Backoff, Broker, Node, Partition, SuperStream};
use crate::config::Fallback;
use crate::error::{Error, Result};
use crate::record::StoredRecord;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    Record(StoredRecord),
    Assignment {
        partition: u32,
        state: AssignmentState,
        /// The offset read next, when the start position names it.
        next_offset: Option<u64>,
    },
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
    pub window: usize,
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
    events: mpsc::Receiver<Result<SubscriptionEvent>>,
}

impl Subscription {
    /// The events: records and assignments; an error is the last item.
    /// The channel closes once every partition task ended.
    pub fn into_receiver(self) -> mpsc::Receiver<Result<SubscriptionEvent>> {
        self.events
    }
}

impl Subscribers {
    /// Starts one task per partition of `request` in `stream`, reading as
    /// `member`.
    pub fn start(
        self: &Arc<Self>,
        stream: Arc<SuperStream>,
        request: SubscribeRequest,
        member: String,
    ) -> Subscription {
        let (events, receiver) = mpsc::channel(request.window.max(1));
        for &index in &request.partitions {
            let span = tracing::info_span!(
                "partition",
                stream = %stream.name,
                partition = index,
                member = %member
            );
            let task = PartitionTask {
                subscribers: self.clone(),
                stream: stream.clone(),
                index: index as usize,
                group: request.group.clone(),
                start: request.start,
                member: member.clone(),
                events: events.clone(),
            };
            tokio::spawn(task.run().instrument(span));
        }
        Subscription { events: receiver }
    }
}

/// How long a task waits for the broker before it looks again whether its
/// connection is still open.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// One partition of a subscription.
struct PartitionTask {
    subscribers: Arc<Subscribers>,
    stream: Arc<SuperStream>,
    index: usize,
    group: Option<String>,
    start: StartPosition,
    member: String,
    events: mpsc::Sender<Result<SubscriptionEvent>>,
}

/// What a partition task knows across reconnections.
#[derive(Default)]
struct Progress {
    /// Offset of the last record handed to the subscriber.
    delivered: Option<u64>,
    /// Without a group: the connection broke, the next attachment is a
    /// re-attachment (REATTACHED), reading on after `delivered`.
    reattaching: bool,
    /// In a group: the subscriber was told ACTIVE and not INACTIVE since.
    /// Records are delivered only while it holds the partition.
    held: bool,
    /// Offsets below this were delivered already or lie before the start.
    next_offset: u64,
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
                Err(Error::Unavailable(why)) if !self.events.is_closed() => {
                    if !progress.reattaching {
                        // Attached since the last failure: back off anew.
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %why,
                        "subscription lost its broker connection; reconnecting in {delay:?}"
                    );
                    // The broker dropped the consumer with its connection and
                    // may make another member active at once: the subscriber
                    // holds the partition no longer.
                    if !self.let_go(&mut progress).await {
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
        if progress.held {
            self.set_active_member(false);
        }
        if let Err(e) = result {
            // The subscriber may be gone already; then nobody listens.
            tokio::select! {
                _ = self.events.send(Err(e)) => {}
                () = self.ended() => {}
            }
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
            Some(last) => (OffsetSpecification::Offset(last + 1), Some(last + 1)),
            None => broker_offset(self.start, None, self.subscribers.fallback),
        };
        let reader = self
            .subscribers
            .broker
            .readers()
            .open(&self.partition().stream, leader, spec, HashMap::new())
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
        let properties = HashMap::from([
            ("single-active-consumer".to_string(), "true".to_string()),
            ("name".to_string(), group.to_owned()),
            ("super-stream".to_string(), self.stream.name.clone()),
        ]);
        // The offset is ignored by the broker until it makes this consumer
        // active; the answer to that update decides.
        let start = OffsetSpecification::Next;
        self.subscribers
            .broker
            .readers()
            .open(&self.partition().stream, leader, start, properties)
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
                    return Err(Error::Unavailable("the reading connection closed".into()))
                }
                None => true,
                Some(ReaderEvent::Chunk(chunk)) => self.deliver(&chunk, progress).await,
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

    /// Hands a chunk's records to the subscriber. False when it is gone.
    async fn deliver(&self, chunk: &Chunk, progress: &mut Progress) -> bool {
        if self.group.is_some() && !progress.held {
            // Sent before the broker made us inactive; the new active
            // member reads it from the committed offset.
            return true;
        }
        self.partition().saw_record(chunk.last_offset());
        for record in chunk.records(self.partition().index, progress.next_offset) {
            let offset = record.offset;
            if !self.send(SubscriptionEvent::Record(record)).await {
                return false;
            }
            progress.next_offset = offset + 1;
            progress.delivered = Some(offset);
        }
        true
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
            reader
                .answer_update(correlation_id, OffsetSpecification::Next)
                .await?;
            tracing::debug!("inactive");
            return Ok(self.let_go(progress).await);
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
        let (spec, start) = broker_offset(self.start, committed, self.subscribers.fallback);
        reader.answer_update(correlation_id, spec).await?;
        tracing::debug!(?start, "active");
        progress.next_offset = start.unwrap_or(0);
        progress.held = true;
        self.set_active_member(true);
        Ok(self
            .send(self.assignment(AssignmentState::Active, start))
            .await)
    }

    /// A group member stops holding the partition (the broker made it
    /// inactive, or its connection broke): INACTIVE, once. False when the
    /// subscriber is gone.
    async fn let_go(&self, progress: &mut Progress) -> bool {
        if !std::mem::take(&mut progress.held) {
            return true;
        }
        self.set_active_member(false);
        self.send(self.assignment(AssignmentState::Inactive, None))
            .await
    }

    fn assignment(&self, state: AssignmentState, next_offset: Option<u64>) -> SubscriptionEvent {
        SubscriptionEvent::Assignment {
            partition: self.partition().index,
            state,
            next_offset,
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
        tokio::select! {
            sent = self.events.send(Ok(event)) => sent.is_ok(),
            () = self.subscribers.shutdown.wait() => false,
        }
    }

    /// Resolves when the subscriber left or partlog shuts down.
    async fn ended(&self) {
        tokio::select! {
            () = self.events.closed() => {}
            () = self.subscribers.shutdown.wait() => {}
        }
    }
}
