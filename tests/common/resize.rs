//! The elastic-partitions workload (`tests/resize.rs`, `tests/cluster.rs`):
//! publishers writing per-key sequence numbers through partlog instances,
//! a consumer group with members on each instance, and the checks of what
//! the group was delivered while the stream grew.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{self, consume_response::Event, PublishRecord};
use rabbitmq_stream_client::{Client, ClientOptions};
use tonic::transport::Channel;

use super::{broker_host, publish_ok};

/// Keys each publisher writes, one record per key per batch.
const KEYS_PER_PUBLISHER: usize = 16;
/// Pause between a publisher's batches: a steady, modest load.
const PUBLISH_PAUSE: Duration = Duration::from_millis(15);
/// Credit a member keeps granted.
const CREDIT: u32 = 200;
/// How often a member commits what it processed.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// Keys of the routing check, which the order check leaves out.
const ROUTE_PREFIX: &str = "route-";

/// One record a member was handed.
#[derive(Debug, Clone)]
struct Delivery {
    member: String,
    partition: u32,
    offset: u64,
    key: String,
    sequence: u64,
    at: Instant,
}

/// What the workload saw, shared by its tasks.
#[derive(Default)]
struct Seen {
    deliveries: Vec<Delivery>,
    /// (partition, committed offset, when the commit was acknowledged).
    commits: Vec<(u32, u64, Instant)>,
    markers: Vec<proto::EpochMarker>,
    /// Highest acknowledged sequence per key.
    acknowledged: HashMap<String, u64>,
    /// Why publishes failed (they are retried).
    publish_failures: BTreeMap<String, u64>,
}

/// Publishers and group members running against partlog instances.
pub struct Workload {
    stream: String,
    group: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// Members take no more records meanwhile: the group falls behind.
    paused: Arc<AtomicBool>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
    members: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    pub fn new(stream: &str) -> Workload {
        Workload {
            stream: stream.to_owned(),
            group: format!("{stream}-group"),
            seen: Arc::default(),
            stop: Arc::default(),
            paused: Arc::default(),
            publishers: Vec::new(),
            members: Vec::new(),
        }
    }

    /// A publisher of its own keys through the instances at `urls`, the
    /// first first: it moves on to the next when one stops answering.
    pub fn publish(&mut self, name: &str, urls: Vec<String>) {
        let keys: Vec<String> = (0..KEYS_PER_PUBLISHER)
            .map(|i| format!("{name}-{i}"))
            .collect();
        let (stream, seen, stop) = (self.stream.clone(), self.seen.clone(), self.stop.clone());
        self.publishers.push(tokio::spawn(async move {
            let mut next: Vec<u64> = vec![1; keys.len()];
            let mut instance = 0;
            let mut failures_here = 0;
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = PartLogClient::connect(urls[instance].clone()).await.ok();
                }
                let Some(connected) = client.as_mut() else {
                    instance = (instance + 1) % urls.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let records = keys
                    .iter()
                    .zip(&next)
                    .map(|(key, sequence)| PublishRecord {
                        key: key.clone(),
                        value: sequence.to_string().into_bytes().into(),
                        ..Default::default()
                    })
                    .collect();
                let request = proto::PublishRequest {
                    stream: stream.clone(),
                    records,
                    ..Default::default()
                };
                match connected.publish(request).await {
                    Ok(answer) => {
                        failures_here = 0;
                        let mut seen = seen.lock().unwrap();
                        for ((key, sequence), result) in
                            keys.iter().zip(&mut next).zip(&answer.get_ref().results)
                        {
                            match &result.error {
                                None => {
                                    seen.acknowledged.insert(key.clone(), *sequence);
                                    *sequence += 1;
                                }
                                Some(error) => {
                                    *seen
                                        .publish_failures
                                        .entry(error.reason.clone())
                                        .or_default() += 1
                                }
                            }
                        }
                    }
                    Err(status) => {
                        let reason = format!("{:?}", status.code());
                        *seen
                            .lock()
                            .unwrap()
                            .publish_failures
                            .entry(reason)
                            .or_default() += 1;
                        failures_here += 1;
                        if failures_here >= 3 {
                            // Gone: the next instance.
                            instance = (instance + 1) % urls.len();
                            client = None;
                            failures_here = 0;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
                tokio::time::sleep(PUBLISH_PAUSE).await;
            }
        }));
    }

    /// A member of the group on the instance at `url` (Consume, committing
    /// what it was handed every 50 ms). It ends quietly when its instance
    /// goes away.
    pub async fn join(&mut self, name: &str, url: &str) {
        let mut client = PartLogClient::connect(url.to_owned())
            .await
            .expect("connect a member");
        let (requests, outgoing) = tokio::sync::mpsc::channel(64);
        requests
            .send(proto::ConsumeRequest {
                open: Some(proto::ConsumeOpen {
                    stream: self.stream.clone(),
                    group: self.group.clone(),
                    ..Default::default()
                }),
                credit_records: CREDIT,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut responses = client
            .consume(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .expect("consume")
            .into_inner();
        let (name, seen, paused) = (name.to_owned(), self.seen.clone(), self.paused.clone());
        self.members.push(tokio::spawn(async move {
            let mut processed: BTreeMap<u32, u64> = BTreeMap::new();
            let mut commit = tokio::time::interval(COMMIT_EVERY);
            // Credit of records handed while paused, granted on resuming.
            let mut owed = 0;
            loop {
                let message = tokio::select! {
                    message = responses.message() => message,
                    _ = commit.tick() => {
                        let commits = std::mem::take(&mut processed).into_iter().collect();
                        let credit_records = if paused.load(Ordering::Relaxed) {
                            0
                        } else {
                            std::mem::take(&mut owed)
                        };
                        let request = proto::ConsumeRequest {
                            commits,
                            credit_records,
                            ..Default::default()
                        };
                        if request != proto::ConsumeRequest::default()
                            && requests.send(request).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                };
                // An instance killed ends its members' calls.
                let Ok(Some(message)) = message else { return };
                match message.event.expect("event set") {
                    Event::Record(record) => {
                        let sequence = std::str::from_utf8(&record.value)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        processed.insert(record.partition, record.offset);
                        seen.lock().unwrap().deliveries.push(Delivery {
                            member: name.clone(),
                            partition: record.partition,
                            offset: record.offset,
                            key: record.key,
                            sequence,
                            at: Instant::now(),
                        });
                        owed += 1;
                    }
                    Event::Commit(ack) => {
                        if let Some(committed) = ack.committed {
                            let at = Instant::now();
                            seen.lock()
                                .unwrap()
                                .commits
                                .push((ack.partition, committed, at));
                        }
                    }
                    Event::EpochMarker(marker) => seen.lock().unwrap().markers.push(marker),
                    Event::Assignment(assignment) => {
                        processed.remove(&assignment.partition);
                    }
                    Event::Skipped(_) => {}
                }
            }
        }));
    }

    /// Members take no more records until [`Workload::resume`]: the group
    /// falls behind the publishers.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Stops publishing; returns once the group was handed every
    /// acknowledged record (or `within` passed), and stops the members.
    pub async fn finish(&mut self, within: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.resume();
        for publisher in self.publishers.drain(..) {
            super::stop_task_after(publisher, Duration::from_secs(15)).await;
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !self.all_delivered() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for member in self.members.drain(..) {
            super::stop_task(member).await;
        }
    }

    fn all_delivered(&self) -> bool {
        let seen = self.seen.lock().unwrap();
        let mut highest: HashMap<&str, u64> = HashMap::new();
        for d in &seen.deliveries {
            let top = highest.entry(&d.key).or_default();
            *top = (*top).max(d.sequence);
        }
        seen.acknowledged
            .iter()
            .all(|(key, &acked)| highest.get(key.as_str()).is_some_and(|&h| h >= acked))
    }

    /// Every way what the group was handed breaks the promise: a key's
    /// record handed before its predecessor was; an acknowledged record
    /// never handed; a record handed again after a commit covering it
    /// was acknowledged. Also the counts the test reports.
    fn problems(&self) -> (Vec<String>, String) {
        let seen = self.seen.lock().unwrap();
        let mut problems = Vec::new();
        let mut deliveries = seen.deliveries.clone();
        deliveries.sort_by_key(|d| d.at);
        let mut highest: HashMap<&str, u64> = HashMap::new();
        for d in deliveries
            .iter()
            .filter(|d| !d.key.starts_with(ROUTE_PREFIX))
        {
            let top = highest.entry(&d.key).or_default();
            if d.sequence > *top + 1 {
                problems.push(format!(
                    "key {}: sequence {} handed to {} (partition {}, offset {}) before {}",
                    d.key,
                    d.sequence,
                    d.member,
                    d.partition,
                    d.offset,
                    *top + 1
                ));
            }
            *top = (*top).max(d.sequence);
        }
        for (key, &acked) in &seen.acknowledged {
            let handed = highest.get(key.as_str()).copied().unwrap_or(0);
            if handed < acked {
                problems.push(format!(
                    "key {key}: sequences {}..={acked} acknowledged but never handed to the group",
                    handed + 1
                ));
            }
        }
        let mut first_handed: HashMap<(u32, u64), Instant> = HashMap::new();
        let mut redelivered = 0;
        for d in &deliveries {
            let Some(&first) = first_handed.get(&(d.partition, d.offset)) else {
                first_handed.insert((d.partition, d.offset), d.at);
                continue;
            };
            redelivered += 1;
            let covered = seen
                .commits
                .iter()
                .find(|&&(p, c, at)| p == d.partition && c >= d.offset && at > first && at < d.at);
            if let Some((_, committed, _)) = covered {
                problems.push(format!(
                    "partition {} offset {} handed to {} again after the group's commit of {committed} \
                     was acknowledged",
                    d.partition, d.offset, d.member
                ));
            }
        }
        let mut per_partition: BTreeMap<u32, usize> = BTreeMap::new();
        for d in &deliveries {
            *per_partition.entry(d.partition).or_default() += 1;
        }
        let summary = format!(
            "{} records handed ({redelivered} again after a member change), per partition \
             {per_partition:?}; {} epoch markers; publish failures retried {:?}",
            deliveries.len(),
            seen.markers.len(),
            seen.publish_failures
        );
        (problems, summary)
    }

    /// Fails the test on any of [`Workload::problems`], or when the group
    /// was not handed records of each of the stream's `partitions`;
    /// returns the summary.
    pub fn assert_kept_order(&self, partitions: u32) -> String {
        let (problems, summary) = self.problems();
        assert!(
            problems.is_empty(),
            "{} problems:\n{}\n{summary}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            self.partitions_handed(),
            (0..partitions).collect::<Vec<u32>>(),
            "the group read every partition: {summary}"
        );
        summary
    }

    /// Partitions the group was handed records of.
    fn partitions_handed(&self) -> Vec<u32> {
        let seen = self.seen.lock().unwrap();
        let mut partitions: Vec<u32> = seen.deliveries.iter().map(|d| d.partition).collect();
        partitions.sort();
        partitions.dedup();
        partitions
    }

    /// The epoch markers the members were told of.
    pub fn markers(&self) -> Vec<proto::EpochMarker> {
        self.seen.lock().unwrap().markers.clone()
    }
}

/// Publishes `count` keys through partlog and checks that each went to the
/// partition a native client picks: murmur3 (seed 104729) of the key modulo
/// the length of the broker's partition list, as a native client connected
/// to the node at stream port `port` reads it.
pub async fn native_routing_agrees(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    count: usize,
    port: u16,
) {
    let native = Client::connect(
        ClientOptions::builder()
            .host(&broker_host())
            .port(port)
            .build(),
    )
    .await
    .expect("native client connects");
    let listed = native
        .partitions(stream.to_owned())
        .await
        .expect("the broker lists the partitions")
        .streams;
    let _ = native.close().await;
    let keys: Vec<String> = (0..count).map(|i| format!("{ROUTE_PREFIX}{i}")).collect();
    let mut routed = Vec::new();
    for chunk in keys.chunks(1000) {
        let records = chunk
            .iter()
            .map(|key| PublishRecord {
                key: key.clone(),
                value: b"route".to_vec().into(),
                ..Default::default()
            })
            .collect();
        routed.extend(publish_ok(client, stream, records).await);
    }
    let described = client
        .describe_stream(proto::DescribeStreamRequest {
            stream: stream.to_owned(),
        })
        .await
        .expect("describe")
        .into_inner()
        .stream
        .unwrap();
    let partition_streams: Vec<&str> = described
        .partitions
        .iter()
        .map(|p| p.partition_stream.as_str())
        .collect();
    assert_eq!(
        partition_streams, listed,
        "partlog's partitions are the broker's list, in order"
    );
    for (key, &partition) in keys.iter().zip(&routed) {
        let hash = murmur3::murmur3_32(&mut Cursor::new(key.as_bytes()), 104_729).unwrap();
        let native_choice = &listed[(hash % listed.len() as u32) as usize];
        let partlog_choice = partition_streams[partition as usize];
        assert_eq!(
            partlog_choice, native_choice,
            "key {key:?}: partlog routed to {partlog_choice}, a native client to {native_choice}"
        );
    }
}
