//! The lines of the table: what each measures, on which variants, and
//! which comparisons it reports.

mod consume;
mod delivery;
mod filter;
mod group;
mod pipeline;
mod publish;
mod resize;
mod scale;

use std::future::Future;

use partlog::proto::GetOffsetsRequest;

use crate::bench::Bench;
use crate::options::LineGroup;
use crate::publish::{close, drive, Pace, PublishVariant, Target};
use crate::records::{Dataset, PRIME_FIRST};
use crate::report::{Metric, Report};
use crate::setup::Result;

/// Throughput and CPU per record, each with its title's prefix: the rows
/// that compare two variants of a throughput section.
const THROUGHPUT_AND_CPU: [(&str, Metric); 3] = [
    ("", Metric::Throughput),
    ("broker CPU, ", Metric::BrokerCpu),
    ("CPU outside the broker, ", Metric::OutsideBrokerCpu),
];

/// Runs the selected lines in table order; stops at the first failure
/// (what ran so far is still reported).
pub async fn run_all(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    if o.runs(LineGroup::Publish) {
        publish::throughput(bench).await?;
    }
    if o.runs(LineGroup::PublishLatency) {
        publish::rate_latency(bench, 2, "half").await?;
        publish::rate_latency(bench, 4, "a quarter of").await?;
    }
    if o.runs(LineGroup::Consume) {
        consume::from_first(bench).await?;
    }
    if o.runs(LineGroup::Group) {
        group::with_commits(bench).await?;
    }
    if o.runs(LineGroup::Pipeline) {
        pipeline::consume_publish_commit(bench).await?;
    }
    if o.runs(LineGroup::DeliveryLatency) {
        delivery::latency(bench).await?;
    }
    if o.runs(LineGroup::Scale) {
        scale::connections(bench).await?;
    }
    if o.runs(LineGroup::Filter) {
        filter::read_one_value(bench).await?;
    }
    if o.runs(LineGroup::Resize) {
        resize::grow(bench).await?;
    }
    Ok(())
}

/// Notes below the table: what is unmeasured and why, run-wide figures.
pub fn summary_notes(bench: &Bench, report: &mut Report, partlog_hwm_kib: Option<u64>) {
    match partlog_hwm_kib {
        Some(kib) => report.notes.push(format!(
            "partlog peak RSS over the run (VmHWM): {:.1} MB",
            kib as f64 / 1024.0
        )),
        None => report.notes.push(
            "partlog's pid is unknown (--partlog without --partlog-pid): its CPU, memory and \
             connections are unmeasured"
                .into(),
        ),
    }
    if bench.broker.pid().is_none() {
        report.notes.push(
            "the broker does not run on this machine (or its process was not found): broker CPU \
             is unmeasured"
                .into(),
        );
    }
    let (mut measured, mut busy, mut rest) = (0.0, 0.0, 0.0);
    for sample in &report.samples {
        if let (Some(machine), Some(other)) = (
            sample.resources.machine_cpu_s,
            sample.resources.other_cpu_s(),
        ) {
            measured += sample.seconds;
            busy += machine;
            rest += other;
        }
    }
    if measured > 0.0 && busy > 0.0 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        report.notes.push(format!(
            "while measuring, the machine's cores were {:.0} % busy; {:.0} % of that busy time \
             was neither partlog's, the broker's nor the bench's (other processes, interrupts)",
            100.0 * busy / (measured * cores),
            100.0 * rest / busy
        ));
    }
    report.notes.push(format!(
        "ratios are partlog/native within this run on a shared {}-core machine (broker, partlog, \
         load generator and any other work share it); compare ratios, not absolute numbers",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
}

/// Runs `f` on a fresh super stream and deletes the stream afterwards,
/// whatever `f` gave.
pub async fn with_fresh_stream<F, Fut, T>(
    bench: &Bench,
    what: &str,
    partitions: u32,
    f: F,
) -> Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let stream = bench.fresh_stream(what, partitions).await?;
    let result = f(stream.clone()).await;
    // A stream that cannot be deleted now (the broker is away) is deleted
    // at the end of the run.
    let _ = bench.streams.delete(&stream).await;
    result
}

/// Records stored in each partition, from the broker's partition bounds
/// (through partlog's GetOffsets): the last offset + 1, as a stream that
/// only publishers wrote holds consecutive offsets from 0.
pub async fn stored_per_partition(bench: &Bench, stream: &str) -> Result<Vec<u64>> {
    let rows = bench
        .partlog
        .client()
        .await?
        .get_offsets(GetOffsetsRequest {
            group: "bench-verify".into(),
            stream: stream.to_owned(),
        })
        .await?
        .into_inner()
        .partitions;
    let mut stored = vec![0; rows.len()];
    for row in rows {
        if row.first.is_some_and(|first| first != 0) {
            return Err(format!("partition {} starts at {:?}", row.partition, row.first).into());
        }
        stored[row.partition as usize] = row.tail.map_or(0, |tail| tail + 1);
    }
    Ok(stored)
}

/// Checks that the broker stored exactly `expected` records in each
/// partition: every line checks what it published, so that a record stored
/// twice or lost (also one that no consumer waited for, after the last one
/// it expected) fails the run. `what` names the publishing in the error.
pub async fn check_stored(bench: &Bench, stream: &str, what: &str, expected: &[u64]) -> Result<()> {
    let stored = stored_per_partition(bench, stream).await?;
    if stored != expected {
        return Err(format!(
            "{what} stored {stored:?} records per partition, expected {expected:?}"
        )
        .into());
    }
    Ok(())
}

/// Records per partition after `primed` priming records and records
/// `0..records` of `dataset` were published.
pub fn expected_after_priming(dataset: &Dataset, primed: u64, records: u64) -> Vec<u64> {
    dataset
        .expected_per_partition(PRIME_FIRST, primed)
        .iter()
        .zip(dataset.expected_per_partition(0, records))
        .map(|(primed, measured)| primed + measured)
        .collect()
}

/// Publishes records `0..records` of `dataset` to `stream` (unmeasured)
/// and checks the broker stored them; returns the records per partition.
///
/// It publishes through ONE native super stream producer routing with the
/// client's own hash strategy, not with partlog's routing function: the
/// partitions the records land in are then the native client's, and the
/// counts checked here and each record's partition checked by the
/// [`crate::tally::Tally`] (partlog's routing) compare the two. One
/// producer with batches pipelined keeps each key's records in sequence
/// order ([`crate::tally::Published::InOrder`]).
pub async fn prefill(
    bench: &Bench,
    dataset: &Dataset,
    stream: &str,
    records: u64,
) -> Result<Vec<u64>> {
    let batch = bench.options.batch;
    let target = Target {
        partlog: &bench.partlog,
        environment: &bench.environment,
        stream,
        partitions: dataset.partitions,
        batch,
        value_size: dataset.value_size,
    };
    let (paths, _) = PublishVariant::NativeSuperStream.open(&target, 1).await?;
    let in_flight = bench.options.clients;
    let (paths, _) = drive(
        paths,
        Pace::ClosedLoop { in_flight },
        dataset.batches(0, records, batch),
    )
    .await?;
    close(paths).await;
    let expected = dataset.expected_per_partition(0, records);
    check_stored(
        bench,
        stream,
        "the native prefill (routed by the native client)",
        &expected,
    )
    .await?;
    Ok(expected)
}
