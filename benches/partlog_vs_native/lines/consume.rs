//! Consume throughput from the first record: partlog `Subscribe` and a
//! `Read` loop against native consumers.

use std::sync::Arc;

use super::{prefill, with_fresh_stream, THROUGHPUT_AND_CPU};
use crate::bench::{Bench, Measured, Variant};
use crate::consume::{ConsumeVariant, Consumers, From};
use crate::records::Dataset;
use crate::report::Unit;
use crate::setup::Result;
use crate::tally::{Published, Tally};

use ConsumeVariant::{NativeConsumer, PartlogRead, PartlogSubscribe};

/// Partlog and native alternate.
const VARIANTS: [ConsumeVariant; 3] = [PartlogSubscribe, NativeConsumer, PartlogRead];

pub async fn from_first(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let dataset = Dataset::new(o.keys, o.base_value_size(), o.base_partitions());
    let section = format!(
        "consume from first, {} B values, {} partitions",
        o.base_value_size(),
        o.base_partitions()
    );
    bench
        .rounds(&section, &VARIANTS, o.rounds, true, |variant, round| {
            let records = o.round_records(round, dataset.value_size);
            consume_once(bench, &dataset, variant, records)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    for partlog in [PartlogSubscribe, PartlogRead] {
        for (what, metric) in THROUGHPUT_AND_CPU {
            report.compare(
                &section,
                format!("{what}{} vs {}", partlog.label(), NativeConsumer.label()),
                partlog.id(),
                NativeConsumer.id(),
                metric,
            );
        }
    }
    Ok(())
}

/// One measurement on a fresh, prefilled stream: from subscribing until
/// the last record arrived, then checks every record came exactly once,
/// in order, in its partition.
async fn consume_once(
    bench: &Bench,
    dataset: &Dataset,
    variant: ConsumeVariant,
    records: u64,
) -> Result<Measured> {
    with_fresh_stream(bench, "consume", dataset.partitions, |stream| async move {
        let expected = prefill(bench, dataset, &stream, records).await?;
        let tally = Arc::new(Tally::new(dataset, 0, records, Published::InOrder, false));
        let meter = bench.meter().await;
        let started = tokio::time::Instant::now();
        let consumed = async {
            let consumers = Consumers::start(
                bench,
                variant,
                &stream,
                From::First,
                expected,
                tally.clone(),
            )
            .await?;
            bench.sampler.sample_connections();
            consumers.finish(&tally).await
        }
        .await;
        let elapsed = started.elapsed();
        let resources = meter.finish().await;
        consumed?;
        tally.verify(true)?;
        Ok(Measured {
            unit: Unit::Records,
            records,
            elapsed,
            latency: None,
            service_latency: None,
            resources,
            extra: tally.extra(),
        })
    })
    .await
}
