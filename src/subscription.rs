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

use crate::broker::reader::{ChunkReader, ReaderEvent};
use crate::broker::Backoff;
use crate::error::{Error, Result};
use crate::log::PartitionedLog;
use crate::record::StoredRecord;

/// Where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The group's committed offset + 1, else the configured fallback.
    Committed,
    First,
    Last,
    Next,
    Offset(u64),
    /// Milliseconds since the Unix epoch: the first chunk stored at or
    /// after this time.
    Timestamp(i64),
}

/// The configured start of a group in a partition it never committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    First,
    Last,
    Next,
}

impl Fallback {
    pub fn parse(text: &str) -> Option<Fallback> {
        match text {
            "first" => Some(Fallback::First),
            "last" => Some(Fallback::Last),
            "next" => Some(Fallback::Next),
            _ => None,
        }
    }

    fn spec(self) -> OffsetSpecification {
        match self {
            Fallback::First => OffsetSpecification::First,
            Fallback::Last => OffsetSpecification::Last,
            Fallback::Next => OffsetSpecification::Next,
        }
    }
}

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
    pub stream: String,
    pub group: Option<String>,
    /// Partition indexes, validated against the stream.
    pub partitions: Vec<u32>,
    pub start: StartPosition,
    pub window: usize,
}

/// A running subscription; dropping it ends every partition task.
pub struct Subscription {
    events: mpsc::Receiver<Result<SubscriptionEvent>>,
}

impl Subscription {
    /// The next event; `None` once every partition task ended. An error is
    /// the last item.
    pub async fn next(&mut self) -> Option<Result<SubscriptionEvent>> {
        self.events.recv().await
    }

    pub fn into_receiver(self) -> mpsc::Receiver<Result<SubscriptionEvent>> {
        self.events
    }
}

/// One partition of a subscription.
struct PartitionTask {
    log: Arc<PartitionedLog>,
    stream: String,
    group: Option<String>,
    partition: u32,
    partition_stream: String,
    start: StartPosition,
    member: String,
    events: mpsc::Sender<Result<SubscriptionEvent>>,
}

/// Starts one task per partition. `partition_streams[i]` names partition
/// `request.partitions[i]`.
pub(crate) fn start(
    log: Arc<PartitionedLog>,
    request: SubscribeRequest,
    partition_streams: Vec<String>,
    member: String,
) -> Subscription {
    let (events, receiver) = mpsc::channel(request.window.max(1));
    for (partition, partition_stream) in request.partitions.iter().zip(partition_streams) {
        let task = PartitionTask {
            log: log.clone(),
            stream: request.stream.clone(),
            group: request.group.clone(),
            partition: *partition,
            partition_stream,
            start: request.start,
            member: member.clone(),
            events: events.clone(),
        };
        tokio::spawn(task.run());
    }
    Subscription { events: receiver }
}

/// How long a task waits for the broker before it looks again whether its
/// connection is still open.
const IDLE_CHECK: Duration = Duration::from_secs(5);

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
}

impl PartitionTask {
    /// Reads until the subscriber leaves. A broken broker connection is
    /// re-established with capped exponential backoff and reading resumes
    /// after the last delivered record; other errors end the subscription.
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
                        stream = %self.stream, partition = self.partition, %why,
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

    async fn read(&self, progress: &mut Progress) -> Result<()> {
        let placement = self
            .log
            .broker()
            .placements(std::slice::from_ref(&self.partition_stream))
            .await?
            .remove(0);
        let (spec, properties) = match &self.group {
            Some(group) => (
                // Ignored by the broker until it makes this consumer
                // active; the answer to that update decides.
                OffsetSpecification::Next,
                HashMap::from([
                    ("single-active-consumer".to_string(), "true".to_string()),
                    ("name".to_string(), group.clone()),
                    ("super-stream".to_string(), self.stream.clone()),
                ]),
            ),
            None => match progress.delivered {
                Some(last) => (OffsetSpecification::Offset(last + 1), HashMap::new()),
                None => (self.explicit_spec(), HashMap::new()),
            },
        };
        let mut reader = ChunkReader::open(
            self.log.broker(),
            &self.partition_stream,
            &placement.leader,
            spec,
            properties,
        )
        .await?;
        let result = self.pump(&mut reader, progress).await;
        reader.close();
        result
    }

    /// Moves records from the broker to the subscriber until the subscriber
    /// leaves or the connection fails.
    async fn pump(&self, reader: &mut ChunkReader, progress: &mut Progress) -> Result<()> {
        // Offsets below this were delivered already or lie before the start.
        let mut next_offset = 0;
        if self.group.is_none() {
            let start = match progress.delivered {
                Some(last) => Some(last + 1),
                None => self.explicit_offset(),
            };
            next_offset = start.unwrap_or(0);
            let state = if std::mem::take(&mut progress.reattaching) {
                AssignmentState::Reattached
            } else {
                AssignmentState::Active
            };
            if !self.send(self.assignment(state, start)).await {
                return Ok(());
            }
        }
        loop {
            let event = tokio::select! {
                () = self.ended() => return Ok(()),
                event = reader.next_event(Instant::now() + IDLE_CHECK) => event?,
            };
            match event {
                None if reader.is_closed() => {
                    return Err(Error::Unavailable("the reading connection closed".into()))
                }
                None => continue,
                Some(ReaderEvent::Chunk(chunk)) => {
                    if self.group.is_some() && !progress.held {
                        // Sent before the broker made us inactive; the new
                        // active member reads it from the committed offset.
                        continue;
                    }
                    self.log
                        .note_record(&self.partition_stream, chunk.last_offset());
                    for (i, message) in chunk.messages.iter().enumerate() {
                        let offset = chunk.first_offset + i as u64;
                        if offset < next_offset {
                            continue;
                        }
                        let record = StoredRecord::from_message(
                            message,
                            self.partition,
                            offset,
                            chunk.timestamp_ms,
                        );
                        if !self.send(SubscriptionEvent::Record(record)).await {
                            return Ok(());
                        }
                        next_offset = offset + 1;
                        progress.delivered = Some(offset);
                    }
                }
                Some(ReaderEvent::ConsumerUpdate {
                    active: true,
                    correlation_id,
                }) => {
                    let (spec, start) = self.activation_start().await?;
                    reader.answer_update(correlation_id, spec).await?;
                    tracing::debug!(
                        stream = %self.stream, partition = self.partition, member = %self.member,
                        ?start, "active"
                    );
                    next_offset = start.unwrap_or(0);
                    progress.held = true;
                    self.set_active_member(true);
                    if !self
                        .send(self.assignment(AssignmentState::Active, start))
                        .await
                    {
                        return Ok(());
                    }
                }
                Some(ReaderEvent::ConsumerUpdate {
                    active: false,
                    correlation_id,
                }) => {
                    reader
                        .answer_update(correlation_id, OffsetSpecification::Next)
                        .await?;
                    tracing::debug!(
                        stream = %self.stream, partition = self.partition, member = %self.member,
                        "inactive"
                    );
                    if !self.let_go(progress).await {
                        return Ok(());
                    }
                }
            }
        }
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

    /// Where an activated group member starts, and that offset if known:
    /// the start position, applied each time the broker makes it active.
    async fn activation_start(&self) -> Result<(OffsetSpecification, Option<u64>)> {
        let group = self.group.as_deref().expect("only groups are activated");
        if self.start != StartPosition::Committed {
            return Ok((self.explicit_spec(), self.explicit_offset()));
        }
        let committed = self
            .log
            .committed(&self.stream, group, self.partition, &self.partition_stream)
            .await?
            .offset;
        Ok(match committed {
            Some(offset) => (OffsetSpecification::Offset(offset + 1), Some(offset + 1)),
            None => (self.log.fallback().spec(), None),
        })
    }

    fn explicit_spec(&self) -> OffsetSpecification {
        match self.start {
            StartPosition::Committed => self.log.fallback().spec(),
            StartPosition::First => OffsetSpecification::First,
            StartPosition::Last => OffsetSpecification::Last,
            StartPosition::Next => OffsetSpecification::Next,
            StartPosition::Offset(offset) => OffsetSpecification::Offset(offset),
            StartPosition::Timestamp(ms) => OffsetSpecification::Timestamp(ms),
        }
    }

    fn explicit_offset(&self) -> Option<u64> {
        match self.start {
            StartPosition::Offset(offset) => Some(offset),
            _ => None,
        }
    }

    fn assignment(&self, state: AssignmentState, next_offset: Option<u64>) -> SubscriptionEvent {
        SubscriptionEvent::Assignment {
            partition: self.partition,
            state,
            next_offset,
        }
    }

    /// Records in the log's registry whether this member is active here.
    fn set_active_member(&self, active: bool) {
        if let Some(group) = &self.group {
            self.log
                .set_active_member(&self.stream, group, self.partition, &self.member, active);
        }
    }

    /// False when the subscriber is gone or partlog shuts down.
    async fn send(&self, event: SubscriptionEvent) -> bool {
        tokio::select! {
            sent = self.events.send(Ok(event)) => sent.is_ok(),
            () = self.log.shutting_down() => false,
        }
    }

    /// Resolves when the subscriber left or partlog shuts down.
    async fn ended(&self) {
        tokio::select! {
            () = self.events.closed() => {}
            () = self.log.shutting_down() => {}
        }
    }
}

/// Rejects a start position that needs a group when there is none.
pub fn check_start(start: StartPosition, group: Option<&str>) -> Result<()> {
    if start == StartPosition::Committed && group.is_none() {
        return Err(Error::InvalidArgument(
            "start position COMMITTED needs a group; name one, or start at FIRST, LAST, NEXT, \
             an offset or a timestamp"
                .into(),
        ));
    }
    Ok(())
}
