//! Publish throughput over the value size × partitions matrix and of large
//! values (with publish → confirm latency at full speed), and publish →
//! confirm latency at a half and a quarter of the native maximum rate.

use serde_json::Map;

use super::{check_stored, expected_after_priming, with_fresh_stream};
use crate::bench::{Bench, Measured, Round, Variant};
use crate::publish::{close, drive, prime, Pace, PublishVariant, Target};
use crate::records::Dataset;
use crate::report::{Metric, Report, Unit};
use crate::setup::Result;
use crate::stats::Percentile;

use PublishVariant::{NativePerPartition, NativeSuperStream, PartlogPublish, PartlogPublishStream};

/// Partlog and native alternate.
const VARIANTS: [PublishVariant; 4] = [
    PartlogPublish,
    NativePerPartition,
    PartlogPublishStream,
    NativeSuperStream,
];

#[derive(Debug, Clone, Copy)]
enum Speed {
    Full,
    RecordsPerSec(f64),
}

fn section_name(value_size: usize, partitions: u32, bench: &Bench) -> String {
    format!(
        "publish {value_size} B values, {partitions} partitions ({} batches of {} in flight)",
        bench.options.clients,
        bench.options.batch_of(value_size)
    )
}

/// Throughput of every publishing variant for each value size and
/// partition count; latency at full speed for the first of each.
pub async fn throughput(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    // One warm-up for the matrix: every measurement opens its connections
    // and producers before it is timed anyway.
    let mut warm_up = true;
    let matrix = o.value_size.iter().flat_map(|&size| {
        o.partitions
            .iter()
            .map(move |&partitions| (size, partitions))
    });
    let large = o
        .large_value_size
        .iter()
        .map(|&size| (size, o.base_partitions()));
    for (value_size, partitions) in matrix.chain(large) {
        let batch = o.batch_of(value_size);
        let dataset = Dataset::new(o.keys, value_size, partitions);
        let section = section_name(value_size, partitions, bench);
        let warm = std::mem::take(&mut warm_up);
        bench
            .rounds(&section, &VARIANTS, o.rounds, warm, |variant, round| {
                let records = o.round_records(round, dataset.value_size);
                publish_once(bench, &dataset, variant, Speed::Full, records, batch)
            })
            .await?;
        let mut report = bench.report.lock().unwrap();
        for (partlog, native) in [
            (PartlogPublish, NativePerPartition),
            (PartlogPublishStream, NativePerPartition),
            (PartlogPublish, NativeSuperStream),
        ] {
            compare(&mut report, &section, partlog, native, Metric::Throughput);
        }
        let base = value_size == o.base_value_size() && partitions == o.base_partitions();
        if base {
            latency_lines(&mut report, &section);
        }
        for metric in [Metric::BrokerCpu, Metric::OutsideBrokerCpu] {
            compare(
                &mut report,
                &section,
                PartlogPublish,
                NativePerPartition,
                metric,
            );
        }
    }
    Ok(())
}

/// Latency at `1 / divisor` of the fastest native throughput of this run
/// (measured here when the throughput line did not run).
pub async fn rate_latency(bench: &Bench, divisor: u32, fraction: &str) -> Result<()> {
    let o = &bench.options;
    let dataset = Dataset::new(o.keys, o.base_value_size(), o.base_partitions());
    let full_speed = section_name(o.base_value_size(), o.base_partitions(), bench);
    let measured_max = {
        let report = bench.report.lock().unwrap();
        report.median(&full_speed, NativePerPartition.id(), Metric::Throughput)
    };
    let native_max = match measured_max {
        Some(max) => max,
        None => {
            bench
                .rounds(
                    &full_speed,
                    &[NativePerPartition],
                    o.rounds,
                    true,
                    |variant, round| {
                        let records = o.round_records(round, dataset.value_size);
                        let batch = o.batch_of(dataset.value_size);
                        publish_once(bench, &dataset, variant, Speed::Full, records, batch)
                    },
                )
                .await?;
            let report = bench.report.lock().unwrap();
            report
                .median(&full_speed, NativePerPartition.id(), Metric::Throughput)
                .ok_or("no native maximum")?
        }
    };
    let rate = (native_max / f64::from(divisor)).round();
    let section = format!(
        "publish → confirm at {rate:.0} rec/s ({fraction} the native maximum), {} B values, {} partitions, batches of {}",
        o.base_value_size(),
        o.base_partitions(),
        o.latency_batch
    );
    bench
        .rounds(&section, &VARIANTS, o.rounds, true, |variant, round| {
            let records = match round {
                Round::Warmup => o.warmup_records,
                Round::Measured(_) => o.latency_records,
            };
            let speed = Speed::RecordsPerSec(rate);
            publish_once(bench, &dataset, variant, speed, records, o.latency_batch)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    latency_lines(&mut report, &section);
    Ok(())
}

fn compare(
    report: &mut Report,
    section: &str,
    partlog: PublishVariant,
    native: PublishVariant,
    metric: Metric,
) {
    let what = match metric {
        Metric::Throughput => String::new(),
        Metric::Latency(p) => format!("{} publish → confirm, ", p.label()),
        Metric::BrokerCpu => "broker CPU, ".into(),
        Metric::OutsideBrokerCpu => "CPU outside the broker, ".into(),
        Metric::Connections => "broker connections, ".into(),
        Metric::Seconds | Metric::ExtraSeconds(_) => "seconds, ".into(),
        Metric::BrokerMegabytes => "bytes the broker sent, ".into(),
    };
    let title = format!("{what}{} vs {}", partlog.label(), native.label());
    report.compare(section, title, partlog.id(), native.id(), metric);
}

fn latency_lines(report: &mut Report, section: &str) {
    for p in [Percentile::P50, Percentile::P99, Percentile::P999] {
        compare(
            report,
            section,
            PartlogPublish,
            NativePerPartition,
            Metric::Latency(p),
        );
    }
    for p in [Percentile::P50, Percentile::P99, Percentile::P999] {
        compare(
            report,
            section,
            PartlogPublish,
            NativeSuperStream,
            Metric::Latency(p),
        );
    }
    compare(
        report,
        section,
        PartlogPublishStream,
        NativePerPartition,
        Metric::Latency(Percentile::P99),
    );
}

/// One measurement on a fresh stream: opens the variant's paths, primes
/// each with one batch (connections, producers, partlog's lazily created
/// producers), then publishes `records` timed, and checks that the broker
/// stored exactly what was confirmed, partition by partition.
async fn publish_once(
    bench: &Bench,
    dataset: &Dataset,
    variant: PublishVariant,
    speed: Speed,
    records: u64,
    batch: usize,
) -> Result<Measured> {
    with_fresh_stream(bench, "publish", dataset.partitions, |stream| async move {
        let target = Target {
            partlog: &bench.partlog,
            environment: &bench.environment,
            stream: &stream,
            partitions: dataset.partitions,
            batch,
            value_size: dataset.value_size,
        };
        let (paths, in_flight) = variant.open(&target, bench.options.clients).await?;
        let (paths, primed) = prime(paths, in_flight, dataset, batch).await?;

        let pace = match speed {
            Speed::Full => Pace::ClosedLoop { in_flight },
            Speed::RecordsPerSec(records_per_sec) => Pace::Rate { records_per_sec },
        };
        let batches = dataset.batches(0, records, batch);
        let meter = bench.meter().await;
        let driven = drive(paths, pace, batches).await;
        let resources = meter.finish().await;
        let (paths, outcome) = driven?;
        close(paths).await;

        let expected = expected_after_priming(dataset, primed, records);
        check_stored(bench, &stream, variant.label(), &expected).await?;
        Ok(Measured {
            unit: Unit::Records,
            records: outcome.records,
            elapsed: outcome.elapsed,
            latency: outcome.latency.percentiles(),
            service_latency: match speed {
                Speed::Full => None,
                Speed::RecordsPerSec(_) => outcome.service.percentiles(),
            },
            resources,
            extra: Map::new(),
        })
    })
    .await
}
