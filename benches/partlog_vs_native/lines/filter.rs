//! Filtered reading. --filter-records records (a million by default) of
//! 100 B values go into one partition through partlog, each with a filter
//! value drawn at random from --filter-values values: once into a stream at
//! partlog's default batching and once into one with `max_chunk_records`
//! (--filter-chunk-records) — the publish throughput each had is the cost
//! of the setting. Then every record of one value is read with `Subscribe`
//! from the first record, filtered on the broker (`filters`) against
//! unfiltered (the client keeps that value's records), on both streams:
//! the time until the last of them arrived, the megabytes (and number) of
//! chunks the broker sent partlog's readers, and the broker's CPU.

use std::time::Duration;

use partlog::proto::start_position::{First, Position};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{PublishRecord, PublishStreamRequest, StartPosition, SubscribeRequest};
use serde_json::json;

use super::check_stored;
use crate::bench::{Bench, Measured, Variant};
use crate::report::{Metric, Side, Unit};
use crate::setup::{Result, StreamSettings};

/// Bytes of each record's value.
const VALUE_SIZE: usize = 100;
/// Batches in flight on the publishing `PublishStream` call.
const WINDOW: usize = 8;
/// The filter value read: one of the --filter-values.
const TARGET: u32 = 7;
/// Longest wait for the next record of a read.
const RECORD_TIMEOUT: Duration = Duration::from_secs(60);

/// How a stream's records were batched into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batching {
    /// As many records per chunk as partlog and the broker put together.
    Default,
    /// `max_chunk_records`: few records per chunk.
    Capped,
}

impl Variant for Batching {
    fn side(self) -> Side {
        Side::Partlog
    }

    fn id(self) -> &'static str {
        match self {
            Batching::Default => "publish-default-batching",
            Batching::Capped => "publish-max-chunk-records",
        }
    }
}

/// One way of reading the target value's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Read {
    batching: Batching,
    /// With `filters`: the broker sends only the chunks that may hold the
    /// value; without, every chunk, and the client keeps the value's.
    filtered: bool,
}

impl Variant for Read {
    fn side(self) -> Side {
        Side::Partlog
    }

    fn id(self) -> &'static str {
        match (self.batching, self.filtered) {
            (Batching::Default, false) => "unfiltered-default-batching",
            (Batching::Default, true) => "filtered-default-batching",
            (Batching::Capped, false) => "unfiltered-max-chunk-records",
            (Batching::Capped, true) => "filtered-max-chunk-records",
        }
    }
}

const READS: [Read; 4] = [
    Read {
        batching: Batching::Default,
        filtered: true,
    },
    Read {
        batching: Batching::Default,
        filtered: false,
    },
    Read {
        batching: Batching::Capped,
        filtered: true,
    },
    Read {
        batching: Batching::Capped,
        filtered: false,
    },
];

/// The filter value of record `i`: drawn at random (a fixed hash, the same
/// in every run) from `values` values for each `run` records in a row.
fn filter_of(i: u64, values: u32, run: u64) -> u32 {
    // splitmix64's finalizer: consecutive runs get unrelated values.
    let mut z = (i / run.max(1)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) % u64::from(values)) as u32
}

fn filter_name(value: u32) -> String {
    format!("f{value}")
}

pub async fn read_one_value(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let default = StreamSettings {
        max_chunk_records: None,
        filter_size_bytes: o.filter_size_bytes,
    };
    let capped = StreamSettings {
        max_chunk_records: Some(o.filter_chunk_records),
        ..default
    };
    let default = bench.fresh_stream_with("filter", 1, default).await?;
    let capped = bench.fresh_stream_with("filter-capped", 1, capped).await?;
    let streams = [(Batching::Default, default), (Batching::Capped, capped)];
    let measured = measure(bench, &streams).await;
    for (_, stream) in &streams {
        let _ = bench.streams.delete(stream).await;
    }
    measured
}

async fn measure(bench: &Bench, streams: &[(Batching, String); 2]) -> Result<()> {
    let o = &bench.options;
    let (records, values, run) = (o.filter_records, o.filter_values, o.filter_run);
    let values_are = match run {
        1 => format!("{values} values"),
        run => format!("{values} values in runs of {run} records"),
    };
    let stream_of = |batching: Batching| {
        let (_, stream) = streams.iter().find(|(b, _)| *b == batching).unwrap();
        stream.clone()
    };
    let publish_section = format!(
        "publish with filter values: {records} records, {values_are}, {VALUE_SIZE} B values, \
         1 partition, max_chunk_records {}",
        o.filter_chunk_records
    );
    let batchings = [Batching::Default, Batching::Capped];
    bench
        .rounds(&publish_section, &batchings, 1, false, |batching, _| {
            publish(bench, stream_of(batching), batching)
        })
        .await?;
    let target = filter_name(TARGET);
    let expected = (0..records)
        .filter(|&i| filter_of(i, values, run) == TARGET)
        .count() as u64;
    let read_section = format!(
        "read one of {values_are} from the first record ({expected} of {records} records), \
         Subscribe, 1 partition, max_chunk_records {}, Bloom filters of {} B",
        o.filter_chunk_records,
        o.filter_size_bytes.unwrap_or(16)
    );
    bench
        .rounds(&read_section, &READS, o.rounds, true, |read, _| {
            subscribe(
                bench,
                stream_of(read.batching),
                read.filtered,
                &target,
                expected,
            )
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    for (what, metric) in [
        ("publish throughput", Metric::Throughput),
        ("publish broker CPU", Metric::BrokerCpu),
    ] {
        report.compare(
            &publish_section,
            format!("{what}, max_chunk_records vs default batching"),
            Batching::Capped.id(),
            Batching::Default.id(),
            metric,
        );
    }
    for batching in batchings {
        let filtered = Read {
            batching,
            filtered: true,
        };
        let unfiltered = Read {
            batching,
            filtered: false,
        };
        let label = match batching {
            Batching::Default => "default batching",
            Batching::Capped => "max_chunk_records",
        };
        for (what, metric) in [
            ("seconds", Metric::Seconds),
            ("bytes the broker sent", Metric::BrokerMegabytes),
            ("broker CPU", Metric::BrokerCpu),
        ] {
            report.compare(
                &read_section,
                format!("{what}, filtered vs unfiltered, {label}"),
                filtered.id(),
                unfiltered.id(),
                metric,
            );
        }
    }
    report.compare(
        &read_section,
        "seconds, filtered: max_chunk_records vs default batching",
        READS[2].id(),
        READS[0].id(),
        Metric::Seconds,
    );
    Ok(())
}

/// Publishes the line's records to `stream` on one `PublishStream` call
/// with [`WINDOW`] batches in flight, then checks the broker stored them.
async fn publish(bench: &Bench, stream: String, batching: Batching) -> Result<Measured> {
    let o = &bench.options;
    let (records, values, run) = (o.filter_records, o.filter_values, o.filter_run);
    let batch = o.batch as u64;
    let mut client = bench.partlog.client().await?;
    let (requests, outgoing) = tokio::sync::mpsc::channel(WINDOW);
    let request = |first: u64| PublishStreamRequest {
        stream: stream.clone(),
        records: (first..records.min(first + batch))
            .map(|i| PublishRecord {
                key: format!("k{}", i % 10_000),
                value: format!("{i:0>VALUE_SIZE$}").into_bytes().into(),
                filter: filter_name(filter_of(i, values, run)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let meter = bench.meter().await;
    let started = tokio::time::Instant::now();
    let mut answers = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let mut next = 0;
    while next < records && next < batch * WINDOW as u64 {
        requests.send(request(next)).await?;
        next += batch;
    }
    let mut answered = 0;
    while answered < records {
        let answer = answers
            .message()
            .await?
            .ok_or("the PublishStream call ended early")?;
        if let Some(failed) = answer.results.iter().find_map(|r| r.error.as_ref()) {
            return Err(format!("a record was not stored: {}", failed.message).into());
        }
        answered += answer.results.len() as u64;
        if next < records {
            requests.send(request(next)).await?;
            next += batch;
        }
    }
    let elapsed = started.elapsed();
    let resources = meter.finish().await;
    drop(requests);
    // The setting is kept as an offset tracking entry, which takes the
    // first offset.
    let taken = match batching {
        Batching::Default => 0,
        Batching::Capped => 1,
    };
    let what = "publishing with filter values";
    check_stored(bench, &stream, what, &[taken + records]).await?;
    Ok(Measured {
        unit: Unit::Records,
        records,
        elapsed,
        latency: None,
        service_latency: None,
        resources,
        extra: serde_json::Map::new(),
    })
}

/// Reads `stream` with `Subscribe` from the first record until the
/// `expected` records of `target` arrived, in offset order; filtered on
/// the broker or not.
async fn subscribe(
    bench: &Bench,
    stream: String,
    filtered: bool,
    target: &str,
    expected: u64,
) -> Result<Measured> {
    let bytes = format!("partlog_chunks_received_bytes_total{{stream=\"{stream}\"}}");
    let chunks = format!("partlog_chunks_received_total{{stream=\"{stream}\"}}");
    let mut client = bench.partlog.client().await?;
    let before = (
        bench.partlog.metric(&bytes).await?,
        bench.partlog.metric(&chunks).await?,
    );
    let meter = bench.meter().await;
    let started = tokio::time::Instant::now();
    let mut events = client
        .subscribe(SubscribeRequest {
            stream: stream.clone(),
            start: Some(StartPosition {
                position: Some(Position::First(First {})),
            }),
            filters: if filtered {
                vec![target.to_owned()]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .await?
        .into_inner();
    let (mut received, mut next_offset) = (0, 0);
    while received < expected {
        let event = tokio::time::timeout(RECORD_TIMEOUT, events.message())
            .await
            .map_err(|_| format!("no record for {RECORD_TIMEOUT:?} after {received}"))??
            .ok_or("the subscription ended")?;
        let Some(Event::Record(record)) = event.event else {
            continue;
        };
        if record.offset < next_offset {
            return Err(format!("offset {} after {}", record.offset, next_offset - 1).into());
        }
        next_offset = record.offset + 1;
        if record.filter == target {
            received += 1;
        } else if filtered {
            return Err(format!("a filtered read delivered {:?}", record.filter).into());
        }
    }
    let elapsed = started.elapsed();
    let resources = meter.finish().await;
    drop(events);
    let after = (
        bench.partlog.metric(&bytes).await?,
        bench.partlog.metric(&chunks).await?,
    );
    let mut extra = serde_json::Map::new();
    if let ((Some(bytes_before), Some(chunks_before)), (Some(bytes), Some(chunks))) =
        (before, after)
    {
        extra.insert("broker_mb".into(), json!((bytes - bytes_before) / 1e6));
        extra.insert("chunks".into(), json!(chunks - chunks_before));
    }
    Ok(Measured {
        unit: Unit::Records,
        records: expected,
        elapsed,
        latency: None,
        service_latency: None,
        resources,
        extra,
    })
}
