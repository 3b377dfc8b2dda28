//! Appending to one partition stream with pipelined confirms.
//!
//! A [`PartitionProducer`] is a publisher on one of the connections to the
//! partition's leader that producers share (see
//! [`super::publish_connection`]) and a writer task. Callers hand it batches
//! with [`PartitionProducer::submit`]; the writer task takes every batch
//! queued so far, numbers the records with consecutive publishing ids, packs
//! them into frames no larger than the broker's frame size and sends them
//! without waiting for earlier confirms — unless the partition has a
//! `max_chunk_records` setting ([`Broker::max_chunk_records`]): then frames
//! hold at most that many records and each goes once the broker answered
//! for the one before, so that no chunk holds records of two frames. The connection's handler resolves
//! each batch once the broker confirmed (or rejected) all of its records.
//! Order within a partition is the order batches reach the queue, and within
//! a batch the caller's order.
//!
//! A *named* producer (one per partition and client producer id) uses the
//! records' sequences as publishing ids and RabbitMQ's deduplication: the
//! broker keeps the last sequence stored under the name and drops anything
//! not above it — and confirms the dropped copies like stored ones. So the
//! producer itself reports records at or below that sequence as duplicates,
//! without sending them. It asks the broker for the sequence whenever it
//! starts sending after all its earlier records were confirmed: another
//! partlog instance may have written for the same producer id meanwhile
//! (the client moved, e.g. after a timeout). It sends the question ahead of
//! the records without waiting for the answer: the broker answers before it
//! takes them, and the records it then drops at or below that sequence are
//! reported as duplicates when their confirms come ([`Confirms::end_check`]).
//! While its own records are in flight, no other writer may use the id (the
//! one-writer contract), and what it sent last is what counts.
//!
//! Lifetime: created on first use of a partition, kept while its connection
//! lives. When the connection breaks every unconfirmed record fails with
//! UNAVAILABLE and [`PartitionProducer::is_closed`] turns true, so the owner
//! replaces it on the next append (and closes the old one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::cluster::Broker;
use super::confirms::{BatchOutcome, Confirms, Stored};
use super::node::Node;
use super::protocol::link::Link;
use super::protocol::publisher::{self, PublishFrame, SequenceQuery};
use super::protocol::wire::{CODE_OK, CODE_PRECONDITION_FAILED, CODE_STREAM_DOES_NOT_EXIST};
use super::publish_connection::{PublishConnection, Route};
use crate::error::{Error, Kind, Reason, Result};
use crate::record::NewRecord;
use crate::sync::lock;

/// Batches waiting for the writer task; senders wait when it is full.
const QUEUE_DEPTH: usize = 64;

/// A batch handed to a producer, awaiting the broker's answers. Dropping it
/// does not withdraw the records.
pub struct Submitted {
    outcome: Option<oneshot::Receiver<BatchOutcome>>,
    count: usize,
    stream: String,
    /// The producer's: a broker that stops confirming retires it.
    closed: Arc<AtomicBool>,
    confirm_timeout: Duration,
}

impl Submitted {
    /// Each record's outcome. Records the broker has not answered for
    /// within the confirm timeout fail with UNAVAILABLE — they may or may
    /// not be stored — and the producer is retired, since a connection that
    /// stopped confirming may be dead without having said so.
    pub async fn outcome(self) -> BatchOutcome {
        let answered = match self.outcome {
            Some(outcome) => match tokio::time::timeout(self.confirm_timeout, outcome).await {
                Ok(answer) => answer.map_err(|_| "the connection closed"),
                Err(_) => {
                    self.closed.store(true, Ordering::Release);
                    Err("no confirm came within broker.confirm_timeout_ms")
                }
            },
            None => Err("the connection closed"),
        };
        answered.unwrap_or_else(|why| {
            let lost = Error::new(
                Reason::PublishOutcomeUnknown,
                format!(
                    "publishing to {:?} failed: {why}; the records may or may not be stored, \
                 retry them (with a producer id and the same sequences to store them once)",
                    self.stream
                ),
            );
            vec![Err(lost); self.count]
        })
    }
}

/// How a producer numbers what it publishes.
enum Numbering {
    /// Consecutive ids of its own, starting at 0.
    Counter(u64),
    /// The records' sequences, deduplicated by the broker under `name`;
    /// `last` is the highest one stored or sent.
    Sequences { name: String, last: u64 },
}

struct Append {
    records: Vec<NewRecord>,
    done: oneshot::Sender<BatchOutcome>,
}

pub struct PartitionProducer {
    stream: String,
    /// Taken by [`PartitionProducer::close`]; the writer task ends once the
    /// last sender is gone.
    queue: Mutex<Option<mpsc::Sender<Append>>>,
    closed: Arc<AtomicBool>,
    connection: Arc<PublishConnection>,
    publisher_id: u8,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    confirm_timeout: Duration,
    last_used: Mutex<Instant>,
}

impl PartitionProducer {
    /// Declares a publisher on `stream` at `leader`, named (deduplicating)
    /// when `name` is given, on one of the connections producers share.
    pub async fn open(
        broker: &Broker,
        stream: &str,
        leader: &Node,
        name: Option<&str>,
    ) -> Result<Self> {
        let max_chunk_records = broker.max_chunk_records(stream).await?;
        let confirms = Arc::new(Confirms::default());
        let closed = Arc::new(AtomicBool::new(false));
        let route = Route {
            stream: stream.to_owned(),
            confirms: confirms.clone(),
            closed: closed.clone(),
        };
        let (connection, publisher_id) = broker
            .publish_connections()
            .attach(broker.connector(), leader, route)
            .await?;
        let declared = Self::declare(&connection, publisher_id, stream, leader, name).await;
        let numbering = match declared {
            Ok(numbering) => numbering,
            Err(e) => {
                if e.kind() == Kind::Unavailable {
                    connection.retire();
                }
                connection.detach(publisher_id);
                return Err(e);
            }
        };
        let (queue, batches) = mpsc::channel(QUEUE_DEPTH);
        // The broker's frame size limit, or partlog's if lower.
        let configured = broker.connector().config().max_frame_bytes;
        let max_frame_bytes = match connection.link().frame_max() {
            0 => configured,
            broker_max => broker_max.min(configured),
        };
        let writer = tokio::spawn(write_loop(
            WriterSetup {
                connection: connection.clone(),
                publisher_id,
                stream: stream.to_owned(),
                max_frame_bytes: max_frame_bytes as usize,
                max_chunk_records,
            },
            batches,
            confirms,
            closed.clone(),
            numbering,
        ));
        Ok(PartitionProducer {
            stream: stream.to_owned(),
            queue: Mutex::new(Some(queue)),
            closed,
            connection,
            publisher_id,
            writer: tokio::sync::Mutex::new(Some(writer)),
            confirm_timeout: broker.connector().confirm_timeout(),
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// Declares the publisher; a named one learns the last sequence the
    /// broker stored under its name.
    async fn declare(
        connection: &PublishConnection,
        publisher_id: u8,
        stream: &str,
        leader: &Node,
        name: Option<&str>,
    ) -> Result<Numbering> {
        let link = connection.link();
        match publisher::declare(link, publisher_id, name, stream).await? {
            CODE_OK => {}
            CODE_STREAM_DOES_NOT_EXIST => {
                return Err(Error::new(
                    Reason::PartitionNotFound,
                    format!("partition stream {stream:?} does not exist"),
                ));
            }
            // The broker blocks publishers while a resource alarm (disk or
            // memory below its limit) lasts.
            CODE_PRECONDITION_FAILED => {
                return Err(Error::new(
                    Reason::BrokerBusy,
                    format!(
                        "the broker at {leader} refuses publishers to {stream:?} for now \
                     (precondition failed: a disk or memory alarm blocks publishing; see \
                     `rabbitmq-diagnostics alarms`)"
                    ),
                ));
            }
            code => {
                return Err(Error::new(
                    Reason::BrokerUnavailable,
                    format!("cannot publish to {stream:?} on {leader}: response code {code:#04x}"),
                ));
            }
        }
        let Some(name) = name else {
            return Ok(Numbering::Counter(0));
        };
        let last = publisher::stored_sequence(link, name, stream).await?;
        Ok(Numbering::Sequences {
            name: name.to_owned(),
            last,
        })
    }

    /// Time since the last batch was submitted (or since opening).
    pub fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || self.connection.link().has_failed()
            || self.sender().is_none_or(|q| q.is_closed())
    }

    fn sender(&self) -> Option<mpsc::Sender<Append>> {
        lock(&self.queue).clone()
    }

    /// Queues `records` behind every batch submitted before; the returned
    /// [`Submitted`] resolves once the broker answered for each record.
    /// Submitting in order and awaiting the answers later is what lets a
    /// caller pipeline batches without reordering them.
    pub async fn submit(&self, records: Vec<NewRecord>) -> Submitted {
        *lock(&self.last_used) = Instant::now();
        let count = records.len();
        let (done, outcome) = oneshot::channel();
        let queued = match self.sender() {
            Some(queue) => queue.send(Append { records, done }).await.is_ok(),
            None => false,
        };
        Submitted {
            outcome: queued.then_some(outcome),
            count,
            stream: self.stream.clone(),
            closed: self.closed.clone(),
            confirm_timeout: self.confirm_timeout,
        }
    }

    /// Stops taking batches, waits (up to the confirm timeout) for the
    /// writer to hand every queued batch to the broker and for their
    /// confirms, then deletes the publisher and leaves the connection.
    /// Batches still unconfirmed then fail with UNAVAILABLE.
    pub async fn close(&self) {
        lock(&self.queue).take();
        let Some(mut writer) = self.writer.lock().await.take() else {
            return; // Closed before.
        };
        if tokio::time::timeout(self.confirm_timeout, &mut writer)
            .await
            .is_err()
        {
            // Leaving the connection below drops the batches' senders.
            writer.abort();
        }
        self.closed.store(true, Ordering::Release);
        let link = self.connection.link();
        if publisher::delete(link, self.publisher_id).await.is_err() {
            // Confirms for this publisher may still come: its id must not
            // be given to another.
            self.connection.retire();
        }
        self.connection.detach(self.publisher_id);
    }
}

/// What the writer task writes with.
struct WriterSetup {
    connection: Arc<PublishConnection>,
    publisher_id: u8,
    stream: String,
    max_frame_bytes: usize,
    /// The partition's setting: frames of at most this many records, each
    /// sent once the broker answered for the ones before, so that no chunk
    /// holds records of two frames.
    max_chunk_records: Option<usize>,
}

/// Takes batches off the queue, numbers and frames their records and sends
/// them. Ends when the queue closes (after waiting for outstanding confirms)
/// or the connection fails.
async fn write_loop(
    setup: WriterSetup,
    mut batches: mpsc::Receiver<Append>,
    confirms: Arc<Confirms>,
    closed: Arc<AtomicBool>,
    mut numbering: Numbering,
) {
    let WriterSetup {
        connection,
        publisher_id,
        stream,
        max_frame_bytes,
        max_chunk_records,
    } = setup;
    let link = connection.link();
    let mut next_batch: u64 = 0;
    let mut taken = Vec::new();
    // A named producer's question for its stored sequence, unanswered.
    let mut check: Option<BoxFuture<'_, Result<u64>>> = None;
    loop {
        let received = tokio::select! {
            stored = async {
                match check.as_mut() {
                    Some(check) => check.await,
                    None => std::future::pending().await,
                }
            } => {
                check = None;
                if !learn(stored, &mut numbering, &confirms, &closed) {
                    return;
                }
                continue;
            }
            received = batches.recv_many(&mut taken, QUEUE_DEPTH) => received,
        };
        if received == 0 {
            break;
        }
        if let Numbering::Sequences { name, .. } = &numbering {
            if check.is_none() && confirms.is_idle() {
                // Another instance may have written for this producer id
                // since this one's records were confirmed. The question
                // goes ahead of the frames, without waiting for its answer:
                // the broker answers it before it takes them, and drops
                // (and confirms) what they hold at or below the answer.
                confirms.start_check();
                match SequenceQuery::send(link, name, &stream).await {
                    Ok(query) => check = Some(Box::pin(query.answer())),
                    Err(e) => {
                        for append in taken.drain(..) {
                            let _ = append.done.send(vec![Err(e.clone()); append.records.len()]);
                        }
                        confirms.fail_all(&e);
                        closed.store(true, Ordering::Release);
                        return;
                    }
                }
            }
        }
        let mut frame = PublishFrame::new(publisher_id);
        for append in taken.drain(..) {
            let batch = next_batch;
            next_batch = next_batch.wrapping_add(1);
            confirms.register(batch, append.records.len(), append.done);
            for (index, record) in append.records.into_iter().enumerate() {
                let id = match &mut numbering {
                    Numbering::Counter(next) => {
                        let id = *next;
                        *next = next.wrapping_add(1);
                        id
                    }
                    Numbering::Sequences { last, .. } => {
                        let sequence = record.sequence.unwrap_or(0);
                        if sequence <= *last {
                            confirms.settle(batch, index, Ok(Stored::Duplicate));
                            continue;
                        }
                        *last = sequence;
                        sequence
                    }
                };
                let message = record.encode();
                let at_cap = max_chunk_records.is_some_and(|cap| frame.len() >= cap);
                if !frame.is_empty()
                    && (at_cap
                        || !frame.takes(&message)
                        || frame.size_with(&message) > max_frame_bytes)
                {
                    let full = std::mem::replace(&mut frame, PublishFrame::new(publisher_id));
                    if !send(link, full, &confirms, &closed).await {
                        return;
                    }
                    if max_chunk_records.is_some()
                        && !answered(&mut check, &mut numbering, &confirms, &closed).await
                    {
                        return;
                    }
                }
                confirms.expect(id, batch, index);
                frame.push(id, message);
            }
        }
        if !frame.is_empty() {
            if !send(link, frame, &confirms, &closed).await {
                return;
            }
            if max_chunk_records.is_some()
                && !answered(&mut check, &mut numbering, &confirms, &closed).await
            {
                return;
            }
        }
    }
    if let Some(check) = check {
        if !learn(check.await, &mut numbering, &confirms, &closed) {
            return;
        }
    }
    confirms.wait_idle().await;
}

/// Takes a named producer's stored sequence as the broker answered it:
/// records at or below it are duplicates, those sent and those to come.
/// False when the question failed: so did every record awaiting an answer,
/// and the producer is closed.
fn learn(
    stored: Result<u64>,
    numbering: &mut Numbering,
    confirms: &Confirms,
    closed: &AtomicBool,
) -> bool {
    match stored {
        Ok(stored) => {
            if let Numbering::Sequences { last, .. } = numbering {
                *last = (*last).max(stored);
            }
            confirms.end_check(stored);
            true
        }
        Err(e) => {
            confirms.fail_all(&e);
            closed.store(true, Ordering::Release);
            false
        }
    }
}

/// Waits until the broker answered every record sent so far (after a named
/// producer's question for its stored sequence, which answers wait for):
/// the next frame reaches the broker's writer alone, and no chunk holds
/// records of two frames. False when the question failed (see [`learn`]).
async fn answered(
    check: &mut Option<BoxFuture<'_, Result<u64>>>,
    numbering: &mut Numbering,
    confirms: &Confirms,
    closed: &AtomicBool,
) -> bool {
    if let Some(check) = check.take() {
        if !learn(check.await, numbering, confirms, closed) {
            return false;
        }
    }
    confirms.wait_answered().await;
    true
}

/// Writes `frame`; when the connection fails, every record awaiting its
/// confirm fails and the producer is marked closed (false).
async fn send(link: &Link, frame: PublishFrame, confirms: &Confirms, closed: &AtomicBool) -> bool {
    match link.send_buf(frame.finish()).await {
        Ok(()) => true,
        Err(e) => {
            confirms.fail_all(&e);
            closed.store(true, Ordering::Release);
            false
        }
    }
}
