//! Group consumption with commits: partlog members against native single
//! active consumers, the same number of members committing at the same
//! cadence, from the first record of a prefilled stream.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{prefill, with_fresh_stream, THROUGHPUT_AND_CPU};
use crate::bench::{Bench, Measured, Variant};
use crate::group::{self, GroupImpl};
use crate::records::Dataset;
use crate::report::Unit;
use crate::setup::Result;
use crate::tally::{Published, Tally};

use GroupImpl::{NativeSingleActive, PartlogConsume, PartlogSubscribeCommit};

/// Partlog and native alternate.
const VARIANTS: [GroupImpl; 3] = [PartlogConsume, NativeSingleActive, PartlogSubscribeCommit];

/// How long a native stored offset may take to become visible: the broker
/// does not acknowledge store_offset.
const STORED_OFFSET_VISIBLE: Duration = Duration::from_secs(10);

pub async fn with_commits(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let dataset = Dataset::new(o.keys, o.base_value_size(), o.group_partitions);
    let section = format!(
        "group of {} members from first, each committing every {} records (partlog Subscribe: Commit on a second channel), {} B values, {} partitions",
        o.group_members,
        o.commit_every,
        o.base_value_size(),
        o.group_partitions
    );
    bench
        .rounds(&section, &VARIANTS, o.rounds, true, |variant, round| {
            let records = o.round_records(round, dataset.value_size);
            group_once(bench, &dataset, variant, records)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    let native = NativeSingleActive;
    for partlog in [PartlogConsume, PartlogSubscribeCommit] {
        for (what, metric) in THROUGHPUT_AND_CPU {
            report.compare(
                &section,
                format!("{what}{} vs {}", partlog.label(), native.label()),
                partlog.id(),
                native.id(),
                metric,
            );
        }
    }
    Ok(())
}

/// One measurement on a fresh, prefilled stream: from the members joining
/// until every record was processed and committed. Then checks every record
/// arrived (redeliveries allowed) and the group's stored committed offset
/// is each partition's last record.
async fn group_once(
    bench: &Bench,
    dataset: &Dataset,
    implementation: GroupImpl,
    records: u64,
) -> Result<Measured> {
    with_fresh_stream(bench, "group", dataset.partitions, |stream| async move {
        let per_partition = prefill(bench, dataset, &stream, records).await?;
        // Only publishers wrote: offsets 0.. in each partition.
        let last: Vec<Option<u64>> = per_partition.iter().map(|n| n.checked_sub(1)).collect();
        let group = format!("{stream}-group");
        let tally = Arc::new(Tally::new(dataset, 0, records, Published::InOrder, false));
        let meter = bench.meter().await;
        let started = tokio::time::Instant::now();
        let consumed =
            group::consume(bench, implementation, &stream, &group, &last, tally.clone()).await;
        let elapsed = started.elapsed();
        let resources = meter.finish().await;
        let outcome = match consumed {
            Ok(outcome) => outcome,
            Err(e) => {
                let state = implementation.describe(bench, &stream, &group).await;
                return Err(format!("{e}; the group: {state}").into());
            }
        };
        tally.verify(false)?;
        wait_committed(bench, implementation, &stream, &group, &last).await?;

        let mut extra = tally.extra();
        extra.insert("commits".into(), json!(outcome.commits));
        extra.insert("joined_s".into(), json!(outcome.joined.as_secs_f64()));
        Ok(Measured {
            unit: Unit::Records,
            records,
            elapsed,
            latency: None,
            service_latency: None,
            resources,
            extra,
        })
    })
    .await
}

/// Waits until the group's committed offset of each partition is its last
/// record (`last`), as `implementation` stores it.
pub async fn wait_committed(
    bench: &Bench,
    implementation: GroupImpl,
    stream: &str,
    group: &str,
    last: &[Option<u64>],
) -> Result<()> {
    let partitions = last.len() as u32;
    let deadline = tokio::time::Instant::now() + STORED_OFFSET_VISIBLE;
    loop {
        let committed = implementation
            .committed(bench, stream, group, partitions)
            .await?;
        if committed == last {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("committed offsets {committed:?}, last records {last:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
