//! Consume → publish → commit: one member of a fresh group on a prefilled
//! input publishes one output per input record to a fresh output stream of
//! the same partition count and commits what was stored — partlog with
//! `source` (exactly once) against partlog without it, the cost of exactly
//! once, and against the native client with named producers.

use serde_json::json;

use super::group::wait_committed;
use super::{check_stored, prefill, with_fresh_stream, THROUGHPUT_AND_CPU};
use crate::bench::{Bench, Measured, Variant};
use crate::pipeline::{self, PipelineImpl, BATCH};
use crate::records::Dataset;
use crate::report::{Metric, Unit};
use crate::setup::Result;

use PipelineImpl::{Native, PartlogNoSource, PartlogSource};

/// Partlog and native alternate.
const VARIANTS: [PipelineImpl; 3] = [PartlogSource, Native, PartlogNoSource];

pub async fn consume_publish_commit(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let dataset = Dataset::new(o.keys, o.base_value_size(), o.group_partitions);
    let section = format!(
        "pipeline of one member: consume → publish (batches of up to {BATCH}) → commit, {} B values, {} partitions",
        o.base_value_size(),
        o.group_partitions
    );
    bench
        .rounds(&section, &VARIANTS, o.rounds, true, |variant, round| {
            let records = o.round_records(round, dataset.value_size);
            pipeline_once(bench, &dataset, variant, records)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    report.compare(
        &section,
        format!(
            "cost of exactly once: {} vs {} (both partlog)",
            PartlogSource.label(),
            PartlogNoSource.label()
        ),
        PartlogSource.id(),
        PartlogNoSource.id(),
        Metric::Throughput,
    );
    for (what, metric) in THROUGHPUT_AND_CPU {
        report.compare(
            &section,
            format!("{what}{} vs {}", PartlogSource.label(), Native.label()),
            PartlogSource.id(),
            Native.id(),
            metric,
        );
    }
    Ok(())
}

/// One measurement on a fresh input and a fresh output.
async fn pipeline_once(
    bench: &Bench,
    dataset: &Dataset,
    variant: PipelineImpl,
    records: u64,
) -> Result<Measured> {
    with_fresh_stream(
        bench,
        "pipeline-in",
        dataset.partitions,
        |input| async move {
            with_fresh_stream(bench, "pipeline-out", dataset.partitions, |output| {
                measure(bench, dataset, variant, records, input, output)
            })
            .await
        },
    )
    .await
}

/// Prefills the input with `records` and opens the pipeline (its member
/// joins, its publisher opens: a native member and named producers take
/// seconds, unmeasured), then measures until every input's output was
/// stored and every commit done. Then checks the output holds each input
/// once, in the input's partition (keys are kept), and the group's
/// committed offset is each input partition's last record.
async fn measure(
    bench: &Bench,
    dataset: &Dataset,
    variant: PipelineImpl,
    records: u64,
    input: String,
    output: String,
) -> Result<Measured> {
    let per_partition = prefill(bench, dataset, &input, records).await?;
    // Only publishers wrote the input: offsets 0.. in each partition.
    let last: Vec<Option<u64>> = per_partition.iter().map(|n| n.checked_sub(1)).collect();
    let group = format!("{input}-group");
    let opening = tokio::time::Instant::now();
    let pipeline = variant
        .open(bench, dataset, &input, &output, &group)
        .await?;
    let opened = opening.elapsed();
    let meter = bench.meter().await;
    bench.sampler.sample_connections();
    let started = tokio::time::Instant::now();
    let batches = pipeline::run(pipeline, records).await;
    let elapsed = started.elapsed();
    let resources = meter.finish().await;
    let batches = batches?;
    check_stored(bench, &output, variant.label(), &per_partition).await?;
    wait_committed(bench, variant.group(), &input, &group, &last).await?;
    let mut extra = serde_json::Map::new();
    extra.insert("batches".into(), json!(batches));
    extra.insert("opened_s".into(), json!(opened.as_secs_f64()));
    Ok(Measured {
        unit: Unit::Records,
        records,
        elapsed,
        latency: None,
        service_latency: None,
        resources,
        extra,
    })
}
