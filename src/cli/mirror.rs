//! `partlog mirror`: copies a stream to another partlog exactly once.
//!
//! The mirror is a `Consume` member of a group on the source stream and
//! publishes what it holds to the target stream in a `PublishStream` call,
//! each batch tagged with its `source` (group, source stream, partition and
//! each record's offset): the target stores each source record once, however
//! often it is sent. Once the target answered a batch, the mirror commits
//! the batch's last offset in the group, in band; the next holder of a
//! partition (after a restart, or another mirror process of the group)
//! starts after it and what it sends again is reported as duplicates. Keys
//! are routed by the target's partition count; a key's records keep their
//! order, since a source partition's records go out in offset order.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::client::{self, Failure, Result};
use super::{Common, MirrorArgs};
use crate::proto::{self, consume_response::Event, AssignmentState};

/// Records the mirror holds (received, not yet answered by the target).
const CREDIT: u32 = 5_000;
/// Records per batch to the target.
const BATCH: usize = 500;
/// How long a partial batch waits for company.
const LINGER: Duration = Duration::from_millis(20);
/// Progress lines when the output is not a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often an idle `--until-caught-up` mirror asks for the group's lag.
const CAUGHT_UP_EVERY: Duration = Duration::from_millis(200);

/// A batch sent to the target and not answered yet.
struct InFlight {
    partition: u32,
    /// The source offset of its last record.
    last: u64,
    records: u32,
    /// The hold of the partition it was sent under: a batch sent before the
    /// mirror lost the partition commits nothing.
    hold: u64,
}

/// The batches sent to the target: where they go, under which hold of
/// their partition, and which are not answered yet.
struct Batches<'a> {
    sender: mpsc::Sender<proto::PublishStreamRequest>,
    args: &'a MirrorArgs,
    target_stream: &'a str,
    /// Partition → the hold under which the mirror holds it now.
    holds: BTreeMap<u32, u64>,
    in_flight: VecDeque<InFlight>,
}

/// What has been copied.
#[derive(Default)]
struct Progress {
    stored: u64,
    duplicates: u64,
}

pub async fn run(args: MirrorArgs, common: &Common) -> Result<()> {
    let target_stream = args
        .to_stream
        .clone()
        .unwrap_or_else(|| args.stream.clone());
    let mut source = client::connect(common).await?;
    let mut target = client::connect(&args.target(common)).await?;
    let described = target
        .describe_stream(proto::DescribeStreamRequest {
            stream: target_stream.clone(),
        })
        .await;
    if let Err(status) = described {
        return Err(match status.code() {
            tonic::Code::NotFound => Failure::Other(format!(
                "the target has no stream {target_stream:?}: create it first (partlog --server \
                 {} stream create {target_stream} --partitions N)",
                args.to
            )),
            _ => status.into(),
        });
    }

    let (consume_requests, outgoing) = mpsc::channel(64);
    let open = proto::ConsumeRequest {
        open: Some(proto::ConsumeOpen {
            stream: args.stream.clone(),
            group: args.group.clone(),
            ..Default::default()
        }),
        credit_records: CREDIT,
        ..Default::default()
    };
    let _ = consume_requests.send(open).await;
    let mut events = source
        .consume(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let (sender, outgoing) = mpsc::channel(64);
    let mut answers = target
        .publish_stream(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let mut batches = Batches {
        sender,
        args: &args,
        target_stream: &target_stream,
        holds: BTreeMap::new(),
        in_flight: VecDeque::new(),
    };

    let mut pending: BTreeMap<u32, Vec<proto::Record>> = BTreeMap::new();
    let mut next_hold = 0u64;
    let mut progress = Progress::default();
    let mut status = Status::new(&args.stream, &target_stream);
    let mut lag_client = source.clone();
    let mut flush_at: Option<Instant> = None;
    let mut report = tokio::time::interval_at(Instant::now() + status.every(), status.every());
    let mut caught_up_check = tokio::time::interval(CAUGHT_UP_EVERY);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut stopping = false;
    loop {
        let linger = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.next(), if !stopping => match event {
                Some(Ok(message)) => match message.event {
                    Some(Event::Record(record)) => {
                        let partition = record.partition;
                        let held = pending.entry(partition).or_default();
                        held.push(record);
                        if held.len() >= BATCH {
                            let records = std::mem::take(held);
                            batches.send(partition, records).await?;
                        } else if flush_at.is_none() {
                            flush_at = Some(Instant::now() + LINGER);
                        }
                    }
                    Some(Event::Assignment(assignment)) => {
                        let partition = assignment.partition;
                        pending.remove(&partition);
                        if assignment.state() == AssignmentState::Active {
                            next_hold += 1;
                            batches.holds.insert(partition, next_hold);
                        } else {
                            // The next holder starts after the group's commit.
                            batches.holds.remove(&partition);
                        }
                    }
                    Some(Event::Commit(ack)) => {
                        if let Some(error) = ack.error {
                            // A partition the mirror no longer holds: its
                            // next holder sends the rest again.
                            eprintln!(
                                "warning: commit of partition {} at {} refused: {}",
                                ack.partition, ack.offset, error.message
                            );
                        }
                    }
                    // The mirror reads without filters; the target routes
                    // the records over its own partitions, so a growth of
                    // the source needs nothing of it.
                    Some(Event::Skipped(_)) | Some(Event::EpochMarker(_)) | None => {}
                },
                Some(Err(status)) => return Err(status.into()),
                None => return Err(Failure::Other("the source ended the Consume call".into())),
            },
            () = linger => {
                flush_at = None;
                for (partition, records) in std::mem::take(&mut pending) {
                    batches.send(partition, records).await?;
                }
            }
            answer = answers.next() => {
                let answer = match answer {
                    Some(answer) => answer?,
                    None => return Err(Failure::Other("the target ended the PublishStream call".into())),
                };
                let Some(batch) = batches.in_flight.pop_front() else {
                    return Err(Failure::Other("the target answered a batch never sent".into()));
                };
                if let Some(failed) = answer.results.iter().find_map(|r| r.error.as_ref()) {
                    return Err(Failure::Other(format!(
                        "the target did not store records of partition {} (up to offset {}): \
                         {}; run the mirror again, it resumes after the last committed record",
                        batch.partition, batch.last, failed.message
                    )));
                }
                let duplicates = answer.results.iter().filter(|r| r.duplicate).count() as u64;
                progress.duplicates += duplicates;
                progress.stored += answer.results.len() as u64 - duplicates;
                let mut request = proto::ConsumeRequest {
                    credit_records: batch.records,
                    ..Default::default()
                };
                if batches.holds.get(&batch.partition) == Some(&batch.hold) {
                    request.commits.insert(batch.partition, batch.last);
                }
                let _ = consume_requests.send(request).await;
                if stopping && batches.in_flight.is_empty() {
                    status.print(&progress, lag(&mut lag_client, &args).await, true);
                    return Ok(());
                }
            }
            _ = report.tick() => {
                status.print(&progress, lag(&mut lag_client, &args).await, false);
            }
            _ = caught_up_check.tick(), if args.until_caught_up
                && pending.values().all(Vec::is_empty)
                && batches.in_flight.is_empty() =>
            {
                let lag = lag(&mut lag_client, &args).await;
                if lag == Some(0) {
                    status.print(&progress, lag, true);
                    return Ok(());
                }
            }
            _ = &mut interrupted, if !stopping => {
                // What was received and not sent is sent again by the next
                // holder; what is in flight is answered and committed first.
                stopping = true;
                pending.clear();
                if batches.in_flight.is_empty() {
                    status.print(&progress, lag(&mut lag_client, &args).await, true);
                    return Ok(());
                }
            }
        }
    }
}

impl Batches<'_> {
    /// Sends a partition's records to the target, tagged with their
    /// source; nothing for a partition the mirror no longer holds.
    async fn send(&mut self, partition: u32, records: Vec<proto::Record>) -> Result<()> {
        let (Some(last), Some(&hold)) =
            (records.last().map(|r| r.offset), self.holds.get(&partition))
        else {
            return Ok(());
        };
        let count = records.len() as u32;
        let request = proto::PublishStreamRequest {
            stream: self.target_stream.to_owned(),
            records: records
                .into_iter()
                .map(|r| proto::PublishRecord {
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                    source_offset: r.offset,
                    ..Default::default()
                })
                .collect(),
            source: Some(proto::Source {
                group: self.args.group.clone(),
                stream: self.args.stream.clone(),
                partition,
                commit_offset: None,
            }),
            ..Default::default()
        };
        self.sender
            .send(request)
            .await
            .map_err(|_| Failure::Other("the target ended the PublishStream call".into()))?;
        self.in_flight.push_back(InFlight {
            partition,
            last,
            records: count,
            hold,
        });
        Ok(())
    }
}

/// The group's lag on the source, summed over partitions (`None` when the
/// source does not answer).
async fn lag(client: &mut client::Client, args: &MirrorArgs) -> Option<u64> {
    let request = proto::GetOffsetsRequest {
        stream: args.stream.clone(),
        group: args.group.clone(),
    };
    let offsets = client.get_offsets(request).await.ok()?.into_inner();
    Some(offsets.partitions.iter().map(|p| p.lag).sum())
}

/// Progress on standard error: one line rewritten on a terminal, a line
/// every [`PROGRESS_EVERY`] otherwise.
struct Status {
    what: String,
    terminal: bool,
}

impl Status {
    fn new(source: &str, target: &str) -> Status {
        Status {
            what: format!("{source} → {target}"),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn every(&self) -> Duration {
        if self.terminal {
            Duration::from_secs(1)
        } else {
            PROGRESS_EVERY
        }
    }

    fn print(&mut self, progress: &Progress, lag: Option<u64>, last: bool) {
        let lag = lag.map_or_else(|| "unknown".to_owned(), |lag| lag.to_string());
        let line = format!(
            "{}: {} records copied, {} were there already, lag {lag}",
            self.what, progress.stored, progress.duplicates
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
    }
}
