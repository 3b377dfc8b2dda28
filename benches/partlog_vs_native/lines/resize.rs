//! Growing a stream under load (ResizeStream): a consumer group (one
//! partlog `Consume` member, committing every 50 ms) reads while `Publish`
//! calls come at a fixed rate; the stream grows from the base partition
//! count to twice it. Reported: the time from the ResizeStream call to the
//! first record of the new epoch the group is handed (a record of a new
//! partition, or after its partition's epoch marker), and the longest a
//! Publish call waited around the resize — the outage publishers see —
//! against the goal of two routing leases. Native clients cannot grow a
//! super stream, so these lines compare with the goal, not a native
//! variant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use partlog::proto::{self, consume_response::Event, PublishRecord};
use serde_json::{json, Map};
use tokio::time::Instant;

use super::with_fresh_stream;
use crate::bench::{Bench, Measured, Variant};
use crate::report::{Metric, Side, Unit};
use crate::setup::Result;

/// The only variant: partlog's ResizeStream.
#[derive(Debug, Clone, Copy)]
struct Resize;

impl Variant for Resize {
    fn side(self) -> Side {
        Side::Partlog
    }

    fn id(self) -> &'static str {
        "partlog-resize-stream"
    }
}

/// Records per Publish call.
const BATCH: u64 = 10;
/// Distinct keys.
const KEYS: u64 = 1_000;
/// Steady load before and after the resize.
const STEADY: Duration = Duration::from_secs(2);
/// How often the member commits what it was handed.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// Longest wait for the first new-epoch record after the resize answered.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn grow(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let from = o.base_partitions();
    let to = from * 2;
    let lease = Duration::from_millis(o.routing_lease_ms);
    let section = format!(
        "growing a stream {from} → {to} partitions under {} rec/s of Publish and a Consume \
         group (routing lease {lease:?})",
        o.resize_rate
    );
    bench
        .rounds(&section, &[Resize], o.rounds, false, |_, _| {
            resize_once(bench, from, to)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    report.against_goal(
        &section,
        "ResizeStream → first new-epoch delivery",
        Resize.id(),
        Metric::ExtraSeconds("first_new_epoch_s"),
        None,
    );
    report.against_goal(
        &section,
        "publish outage (longest Publish call around the resize), vs 2 × routing lease",
        Resize.id(),
        Metric::ExtraSeconds("publish_outage_s"),
        Some(2.0 * lease.as_secs_f64()),
    );
    Ok(())
}

/// One Publish call: when it was sent and answered.
struct Call {
    sent: Instant,
    answered: Instant,
}

async fn resize_once(bench: &Bench, from: u32, to: u32) -> Result<Measured> {
    with_fresh_stream(bench, "resize", from, |stream| async move {
        let mut client = bench.partlog.client().await?;
        let first_new = Arc::new(Mutex::new(None));
        let member = consume(client.clone(), &stream, from, first_new.clone()).await?;

        let calls = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let meter = bench.meter().await;
        let publishing = Instant::now();
        let publisher = tokio::spawn(publish(
            client.clone(),
            stream.clone(),
            bench.options.resize_rate,
            calls.clone(),
            failures.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(STEADY).await;

        let started = Instant::now();
        client
            .resize_stream(proto::ResizeStreamRequest {
                stream: stream.clone(),
                partitions: to,
            })
            .await?;
        let resized = Instant::now();
        tokio::time::sleep(STEADY).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let published = publisher.await??;
        let publishing = publishing.elapsed();
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let first_new = loop {
            if let Some(at) = *first_new.lock().unwrap() {
                break at;
            }
            if Instant::now() >= deadline {
                return Err("the group was handed no record of the new epoch".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let resources = meter.finish().await;
        member.abort();
        if let Some(failure) = failures.lock().unwrap().first() {
            return Err(format!("a Publish call failed around the resize: {failure}").into());
        }
        let outage = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.answered >= started)
            .map(|c| c.answered - c.sent)
            .max()
            .unwrap_or_default();
        let mut extra = Map::new();
        extra.insert(
            "first_new_epoch_s".into(),
            json!((first_new - started).as_secs_f64()),
        );
        extra.insert("publish_outage_s".into(), json!(outage.as_secs_f64()));
        extra.insert(
            "resize_call_s".into(),
            json!((resized - started).as_secs_f64()),
        );
        // Records and CPU over the whole publishing, at the fixed rate.
        Ok(Measured {
            unit: Unit::Records,
            records: published,
            elapsed: publishing,
            latency: None,
            service_latency: None,
            resources,
            extra,
        })
    })
    .await
}

/// Publish calls of [`BATCH`] records at `rate` records/s, each in its own
/// task, until `stop`; returns the records acknowledged.
async fn publish(
    client: proto::part_log_client::PartLogClient<tonic::transport::Channel>,
    stream: String,
    rate: u64,
    calls: Arc<Mutex<Vec<Call>>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let every = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let mut ticks = tokio::time::interval(every);
    let mut running = Vec::new();
    let mut next_key = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        ticks.tick().await;
        let records = (0..BATCH)
            .map(|i| PublishRecord {
                key: format!("key-{}", (next_key + i) % KEYS),
                value: vec![0; 100].into(),
                ..Default::default()
            })
            .collect();
        next_key += BATCH;
        let request = proto::PublishRequest {
            stream: stream.clone(),
            records,
            ..Default::default()
        };
        let (mut client, calls, failures) = (client.clone(), calls.clone(), failures.clone());
        running.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = client.publish(request).await;
            let answered = Instant::now();
            let failed = match answer {
                Ok(answer) => answer
                    .into_inner()
                    .results
                    .into_iter()
                    .find_map(|r| r.error.map(|e| e.message)),
                Err(status) => Some(status.to_string()),
            };
            match failed {
                None => calls.lock().unwrap().push(Call { sent, answered }),
                Some(why) => failures.lock().unwrap().push(why),
            }
        }));
    }
    for call in running {
        call.await?;
    }
    let answered = calls.lock().unwrap().len() as u64;
    Ok(answered * BATCH)
}

/// A group member of every partition that notes when it is first handed a
/// record of the new epoch: of a partition at or past `from`, or after its
/// partition's epoch marker.
async fn consume(
    mut client: proto::part_log_client::PartLogClient<tonic::transport::Channel>,
    stream: &str,
    from: u32,
    first_new: Arc<Mutex<Option<Instant>>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (requests, outgoing) = tokio::sync::mpsc::channel(64);
    requests
        .send(proto::ConsumeRequest {
            open: Some(proto::ConsumeOpen {
                stream: stream.to_owned(),
                group: "bench-resize".into(),
                ..Default::default()
            }),
            credit_records: 10_000,
            ..Default::default()
        })
        .await?;
    let mut responses = client
        .consume(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    Ok(tokio::spawn(async move {
        let mut markers: HashMap<u32, u64> = HashMap::new();
        let mut processed: HashMap<u32, u64> = HashMap::new();
        let mut handed = 0;
        let mut commit = tokio::time::interval(COMMIT_EVERY);
        loop {
            let message = tokio::select! {
                message = responses.message() => message,
                _ = commit.tick() => {
                    let request = proto::ConsumeRequest {
                        commits: std::mem::take(&mut processed),
                        credit_records: std::mem::take(&mut handed),
                        ..Default::default()
                    };
                    if requests.send(request).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Ok(Some(message)) = message else { return };
            match message.event {
                Some(Event::Record(record)) => {
                    let new_epoch = record.partition >= from
                        || markers
                            .get(&record.partition)
                            .is_some_and(|&marker| record.offset > marker);
                    if new_epoch {
                        first_new.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    processed.insert(record.partition, record.offset);
                    handed += 1;
                }
                Some(Event::EpochMarker(marker)) => {
                    markers.insert(marker.partition, marker.offset);
                }
                _ => {}
            }
        }
    }))
}
