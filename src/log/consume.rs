//! A consumption session: what one `Consume` (or `Subscribe`) call gets of
//! a subscription, within the client's credit, with the member's commits
//! answered in line.
//!
//! The session reads its [`Subscription`] and queues each partition's
//! records; it hands the client records only while the client's credit
//! lasts (records and, when asked for, bytes), so no transport buffer fills
//! with records the client did not ask for. Assignment events pass at once.
//! Commits the client sends are checked (the member must hold the
//! partition, the offset must name a record), group-committed, and
//! acknowledged in the order they came. They run in a task of their own
//! ([`Commits`]), so that a commit the session took goes through even while
//! the session waits for a full transport.
//!
//! Handoff: when the broker takes a partition away, the session drops the
//! partition's records the client has not received (the next owner reads
//! them from the committed offset), answers every commit still open, and
//! only then passes the INACTIVE event on — and releases the partition
//! task, which answers the broker's step-down. Commits for a partition the
//! member does not hold are refused with FAILED_PRECONDITION.
//!
//! Lifetime: the session ends when the client goes away, when it stops
//! sending requests (after the commits still open were answered), when the
//! subscription fails (its error is the last event) or partlog shuts down.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesOrdered;
use futures::{Future, Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::epochs::EpochMarker;
use super::groups::Groups;
use super::subscribe::{AssignmentState, Hold, Subscription, SubscriptionEvent};
use crate::broker::SuperStream;
use crate::error::{Error, Reason, Result};
use crate::offsets::Committed;
use crate::record::StoredRecord;
use crate::telemetry::StreamMetrics;
use crate::validate;

/// How much more the client can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Records; `None` without a limit (a `Subscribe`).
    pub records: Option<u64>,
    /// Bytes of keys, values and headers; `None` without a limit.
    pub bytes: Option<u64>,
}

impl Credit {
    /// No limit: the transport's own flow control paces the client.
    pub const UNLIMITED: Credit = Credit {
        records: None,
        bytes: None,
    };

    fn has_room(&self) -> bool {
        self.records != Some(0) && self.bytes != Some(0)
    }

    /// Uses up what `record` takes. Its bytes may take the byte credit
    /// below what is left (then to 0): a record larger than the credit
    /// still comes once credit is positive.
    fn take(&mut self, record: &StoredRecord) {
        if let Some(records) = &mut self.records {
            *records -= 1;
        }
        if let Some(bytes) = &mut self.bytes {
            *bytes = bytes.saturating_sub(record.payload_bytes() as u64);
        }
    }

    /// Adds a grant; a dimension without a limit stays so.
    fn grant(&mut self, records: u64, bytes: u64) {
        if let Some(left) = &mut self.records {
            *left = left.saturating_add(records);
        }
        if let Some(left) = &mut self.bytes {
            *left = left.saturating_add(bytes);
        }
    }
}

/// What the client sends after opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    /// More records and bytes the client can take.
    Credit { records: u64, bytes: u64 },
    /// Partition → offset of the last processed record.
    Commits(BTreeMap<u32, u64>),
}

/// What the client receives.
#[derive(Debug)]
pub enum ConsumeEvent {
    /// Records of one partition, in offset order.
    Records(Vec<StoredRecord>),
    Assignment {
        partition: u32,
        state: AssignmentState,
        next_offset: Option<u64>,
    },
    /// With a filter: every record of `partition` below `next_offset`
    /// was delivered or did not match.
    Skipped { partition: u32, next_offset: u64 },
    /// An epoch marker was passed; it takes no credit.
    EpochMarker(EpochMarker),
    /// The answer to one commit: the committed offset, or why it was
    /// refused.
    CommitAck {
        partition: u32,
        /// The offset the client asked to commit.
        offset: u64,
        result: Result<Committed>,
    },
}

/// The group context of a session whose member may commit.
pub struct Committer {
    pub groups: Arc<Groups>,
    pub stream: Arc<SuperStream>,
    pub group: String,
}

type PendingAck = Pin<Box<dyn Future<Output = ConsumeEvent> + Send>>;

/// Records of one partition the client has not received yet.
struct Queued {
    partition: u32,
    records: VecDeque<StoredRecord>,
    /// An epoch marker after the records; the client is told of it once
    /// they went out.
    marker: Option<EpochMarker>,
    /// With a filter: the client is told it once the records (and the
    /// marker) went out.
    skipped_to: Option<u64>,
    /// Released once every record went out or was dropped; none for a
    /// marker.
    _budget: Option<OwnedSemaphorePermit>,
}

/// One session; see the module docs.
pub struct Session<I> {
    subscription: Subscription,
    inputs: Option<I>,
    committer: Option<Committer>,
    credit: Credit,
    queue: VecDeque<Queued>,
    /// The partitions a group member holds, and its hold on each.
    held: BTreeMap<u32, Hold>,
    commits: Commits,
    output: mpsc::Sender<Result<ConsumeEvent>>,
    /// The stream's delivery counters.
    metrics: Arc<StreamMetrics>,
}

impl<I> Session<I>
where
    I: Stream<Item = Result<ClientInput>> + Unpin + Send + 'static,
{
    /// A session over `subscription`; `inputs` are the client's requests
    /// after the first; `committer` is set for a group member; `metrics`
    /// are the stream's.
    pub fn new(
        subscription: Subscription,
        inputs: I,
        committer: Option<Committer>,
        credit: Credit,
        output: mpsc::Sender<Result<ConsumeEvent>>,
        metrics: Arc<StreamMetrics>,
    ) -> Self {
        Session {
            subscription,
            inputs: Some(inputs),
            committer,
            credit,
            queue: VecDeque::new(),
            held: BTreeMap::new(),
            commits: Commits::start(),
            output,
            metrics,
        }
    }

    /// Runs until the session ends (see the module docs).
    pub async fn run(mut self) {
        let _active = self.metrics.subscription();
        if let Err(Some(e)) = self.serve().await {
            let _ = self.output.send(Err(e)).await;
        }
    }

    /// `Err(None)` ends the session quietly, `Err(Some(e))` with `e`.
    async fn serve(&mut self) -> std::result::Result<(), Option<Error>> {
        loop {
            self.deliver().await?;
            tokio::select! {
                biased;
                () = self.output.closed() => return Err(None),
                Some(ack) = self.commits.next(), if self.commits.outstanding > 0 => {
                    emit(&self.output, ack).await?;
                }
                input = next_input(&mut self.inputs), if self.inputs.is_some() => {
                    match input {
                        Some(Ok(input)) => self.on_input(input),
                        Some(Err(e)) => return Err(Some(e)),
                        None => {
                            self.answer_pending().await?;
                            return Err(None);
                        }
                    }
                }
                event = self.subscription.next() => match event {
                    Some(Ok(event)) => self.on_event(event).await?,
                    Some(Err(e)) => return Err(Some(e)),
                    None => return Err(None),
                },
            }
        }
    }

    /// Hands the client the queued records its credit allows, a batch per
    /// partition run, each followed by what the filter skipped after it
    /// (which takes no credit).
    async fn deliver(&mut self) -> std::result::Result<(), Option<Error>> {
        loop {
            let Some(front) = self.queue.front_mut() else {
                return Ok(());
            };
            if front.records.is_empty() {
                let partition = front.partition;
                let skipped_to = front.skipped_to;
                let marker = front.marker;
                self.queue.pop_front();
                if let Some(marker) = marker {
                    emit(&self.output, ConsumeEvent::EpochMarker(marker)).await?;
                }
                if let Some(next_offset) = skipped_to {
                    let skipped = ConsumeEvent::Skipped {
                        partition,
                        next_offset,
                    };
                    emit(&self.output, skipped).await?;
                }
                continue;
            }
            if !self.credit.has_room() {
                return Ok(());
            }
            let mut batch = Vec::new();
            while self.credit.has_room() {
                let Some(record) = front.records.pop_front() else {
                    break;
                };
                self.credit.take(&record);
                batch.push(record);
            }
            self.metrics.delivered(&batch);
            emit(&self.output, ConsumeEvent::Records(batch)).await?;
        }
    }

    fn on_input(&mut self, input: ClientInput) {
        match input {
            ClientInput::Credit { records, bytes } => self.credit.grant(records, bytes),
            ClientInput::Commits(offsets) => {
                for (partition, offset) in offsets {
                    let ack = self.commit(partition, offset);
                    self.commits.push(ack);
                }
            }
        }
    }

    /// The answer to one commit, to be awaited in line with the others.
    fn commit(&self, partition: u32, offset: u64) -> PendingAck {
        let refused = |e: Error| -> PendingAck {
            Box::pin(std::future::ready(ConsumeEvent::CommitAck {
                partition,
                offset,
                result: Err(e),
            }))
        };
        let Some(committer) = &self.committer else {
            return refused(Error::field(
                Reason::GroupRequired,
                "commits",
                "commits need a group; this call consumes without one",
            ));
        };
        let stream = committer.stream.clone();
        if let Err(e) = validate::partition(partition, stream.partitions.len(), &stream.name) {
            return refused(e);
        }
        let Some(hold) = self.held.get(&partition).cloned() else {
            return refused(Error::new(
                Reason::PartitionNotHeld,
                format!(
                    "partition {partition} is not held by this member: the broker did not make it \
                 active for the partition, or gave the partition to another member, which \
                 commits it from now on"
                ),
            ));
        };
        let groups = committer.groups.clone();
        let group = committer.group.clone();
        Box::pin(async move {
            let commit = groups.commit_one(&stream, &group, partition, offset);
            let result = hold.run(partition, commit).await;
            ConsumeEvent::CommitAck {
                partition,
                offset,
                result,
            }
        })
    }

    /// Waits for every open commit and hands the client its answer.
    async fn answer_pending(&mut self) -> std::result::Result<(), Option<Error>> {
        while self.commits.outstanding > 0 {
            let Some(ack) = self.commits.next().await else {
                break;
            };
            emit(&self.output, ack).await?;
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        event: SubscriptionEvent,
    ) -> std::result::Result<(), Option<Error>> {
        match event {
            SubscriptionEvent::Records {
                partition,
                records,
                skipped_to,
                budget,
            } => {
                // Records come only while the subscriber holds the
                // partition (the partition task makes sure). Skipped
                // records after others of the same partition still queued
                // move that entry's end (and give their budget back).
                if let Some(back) = self.queue.back_mut() {
                    if records.is_empty() && back.partition == partition {
                        back.skipped_to = skipped_to;
                        return Ok(());
                    }
                }
                self.queue.push_back(Queued {
                    partition,
                    records: records.into(),
                    marker: None,
                    skipped_to,
                    _budget: Some(budget),
                });
                Ok(())
            }
            SubscriptionEvent::Marker(marker) => {
                // After the partition's records queued before it.
                self.queue.push_back(Queued {
                    partition: marker.partition,
                    records: VecDeque::new(),
                    marker: Some(marker),
                    skipped_to: None,
                    _budget: None,
                });
                Ok(())
            }
            SubscriptionEvent::Grown(stream) => {
                if let Some(committer) = &mut self.committer {
                    committer.stream = stream;
                }
                Ok(())
            }
            SubscriptionEvent::Assignment {
                partition,
                state,
                next_offset,
                handoff,
                hold,
            } => {
                match state {
                    AssignmentState::Active | AssignmentState::Reattached => {
                        if let Some(hold) = hold {
                            self.held.insert(partition, hold);
                        }
                    }
                    AssignmentState::Inactive => {
                        self.held.remove(&partition);
                        // The next owner reads them from the committed
                        // offset.
                        self.queue.retain(|q| q.partition != partition);
                        self.answer_pending().await?;
                    }
                }
                let assignment = ConsumeEvent::Assignment {
                    partition,
                    state,
                    next_offset,
                };
                let sent = emit(&self.output, assignment).await;
                drop(handoff);
                sent
            }
        }
    }
}

/// A session's commits, run in their task in the order they came, whatever
/// the session does meanwhile: a commit taken before a step-down finishes
/// before the step-down's hold ends (which waits for it), so its answer is
/// true. Its task ends once the session dropped it and the commits it had
/// taken finished (a member that goes away does not undo its last commits).
struct Commits {
    requests: mpsc::UnboundedSender<PendingAck>,
    acks: mpsc::UnboundedReceiver<ConsumeEvent>,
    /// Commits pushed and not answered yet.
    outstanding: usize,
}

impl Commits {
    fn start() -> Commits {
        let (requests, mut received) = mpsc::unbounded_channel::<PendingAck>();
        let (answered, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut running = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    request = received.recv(), if open => match request {
                        Some(commit) => running.push_back(commit),
                        None => open = false,
                    },
                    Some(ack) = running.next(), if !running.is_empty() => {
                        // Nobody to tell once the session is gone.
                        let _ = answered.send(ack);
                    }
                    else => break,
                }
            }
        });
        Commits {
            requests,
            acks,
            outstanding: 0,
        }
    }

    fn push(&mut self, commit: PendingAck) {
        if self.requests.send(commit).is_ok() {
            self.outstanding = self.outstanding.saturating_add(1);
        }
    }

    /// The next answer, in the order of the commits.
    async fn next(&mut self) -> Option<ConsumeEvent> {
        let ack = self.acks.recv().await?;
        self.outstanding = self.outstanding.saturating_sub(1);
        Some(ack)
    }
}

/// Hands the client an event; `Err(None)` once it is gone.
async fn emit(
    output: &mpsc::Sender<Result<ConsumeEvent>>,
    event: ConsumeEvent,
) -> std::result::Result<(), Option<Error>> {
    output.send(Ok(event)).await.map_err(|_| None)
}

/// The next client input; pending for ever once the inputs ended.
async fn next_input<I>(inputs: &mut Option<I>) -> Option<Result<ClientInput>>
where
    I: Stream<Item = Result<ClientInput>> + Unpin,
{
    match inputs {
        Some(inputs) => inputs.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: usize) -> StoredRecord {
        StoredRecord {
            partition: 0,
            offset: 0,
            key: String::new(),
            value: vec![0; bytes].into(),
            headers: Default::default(),
            filter: String::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn credit_counts_records_and_bytes_and_lets_one_large_record_through() {
        let mut credit = Credit {
            records: Some(2),
            bytes: Some(10),
        };
        assert!(credit.has_room());
        credit.take(&record(4));
        assert_eq!(credit.bytes, Some(6));
        credit.take(&record(100));
        assert_eq!((credit.records, credit.bytes), (Some(0), Some(0)));
        assert!(!credit.has_room());
        credit.grant(1, 0);
        assert!(!credit.has_room(), "bytes still exhausted");
        credit.grant(0, 1);
        assert!(credit.has_room());
    }

    #[test]
    fn unlimited_credit_stays_unlimited() {
        let mut credit = Credit::UNLIMITED;
        credit.take(&record(1000));
        credit.grant(5, 5);
        assert_eq!(credit, Credit::UNLIMITED);
        let mut records_only = Credit {
            records: Some(1),
            bytes: None,
        };
        records_only.take(&record(1_000_000));
        assert_eq!(records_only.records, Some(0));
        assert_eq!(records_only.bytes, None);
    }
}
