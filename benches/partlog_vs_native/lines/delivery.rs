//! Publish → subscriber delivery latency: the same publisher at a fixed
//! rate for both sides — partlog `Publish`, whose broker connections send
//! without Nagle's delay, so that the subscriber paths make the difference
//! — and records read by partlog `Subscribe` or by native consumers;
//! latency from the sending time in each value to its arrival (both on
//! this machine's clock).

use std::sync::Arc;

use super::{check_stored, expected_after_priming, with_fresh_stream};
use crate::bench::{Bench, Measured, Round};
use crate::consume::{ConsumeVariant, Consumers, From};
use crate::publish::{close, drive, prime, Pace, PublishVariant, Target};
use crate::records::Dataset;
use crate::report::{Metric, Unit};
use crate::setup::Result;
use crate::stats::Percentile;
use crate::tally::{Published, Tally};

use crate::bench::Variant;
use ConsumeVariant::{NativeConsumer, PartlogSubscribe};

const VARIANTS: [ConsumeVariant; 2] = [PartlogSubscribe, NativeConsumer];

pub async fn latency(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let dataset = Dataset::new(o.keys, o.base_value_size(), o.base_partitions());
    let section = format!(
        "publish → delivery at {} rec/s (partlog Publish, batches of {}), {} B values, {} partitions",
        o.delivery_rate,
        o.latency_batch,
        o.base_value_size(),
        o.base_partitions()
    );
    bench
        .rounds(&section, &VARIANTS, o.rounds, true, |variant, round| {
            let records = match round {
                Round::Warmup => o.warmup_records,
                Round::Measured(_) => o.delivery_records,
            };
            delivery_once(bench, &dataset, variant, records)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    for p in [Percentile::P50, Percentile::P99, Percentile::P999] {
        report.compare(
            &section,
            format!(
                "{} publish → delivery, {} vs {}",
                p.label(),
                PartlogSubscribe.label(),
                NativeConsumer.label()
            ),
            PartlogSubscribe.id(),
            NativeConsumer.id(),
            Metric::Latency(p),
        );
    }
    Ok(())
}

/// One measurement on a fresh stream: consumers attach first, then the
/// publisher sends at the fixed rate; ends with the last delivery and
/// checks every record arrived once, in order.
async fn delivery_once(
    bench: &Bench,
    dataset: &Dataset,
    variant: ConsumeVariant,
    records: u64,
) -> Result<Measured> {
    with_fresh_stream(bench, "delivery", dataset.partitions, |stream| async move {
        let o = &bench.options;
        let target = Target {
            partlog: &bench.partlog,
            environment: &bench.environment,
            stream: &stream,
            partitions: dataset.partitions,
            batch: o.latency_batch,
            value_size: dataset.value_size,
        };
        let (paths, in_flight) = PublishVariant::PartlogPublish
            .open(&target, o.clients)
            .await?;
        // Before the consumers attach (from the next record on), so that
        // they never see the priming records.
        let (paths, primed) = prime(paths, in_flight, dataset, o.latency_batch).await?;
        // Concurrent Publish calls at a fixed rate promise no order among
        // a key's records.
        let tally = Arc::new(Tally::new(
            dataset,
            0,
            records,
            Published::Concurrently,
            true,
        ));
        let expected = dataset.expected_per_partition(0, records);
        let consumers =
            Consumers::start(bench, variant, &stream, From::Next, expected, tally.clone()).await?;
        bench.sampler.sample_connections();
        let pace = Pace::Rate {
            records_per_sec: o.delivery_rate as f64,
        };
        let batches = dataset.batches(0, records, o.latency_batch);
        let meter = bench.meter().await;
        let started = tokio::time::Instant::now();
        let published = drive(paths, pace, batches).await;
        let consumed = consumers.finish(&tally).await;
        let elapsed = started.elapsed();
        let resources = meter.finish().await;
        let (paths, _) = published?;
        close(paths).await;
        consumed?;
        tally.verify(true)?;
        // The consumers stopped at the last record they expected: a record
        // stored twice after it shows only in the counts.
        let stored = expected_after_priming(dataset, primed, records);
        check_stored(bench, &stream, "partlog Publish", &stored).await?;
        Ok(Measured {
            unit: Unit::Records,
            records,
            elapsed,
            latency: tally.latency().and_then(|l| l.percentiles()),
            service_latency: None,
            resources,
            extra: tally.extra(),
        })
    })
    .await
}
