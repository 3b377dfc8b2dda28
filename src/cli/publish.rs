//! `partlog publish`: records from standard input, in batches pipelined
//! through one PublishStream call, with a summary at the end.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::Status;

use super::client::{self, describe_status, Failure, Result};
use super::input::{parse_line, InputFormat};
use super::output::{Printer, Row};
use super::{Common, PublishArgs};
use crate::proto::{self, PublishRecord, PublishStreamRequest};

/// A batch is sent once it holds this many bytes of keys, values and
/// headers even if it has fewer than `--batch` records: far below the
/// server's batch limit and gRPC's usual 4 MiB message limit.
const BATCH_BYTES: usize = 1 << 20;

/// Batches read ahead of the server's answers.
const BATCHES_AHEAD: usize = 16;

/// Failed records listed one by one; the rest are only counted.
const FAILURES_LISTED: usize = 20;

/// How often progress is shown: redrawn on a terminal, a line otherwise
/// (so that only long runs print any).
const PROGRESS_ON_TERMINAL: Duration = Duration::from_millis(500);
const PROGRESS_IN_LOGS: Duration = Duration::from_secs(10);

/// A batch ready to send, with the input line of each record.
#[derive(Debug, PartialEq)]
struct Batch {
    records: Vec<PublishRecord>,
    lines: Vec<u64>,
}

/// Turns input lines into batches, numbering sequences.
struct Batcher {
    format: InputFormat,
    idempotent: bool,
    next_sequence: u64,
    /// `--filter`: for records without a filter of their own.
    filter: Option<String>,
    batch_records: usize,
    records: Vec<PublishRecord>,
    lines: Vec<u64>,
    bytes: usize,
}

impl Batcher {
    fn new(format: InputFormat, idempotent: bool, first_sequence: u64, batch: u32) -> Batcher {
        Batcher {
            format,
            idempotent,
            next_sequence: first_sequence,
            filter: None,
            batch_records: batch as usize,
            records: Vec::new(),
            lines: Vec::new(),
            bytes: 0,
        }
    }

    fn with_filter(self, filter: Option<String>) -> Batcher {
        Batcher { filter, ..self }
    }

    /// Adds line `number`; returns a batch when one is full.
    fn push(&mut self, number: u64, line: &[u8]) -> Result<Option<Batch>, String> {
        let Some(record) = parse_line(self.format, line)? else {
            return Ok(None);
        };
        let sequence = match (self.idempotent, record.sequence) {
            (false, None) => 0,
            (false, Some(_)) => return Err("a sequence needs --producer-id".into()),
            (true, given) => {
                let sequence = given.unwrap_or(self.next_sequence);
                self.next_sequence = sequence.saturating_add(1);
                sequence
            }
        };
        let filter = record
            .filter
            .or_else(|| self.filter.clone())
            .unwrap_or_default();
        self.bytes += record.key.len()
            + record.value.len()
            + filter.len()
            + record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        self.records.push(PublishRecord {
            key: record.key,
            value: record.value.into(),
            headers: record.headers,
            sequence,
            filter,
            ..Default::default()
        });
        self.lines.push(number);
        let full = self.records.len() >= self.batch_records || self.bytes >= BATCH_BYTES;
        Ok(full.then(|| self.take()))
    }

    /// The last, partial batch.
    fn finish(&mut self) -> Option<Batch> {
        (!self.records.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Batch {
        self.bytes = 0;
        Batch {
            records: std::mem::take(&mut self.records),
            lines: std::mem::take(&mut self.lines),
        }
    }
}

/// Reads standard input into batches until its end, an input error or
/// the call's end; runs on a thread of its own (stdin blocks).
fn read_input(
    mut batcher: Batcher,
    stream: String,
    producer_id: String,
    requests: mpsc::Sender<PublishStreamRequest>,
    lines_of: mpsc::UnboundedSender<Vec<u64>>,
    read: Arc<AtomicU64>,
) -> Result<(), Failure> {
    let send = |batch: Batch| {
        read.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        // The lines go first: the answer to the batch looks them up.
        let _ = lines_of.send(batch.lines);
        requests
            .blocking_send(PublishStreamRequest {
                stream: stream.clone(),
                records: batch.records,
                producer_id: producer_id.clone(),
                source: None,
            })
            .is_ok()
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Other(format!("cannot read standard input: {e}")))?;
        if read == 0 {
            break;
        }
        number += 1;
        let batch = batcher
            .push(number, &line)
            .map_err(|why| Failure::Usage(format!("standard input line {number}: {why}")))?;
        // A closed call ends reading; its status says why.
        if batch.is_some_and(|batch| !send(batch)) {
            return Ok(());
        }
    }
    if let Some(batch) = batcher.finish() {
        send(batch);
    }
    Ok(())
}

/// Per-partition counts of the answered records.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Counts {
    stored: u64,
    duplicates: u64,
    failed: u64,
}

/// A line of the summary: one partition, or the total (no partition).
#[derive(Debug, Serialize)]
struct SummaryRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<u32>,
    #[serde(flatten)]
    counts: Counts,
}

impl Row for SummaryRow {
    const HEADER: &'static [&'static str] = &["PARTITION", "STORED", "DUPLICATES", "FAILED"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.partition
                .map_or_else(|| "total".into(), |p| p.to_string()),
            self.counts.stored.to_string(),
            self.counts.duplicates.to_string(),
            self.counts.failed.to_string(),
        ]
    }
}

/// What the answers said so far.
#[derive(Default)]
struct Tally {
    partitions: BTreeMap<u32, Counts>,
    total: Counts,
    failures: Vec<String>,
}

impl Tally {
    fn answer(&mut self, lines: &[u64], results: &[proto::PublishResult]) {
        for (line, result) in lines.iter().zip(results) {
            let counts = self.partitions.entry(result.partition).or_default();
            match &result.error {
                Some(error) => {
                    counts.failed += 1;
                    self.total.failed += 1;
                    if self.failures.len() < FAILURES_LISTED {
                        let code = tonic::Code::from_i32(error.code);
                        let sequence = match result.sequence {
                            0 => String::new(),
                            s => format!(", sequence {s}"),
                        };
                        self.failures.push(format!(
                            "line {line} (partition {}{sequence}): {}: {}",
                            result.partition,
                            client::code_name(code),
                            error.message
                        ));
                    }
                }
                None if result.duplicate => {
                    counts.duplicates += 1;
                    self.total.duplicates += 1;
                }
                None => {
                    counts.stored += 1;
                    self.total.stored += 1;
                }
            }
        }
    }

    fn answered(&self) -> u64 {
        self.total.stored + self.total.duplicates + self.total.failed
    }

    fn rows(&self) -> Vec<SummaryRow> {
        self.partitions
            .iter()
            .map(|(p, counts)| SummaryRow {
                partition: Some(*p),
                counts: *counts,
            })
            .chain(std::iter::once(SummaryRow {
                partition: None,
                counts: self.total,
            }))
            .collect()
    }
}

pub async fn run(args: PublishArgs, common: &Common) -> Result<()> {
    let mut client = client::connect(common).await?;
    // Before reading any input: an unknown stream fails at once, and the
    // summary lists every partition.
    let described = client
        .describe_stream(proto::DescribeStreamRequest {
            stream: args.stream.clone(),
        })
        .await?
        .into_inner();
    let mut tally = Tally::default();
    for partition in described.stream.unwrap_or_default().partitions {
        tally.partitions.insert(partition.index, Counts::default());
    }

    let (requests, requests_out) = mpsc::channel(BATCHES_AHEAD);
    let (lines_of, mut lines_in) = mpsc::unbounded_channel();
    let read = Arc::new(AtomicU64::new(0));
    let batcher = Batcher::new(
        args.format,
        args.producer_id.is_some(),
        args.first_sequence.unwrap_or(1),
        args.batch,
    )
    .with_filter(args.filter.clone());
    if std::io::stdin().is_terminal() {
        eprintln!("reading records from standard input; end them with Ctrl-D");
    }
    let reader = std::thread::spawn({
        let (stream, producer_id, read) = (
            args.stream.clone(),
            args.producer_id.clone().unwrap_or_default(),
            read.clone(),
        );
        move || read_input(batcher, stream, producer_id, requests, lines_of, read)
    });

    let mut answers = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(requests_out))
        .await?
        .into_inner();
    let mut progress = Progress::new();
    let call_failure: Option<Status> = loop {
        tokio::select! {
            answer = answers.next() => match answer {
                None => break None,
                Some(Err(status)) => break Some(status),
                Some(Ok(answer)) => {
                    let lines = lines_in.recv().await.unwrap_or_default();
                    tally.answer(&lines, &answer.results);
                }
            },
            () = progress.tick() => progress.show(read.load(Ordering::Relaxed), tally.answered()),
        }
    };
    progress.clear();
    drop(answers);
    // After a complete call the reader is done: the call ended with its
    // requests, at the input's end or at a bad line. After a failed one it
    // may still wait for input that no longer matters.
    let input = match call_failure {
        None => reader
            .join()
            .unwrap_or_else(|_| Err(Failure::Other("reading standard input failed".into()))),
        Some(_) => Ok(()),
    };

    // Input that failed before a record was sent published nothing to sum up.
    if input.is_ok() || read.load(Ordering::Relaxed) > 0 {
        Printer::new(common.json).rows(&tally.rows())?;
    }
    for failure in &tally.failures {
        eprintln!("failed: {failure}");
    }
    let unanswered = read.load(Ordering::Relaxed) - tally.answered();
    if let Some(status) = call_failure {
        let mut message = describe_status(&status);
        if unanswered > 0 {
            let (records, were) = if unanswered == 1 {
                ("record", "was")
            } else {
                ("records", "were")
            };
            message += &format!(
                "\n{unanswered} {records} sent {were} not answered: they may or may not be stored"
            );
        }
        return Err(Failure::Other(message));
    }
    input?;
    if tally.total.failed > 0 {
        return Err(Failure::Other(format!(
            "{} of {} records were not stored",
            tally.total.failed,
            tally.answered()
        )));
    }
    Ok(())
}

/// Progress on standard error for long inputs.
struct Progress {
    terminal: bool,
    interval: tokio::time::Interval,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let period = if terminal {
            PROGRESS_ON_TERMINAL
        } else {
            PROGRESS_IN_LOGS
        };
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Progress {
            terminal,
            interval,
            shown: false,
        }
    }

    async fn tick(&mut self) {
        self.interval.tick().await;
    }

    fn show(&mut self, read: u64, answered: u64) {
        let text = format!("{read} records read, {answered} answered");
        let mut err = std::io::stderr().lock();
        // Progress is a courtesy: a closed standard error stops nothing.
        let _ = if self.terminal {
            write!(err, "\r\x1b[K{text}")
        } else {
            writeln!(err, "{text}")
        };
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.terminal && self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(batcher: &mut Batcher, input: &[&str]) -> Result<Vec<Batch>, String> {
        let mut batches = Vec::new();
        for (i, line) in input.iter().enumerate() {
            batches.extend(batcher.push(i as u64 + 1, line.as_bytes())?);
        }
        batches.extend(batcher.finish());
        Ok(batches)
    }

    #[test]
    fn batches_hold_at_most_the_batch_size() {
        let mut batcher = Batcher::new(InputFormat::Text, false, 1, 2);
        let batches = lines(&mut batcher, &["a\t1", "", "b\t2", "c\t3"]).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].lines, [1, 3]);
        assert_eq!(batches[1].lines, [4]);
        assert_eq!(batches[1].records[0].key, "c");
        assert!(batches
            .iter()
            .flat_map(|b| &b.records)
            .all(|r| r.sequence == 0));
    }

    #[test]
    fn big_records_end_a_batch_early() {
        let mut batcher = Batcher::new(InputFormat::Text, false, 1, 500);
        let big = "x".repeat(BATCH_BYTES);
        let batches = lines(&mut batcher, &["a", &big, "b"]).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].lines, [1, 2]);
    }

    #[test]
    fn sequences_count_up_from_the_first_or_the_last_given() {
        let mut batcher = Batcher::new(InputFormat::Json, true, 41, 500);
        let batches = lines(
            &mut batcher,
            &[
                r#"{"key":"a"}"#,
                r#"{"key":"b"}"#,
                r#"{"sequence":100}"#,
                "{}",
            ],
        )
        .unwrap();
        let sequences: Vec<u64> = batches[0].records.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [41, 42, 100, 101]);
    }

    #[test]
    fn filter_takes_the_line_s_or_the_default() {
        let mut batcher =
            Batcher::new(InputFormat::Json, false, 1, 500).with_filter(Some("eu".into()));
        let batches = lines(&mut batcher, &[r#"{"filter":"us"}"#, "{}"]).unwrap();
        let filters: Vec<&str> = batches[0]
            .records
            .iter()
            .map(|r| r.filter.as_str())
            .collect();
        assert_eq!(filters, ["us", "eu"]);
    }

    #[test]
    fn a_sequence_without_a_producer_id_is_an_input_error() {
        let mut batcher = Batcher::new(InputFormat::Json, false, 1, 500);
        let error = lines(&mut batcher, &[r#"{"sequence": 3}"#]).unwrap_err();
        assert!(error.contains("--producer-id"), "{error}");
    }

    #[test]
    fn the_tally_counts_per_partition_and_lists_failures() {
        let mut tally = Tally::default();
        let result = |partition, duplicate, error: Option<i32>| proto::PublishResult {
            partition,
            duplicate,
            sequence: 0,
            error: error.map(|code| proto::RecordError {
                code,
                message: "broker gone".into(),
                reason: "BROKER_UNAVAILABLE".into(),
            }),
        };
        tally.answer(
            &[1, 2, 5],
            &[
                result(0, false, None),
                result(0, true, None),
                result(2, false, Some(14)),
            ],
        );
        assert_eq!(tally.answered(), 3);
        assert_eq!(
            tally.failures,
            ["line 5 (partition 2): UNAVAILABLE: broker gone"]
        );
        let table = crate::cli::output::table(&tally.rows());
        assert_eq!(
            table,
            "PARTITION  STORED  DUPLICATES  FAILED\n\
             0          1       1           0\n\
             2          0       0           1\n\
             total      1       1           1\n"
        );
    }
}
