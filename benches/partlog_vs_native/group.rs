//! Consumer group members: one trait for every implementation (partlog
//! `Consume`, partlog `Subscribe` + `Commit`, native single active
//! consumers), and one driver that consumes, commits every N records and
//! finishes with a last commit, the same for all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::subscribe_response::Event;
use partlog::proto::{
    consume_response, AssignmentState, CommitRequest, ConsumeOpen, ConsumeRequest, ConsumeResponse,
    GetOffsetsRequest, PartitionOffsets, Record, SubscribeRequest, SubscribeResponse,
};
use rabbitmq_stream_client::types::{Delivery, OffsetSpecification, SuperStreamConsumer};
use rabbitmq_stream_client::MessageContext;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::bench::{Bench, Variant};
use crate::records::decode;
use crate::report::Side;
use crate::setup::{partition_index, partition_stream, Result};
use crate::tally::{Tally, STALL};

/// What a member sees.
pub enum MemberEvent {
    /// A record, by its decoded sequence and sending time.
    Record {
        partition: u32,
        offset: u64,
        decoded: Option<(u64, u64)>,
    },
    /// The broker made this member the partition's active consumer.
    Active(u32),
    /// The broker gave the partition to another member.
    Inactive(u32),
}

/// One member of a consumer group.
pub trait GroupMember: Send {
    /// The next event; `None` when the member's subscription ended.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<MemberEvent>>>;

    /// Commits the offset of the last processed record per partition. May
    /// return before the commit is done, as far as the implementation
    /// pipelines commits.
    fn commit(&mut self, offsets: HashMap<u32, u64>) -> BoxFuture<'_, Result<()>>;

    /// Waits until every commit made is done.
    fn flush(&mut self) -> BoxFuture<'_, Result<()>>;

    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Consumer group implementations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupImpl {
    /// `Consume`: one bidirectional stream per member for records within
    /// its credit and commits answered in line; commits are not waited
    /// for (partlog answers them in order), credit is granted as records
    /// are processed.
    PartlogConsume,
    /// `Subscribe` with the group, and unary `Commit` on a second channel:
    /// on the subscription's channel, unread records can fill HTTP/2's
    /// connection window so that Commit answers never arrive (issue 9).
    /// Commits are pipelined, up to --commits-in-flight per member.
    PartlogSubscribeCommit,
    /// A native super stream consumer with single active consumer under
    /// the group's name, storing offsets on the broker (`store_offset`,
    /// which the broker does not acknowledge); activated consumers resume
    /// after the stored offset.
    NativeSingleActive,
}

impl Variant for GroupImpl {
    fn side(self) -> Side {
        match self {
            GroupImpl::PartlogConsume | GroupImpl::PartlogSubscribeCommit => Side::Partlog,
            GroupImpl::NativeSingleActive => Side::Native,
        }
    }

    fn id(self) -> &'static str {
        match self {
            GroupImpl::PartlogConsume => "partlog-consume",
            GroupImpl::PartlogSubscribeCommit => "partlog-subscribe-commit",
            GroupImpl::NativeSingleActive => "native-single-active-consumer",
        }
    }
}

impl GroupImpl {
    pub fn label(self) -> &'static str {
        match self {
            GroupImpl::PartlogConsume => "Consume",
            GroupImpl::PartlogSubscribeCommit => "Subscribe + Commit",
            GroupImpl::NativeSingleActive => "native single active consumer",
        }
    }

    /// A new member of `group` on every partition of `stream`.
    pub async fn join(
        self,
        bench: &Bench,
        stream: &str,
        group: &str,
    ) -> Result<Box<dyn GroupMember>> {
        Ok(match self {
            GroupImpl::PartlogConsume => {
                Box::new(ConsumeMember::join(bench, stream, group, CONSUME_CREDIT).await?)
            }
            GroupImpl::PartlogSubscribeCommit => {
                Box::new(PartlogMember::join(bench, stream, group).await?)
            }
            GroupImpl::NativeSingleActive => {
                Box::new(NativeMember::join(bench, stream, group).await?)
            }
        })
    }

    /// The group's committed offset per partition, as this implementation
    /// stores it.
    pub async fn committed(
        self,
        bench: &Bench,
        stream: &str,
        group: &str,
        partitions: u32,
    ) -> Result<Vec<Option<u64>>> {
        match self {
            GroupImpl::PartlogConsume | GroupImpl::PartlogSubscribeCommit => {
                let rows = partlog_offsets(bench, stream, group).await?;
                let mut committed = vec![None; partitions as usize];
                for row in rows {
                    committed[row.partition as usize] = row.committed;
                }
                Ok(committed)
            }
            GroupImpl::NativeSingleActive => {
                let mut committed = Vec::new();
                for p in 0..partitions {
                    let stored = bench
                        .broker
                        .stored_offset(group, &partition_stream(stream, p))
                        .await?;
                    committed.push(stored);
                }
                Ok(committed)
            }
        }
    }
}

impl GroupImpl {
    /// The group's state as the implementation sees it, for a failure's
    /// message: per partition committed offset, tail and active member.
    pub async fn describe(self, bench: &Bench, stream: &str, group: &str) -> String {
        match self {
            GroupImpl::PartlogConsume | GroupImpl::PartlogSubscribeCommit => {
                match partlog_offsets(bench, stream, group).await {
                    Ok(rows) => rows
                        .iter()
                        .map(|r| {
                            format!(
                                "{}: committed {:?} tail {:?} active {:?}",
                                r.partition, r.committed, r.tail, r.active_member
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(e) => format!("GetOffsets failed: {e}"),
                }
            }
            GroupImpl::NativeSingleActive => {
                let partitions = bench.options.group_partitions;
                match self.committed(bench, stream, group, partitions).await {
                    Ok(stored) => format!("stored offsets {stored:?}"),
                    Err(e) => format!("stored offsets unknown: {e}"),
                }
            }
        }
    }
}

/// The group's offsets per partition as partlog's `GetOffsets` answers.
async fn partlog_offsets(
    bench: &Bench,
    stream: &str,
    group: &str,
) -> Result<Vec<PartitionOffsets>> {
    Ok(bench
        .partlog
        .client()
        .await?
        .get_offsets(GetOffsetsRequest {
            group: group.to_owned(),
            stream: stream.to_owned(),
        })
        .await?
        .into_inner()
        .partitions)
}

/// What a group consumption gave besides the tally.
pub struct GroupOutcome {
    pub commits: u64,
    /// From the start until every member had joined.
    pub joined: Duration,
}

/// A member commits what it processed when this long passes without a
/// new record, as consumers commit on an interval besides a count: the
/// last records of a partition are committed without waiting for a
/// hundredth.
const IDLE_COMMIT: Duration = Duration::from_millis(100);

/// The highest offset each partition's active members committed.
struct Committed(Mutex<Vec<Option<u64>>>);

impl Committed {
    fn note(&self, offsets: &HashMap<u32, u64>) {
        let mut committed = self.0.lock().unwrap();
        for (&p, &offset) in offsets {
            if let Some(c) = committed.get_mut(p as usize) {
                *c = (*c).max(Some(offset));
            }
        }
    }

    fn reached(&self, last: &[Option<u64>]) -> bool {
        let committed = self.0.lock().unwrap();
        last.iter()
            .zip(committed.iter())
            .all(|(last, committed)| last.is_none() || committed >= last)
    }
}

/// Runs `members` members of `group` until every record was processed and
/// every partition committed up to its last record (`last`): the members
/// join at once, and each commits the last offset of the partitions it is
/// active on every `commit_every` records and when idle, then waits for its
/// commits.
pub async fn consume(
    bench: &Bench,
    implementation: GroupImpl,
    stream: &str,
    group: &str,
    last: &[Option<u64>],
    tally: Arc<Tally>,
) -> Result<GroupOutcome> {
    let started = Instant::now();
    let joins = (0..bench.options.group_members).map(|_| implementation.join(bench, stream, group));
    let joined = futures::future::try_join_all(joins).await?;
    let joined_after = started.elapsed();
    bench.sampler.sample_connections();
    let committed = Arc::new(Committed(Mutex::new(vec![None; last.len()])));
    let (done, finished) = watch::channel(false);
    let mut running: FuturesUnordered<JoinHandle<Result<u64>>> = joined
        .into_iter()
        .map(|member| {
            tokio::spawn(run_member(
                member,
                tally.clone(),
                committed.clone(),
                bench.options.commit_every,
                finished.clone(),
            ))
        })
        .collect();
    let caught_up = async {
        tally.complete().await?;
        let since = Instant::now();
        while !committed.reached(last) {
            if since.elapsed() > STALL {
                return Err(format!(
                    "every record arrived, but after {STALL:?} the commits are {:?} for last records {last:?}",
                    committed.0.lock().unwrap()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, crate::setup::Error>(())
    };
    tokio::select! {
        caught_up = caught_up => caught_up?,
        Some(ended) = running.next() => {
            ended??;
            return Err("a group member's subscription ended".into());
        }
    }
    let _ = done.send(true);
    let mut commits = 0;
    while let Some(ended) = running.next().await {
        commits += ended??;
    }
    Ok(GroupOutcome {
        commits,
        joined: joined_after,
    })
}

/// One member's loop until `finished`; returns the commits it made.
async fn run_member(
    mut member: Box<dyn GroupMember>,
    tally: Arc<Tally>,
    committed: Arc<Committed>,
    commit_every: u64,
    mut finished: watch::Receiver<bool>,
) -> Result<u64> {
    // Offsets of partitions this member is active on, processed since its
    // last commit. A partition taken away is not committed: its new owner
    // commits, and a native stored offset could move backwards.
    let mut uncommitted: HashMap<u32, u64> = HashMap::new();
    let mut active = HashSet::new();
    let (mut processed, mut processed_at_tick, mut commits) = (0u64, 0u64, 0u64);
    let mut idle = tokio::time::interval(IDLE_COMMIT);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            biased;
            _ = finished.changed() => break,
            _ = idle.tick() => {
                let due = processed == processed_at_tick;
                processed_at_tick = processed;
                due
            }
            event = member.next() => match event? {
                None => return Err("the member's subscription ended".into()),
                Some(MemberEvent::Active(p)) => {
                    active.insert(p);
                    false
                }
                Some(MemberEvent::Inactive(p)) => {
                    active.remove(&p);
                    uncommitted.remove(&p);
                    false
                }
                Some(MemberEvent::Record { partition, offset, decoded }) => {
                    tally.record_decoded(partition, offset, decoded);
                    if active.contains(&partition) {
                        uncommitted.insert(partition, offset);
                    }
                    processed += 1;
                    processed % commit_every == 0
                }
            },
        };
        if due && !uncommitted.is_empty() {
            let offsets = std::mem::take(&mut uncommitted);
            committed.note(&offsets);
            member.commit(offsets).await?;
            commits += 1;
        }
    }
    member.flush().await?;
    member.close().await;
    Ok(commits)
}

struct PartlogMember {
    events: Streaming<SubscribeResponse>,
    committer: PartLogClient<Channel>,
    stream: String,
    group: String,
    in_flight: FuturesUnordered<JoinHandle<Result<()>>>,
    most_in_flight: usize,
}

impl PartlogMember {
    async fn join(bench: &Bench, stream: &str, group: &str) -> Result<PartlogMember> {
        let events = bench
            .partlog
            .client()
            .await?
            .subscribe(SubscribeRequest {
                stream: stream.to_owned(),
                group: group.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(PartlogMember {
            events,
            committer: bench.partlog.client().await?,
            stream: stream.to_owned(),
            group: group.to_owned(),
            in_flight: FuturesUnordered::new(),
            most_in_flight: bench.options.commits_in_flight,
        })
    }
}

impl GroupMember for PartlogMember {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<MemberEvent>>> {
        async move {
            loop {
                let Some(message) = self.events.message().await? else {
                    return Ok(None);
                };
                let event = match message.event {
                    Some(Event::Record(r)) => MemberEvent::Record {
                        partition: r.partition,
                        offset: r.offset,
                        decoded: decode(&r.value),
                    },
                    Some(Event::Assignment(a)) => match a.state() {
                        AssignmentState::Active => MemberEvent::Active(a.partition),
                        AssignmentState::Inactive => MemberEvent::Inactive(a.partition),
                        _ => continue,
                    },
                    Some(Event::Skipped(_) | Event::EpochMarker(_)) | None => continue,
                };
                return Ok(Some(event));
            }
        }
        .boxed()
    }

    fn commit(&mut self, offsets: HashMap<u32, u64>) -> BoxFuture<'_, Result<()>> {
        async move {
            while self.in_flight.len() >= self.most_in_flight {
                if let Some(done) = self.in_flight.next().await {
                    done??;
                }
            }
            let mut committer = self.committer.clone();
            let request = CommitRequest {
                group: self.group.clone(),
                stream: self.stream.clone(),
                offsets,
            };
            self.in_flight.push(tokio::spawn(async move {
                committer.commit(request).await?;
                Ok(())
            }));
            Ok(())
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            while let Some(done) = self.in_flight.next().await {
                done??;
            }
            Ok(())
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Dropping the call ends the subscription.
        futures::future::ready(()).boxed()
    }
}

/// Credit a `Consume` group member grants at first and tops up in steps of.
const CONSUME_CREDIT: u32 = 2000;

/// A member on a `Consume` stream.
pub struct ConsumeMember {
    events: Streaming<ConsumeResponse>,
    requests: mpsc::UnboundedSender<ConsumeRequest>,
    /// Records received since credit was last granted.
    owed_credit: u32,
    /// Commits sent and not answered yet.
    open_commits: usize,
}

impl ConsumeMember {
    /// Joins `group` on `stream`, granting `credit` records.
    pub async fn join(
        bench: &Bench,
        stream: &str,
        group: &str,
        credit: u32,
    ) -> Result<ConsumeMember> {
        let (requests, outgoing) = mpsc::unbounded_channel();
        requests
            .send(ConsumeRequest {
                open: Some(ConsumeOpen {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                    ..Default::default()
                }),
                credit_records: credit,
                ..Default::default()
            })
            .map_err(|_| "the Consume call ended")?;
        let events = bench
            .partlog
            .client()
            .await?
            .consume(tokio_stream::wrappers::UnboundedReceiverStream::new(
                outgoing,
            ))
            .await?
            .into_inner();
        Ok(ConsumeMember {
            events,
            requests,
            owed_credit: 0,
            open_commits: 0,
        })
    }

    fn send(&self, request: ConsumeRequest) -> Result<()> {
        self.requests
            .send(request)
            .map_err(|_| "the Consume call ended".into())
    }

    /// Commits `commits` and grants `credit_records` more, in one request.
    pub fn commit_with_credit(
        &mut self,
        commits: HashMap<u32, u64>,
        credit_records: u32,
    ) -> Result<()> {
        self.open_commits += commits.len();
        self.send(ConsumeRequest {
            commits,
            credit_records,
            ..Default::default()
        })
    }

    /// The next event of the call, granting credit as records are
    /// processed; commit answers are taken here (a commit refused because
    /// its partition moved is the new owner's to redo).
    async fn next_event(&mut self) -> Result<Option<MemberEvent>> {
        loop {
            let event = match self.next_message().await? {
                Taken::Record(r) => {
                    self.owed_credit += 1;
                    if self.owed_credit >= CONSUME_CREDIT / 2 {
                        let credit_records = std::mem::take(&mut self.owed_credit);
                        self.commit_with_credit(HashMap::new(), credit_records)?;
                    }
                    MemberEvent::Record {
                        partition: r.partition,
                        offset: r.offset,
                        decoded: decode(&r.value),
                    }
                }
                Taken::Event(event) => event,
                Taken::Nothing => continue,
                Taken::End => return Ok(None),
            };
            return Ok(Some(event));
        }
    }

    /// Takes the call's next message: a record or an event for the member,
    /// or a commit answer (or state the member ignores) taken here.
    pub async fn next_message(&mut self) -> Result<Taken> {
        use consume_response::Event;
        let Some(message) = self.events.message().await? else {
            return Ok(Taken::End);
        };
        let event = match message.event {
            Some(Event::Record(r)) => return Ok(Taken::Record(r)),
            Some(Event::Assignment(a)) => match a.state() {
                AssignmentState::Active => MemberEvent::Active(a.partition),
                AssignmentState::Inactive => MemberEvent::Inactive(a.partition),
                _ => return Ok(Taken::Nothing),
            },
            Some(Event::Commit(ack)) => {
                self.open_commits -= 1;
                if let Some(error) = ack.error {
                    if error.code != tonic::Code::FailedPrecondition as i32 {
                        return Err(format!("commit refused: {}", error.message).into());
                    }
                }
                return Ok(Taken::Nothing);
            }
            Some(Event::Skipped(_) | Event::EpochMarker(_)) | None => return Ok(Taken::Nothing),
        };
        Ok(Taken::Event(event))
    }
}

/// What [`ConsumeMember::next_message`] took.
pub enum Taken {
    /// A record, within the credit granted.
    Record(Record),
    /// An assignment.
    Event(MemberEvent),
    /// A commit answer, or nothing the member acts on.
    Nothing,
    /// The call ended.
    End,
}

impl GroupMember for ConsumeMember {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<MemberEvent>>> {
        self.next_event().boxed()
    }

    fn commit(&mut self, offsets: HashMap<u32, u64>) -> BoxFuture<'_, Result<()>> {
        futures::future::ready(self.commit_with_credit(offsets, 0)).boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            // Records still coming are not processed any more.
            // (Waiting for an event instead would wait for ever once the
            // last answer came and no record follows.)
            while self.open_commits > 0 {
                let Ok(taken) = tokio::time::timeout(STALL, self.next_message()).await else {
                    return Err(format!(
                        "{} commits unanswered after {STALL:?}",
                        self.open_commits
                    )
                    .into());
                };
                if let Taken::End = taken? {
                    return Err("the Consume call ended with commits open".into());
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Ending the requests ends the call.
        futures::future::ready(()).boxed()
    }
}

pub struct NativeMember {
    consumer: SuperStreamConsumer,
    assignments: mpsc::UnboundedReceiver<MemberEvent>,
    stream: String,
    group: String,
}

impl NativeMember {
    pub async fn join(bench: &Bench, stream: &str, group: &str) -> Result<NativeMember> {
        let (assign, assignments) = mpsc::unbounded_channel();
        let super_stream = stream.to_owned();
        let consumer = bench
            .environment
            .super_stream_consumer()
            .name(group)
            .enable_single_active_consumer(true)
            .offset(OffsetSpecification::First)
            .client_provided_name("partlog-bench")
            .consumer_update(move |active, context: MessageContext| {
                let assign = assign.clone();
                let partition = partition_index(&super_stream, &context.stream());
                // The library wants a Sync future; the offset query runs as
                // a task of its own.
                let resume = (active == 1).then(|| tokio::spawn(after_stored_offset(context)));
                async move {
                    let Some(partition) = partition else {
                        return OffsetSpecification::Next;
                    };
                    match resume {
                        Some(resume) => {
                            let _ = assign.send(MemberEvent::Active(partition));
                            resume.await.unwrap_or(OffsetSpecification::First)
                        }
                        None => {
                            let _ = assign.send(MemberEvent::Inactive(partition));
                            OffsetSpecification::Next
                        }
                    }
                }
            })
            .build(stream)
            .await?;
        Ok(NativeMember {
            consumer,
            assignments,
            stream: stream.to_owned(),
            group: group.to_owned(),
        })
    }

    /// The next delivery and its partition, assignments left aside;
    /// `None` when the consumer ended.
    pub async fn delivery(&mut self) -> Result<Option<(u32, Delivery)>> {
        next_delivery(&mut self.consumer, &self.stream).await
    }
}

async fn next_delivery(
    consumer: &mut SuperStreamConsumer,
    stream: &str,
) -> Result<Option<(u32, Delivery)>> {
    let Some(delivery) = consumer.next().await else {
        return Ok(None);
    };
    let delivery = delivery?;
    let partition =
        partition_index(stream, delivery.stream()).ok_or("a delivery from a foreign stream")?;
    Ok(Some((partition, delivery)))
}

/// Where an activated native consumer starts: after the group's stored
/// offset, or at the first record.
async fn after_stored_offset(context: MessageContext) -> OffsetSpecification {
    match context
        .client()
        .query_offset(context.name(), &context.stream())
        .await
    {
        Ok(offset) => OffsetSpecification::Offset(offset + 1),
        Err(_) => OffsetSpecification::First,
    }
}

impl GroupMember for NativeMember {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<MemberEvent>>> {
        async move {
            // Activation comes first: the broker delivers a partition's
            // records only after the activation was answered.
            tokio::select! {
                biased;
                Some(assignment) = self.assignments.recv() => Ok(Some(assignment)),
                delivery = next_delivery(&mut self.consumer, &self.stream) => {
                    Ok(delivery?.map(|(partition, delivery)| MemberEvent::Record {
                        partition,
                        offset: delivery.offset(),
                        decoded: delivery.message().data().and_then(decode),
                    }))
                }
            }
        }
        .boxed()
    }

    fn commit(&mut self, offsets: HashMap<u32, u64>) -> BoxFuture<'_, Result<()>> {
        async move {
            let client = self.consumer.client();
            for (partition, offset) in offsets {
                client
                    .store_offset(
                        &self.group,
                        &partition_stream(&self.stream, partition),
                        offset,
                    )
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        // The broker does not answer store_offset.
        futures::future::ready(Ok(())).boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let _ = self.consumer.handle().close().await;
        }
        .boxed()
    }
}
