//! Soak (`make soak`, not part of `make test`): 100 idempotent publishers
//! and 10 members of one consumer group for 60 s on loopback, with a broker
//! (application) restart in the middle. Afterwards every acknowledged record is stored
//! exactly once, in per-key order, and reached the group; the counts are
//! printed.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{broker_script, create_stream, read_all, unique_stream, IdempotentPublisher, Partlog};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{CommitRequest, SubscribeRequest};

const PUBLISHERS: u64 = 100;
const MEMBERS: usize = 10;
const PARTITIONS: u32 = 10;
const RUN: Duration = Duration::from_secs(60);
/// The group counts as stuck when it delivers nothing new for this long.
const STALL: Duration = Duration::from_secs(30);

/// A record's identity in its value: publisher and sequence.
fn value(publisher: u64, seq: u64) -> Vec<u8> {
    format!("{publisher}:{seq}").into_bytes()
}

fn parse(value: &[u8]) -> (u64, u64) {
    let text = std::str::from_utf8(value).unwrap();
    let (p, s) = text.split_once(':').unwrap();
    (p.parse().unwrap(), s.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_with_a_broker_restart() {
    let server = Partlog::start_with(&[("PARTLOG_BROKER_REQUEST_TIMEOUT_MS", "3000")]).await;
    let mut client = server.client().await;
    let stream = unique_stream("soak");
    create_stream(&mut client, &stream, PARTITIONS).await;

    let delivered = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let commit_failures = Arc::new(AtomicU64::new(0));
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let mut client = server.client().await;
        let (stream, delivered) = (stream.clone(), delivered.clone());
        let commit_failures = commit_failures.clone();
        let mut events = client
            .subscribe(SubscribeRequest {
                stream: stream.clone(),
                group: "soak-group".into(),
                window: 500,
                ..Default::default()
            })
            .await
            .expect("subscribe")
            .into_inner();
        members.push(tokio::spawn(async move {
            // Commits the last processed offset of each partition every 50
            // records, as a consumer batching its commits would.
            let (mut uncommitted, mut processed) = (HashMap::new(), 0u64);
            while let Ok(Some(message)) = events.message().await {
                let Some(Event::Record(r)) = message.event else {
                    continue;
                };
                delivered.lock().unwrap().push(parse(&r.value));
                uncommitted.insert(r.partition, r.offset);
                processed += 1;
                if processed % 50 == 0 {
                    let offsets = std::mem::take(&mut uncommitted);
                    let committed = client
                        .commit(CommitRequest {
                            group: "soak-group".into(),
                            stream: stream.clone(),
                            offsets,
                        })
                        .await;
                    if committed.is_err() {
                        commit_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let mut publishers = Vec::new();
    for publisher in 0..PUBLISHERS {
        publishers.push(IdempotentPublisher::spawn(
            server.client().await,
            &stream,
            &format!("soak-{publisher}"),
            10,
            move |seq| (format!("p{publisher}-k{}", seq % 3), value(publisher, seq)),
        ));
    }

    let started = Instant::now();
    tokio::time::sleep(RUN / 2).await;
    tokio::task::spawn_blocking(|| broker_script(&["restart"], None))
        .await
        .unwrap();
    tokio::time::sleep(RUN.saturating_sub(started.elapsed())).await;
    let mut acknowledged = HashSet::new();
    let mut failed_attempts = 0;
    for (publisher, p) in (0..).zip(publishers) {
        acknowledged.extend(p.acknowledged().iter().map(|(_, s)| (publisher, *s)));
        failed_attempts += p.stop().await;
    }

    // Stored exactly once, per-key order intact.
    let mut stored: HashMap<(u64, u64), usize> = HashMap::new();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for partition in 0..PARTITIONS {
        for r in read_all(&mut client, &stream, partition).await {
            let id = parse(&r.value);
            *stored.entry(id).or_default() += 1;
            per_key.entry(r.key).or_default().push(id.1);
        }
    }
    let lost = acknowledged
        .iter()
        .filter(|id| !stored.contains_key(id))
        .count();
    let duplicated = stored.values().filter(|n| **n > 1).count();
    let out_of_order = per_key
        .values()
        .filter(|seqs| !seqs.windows(2).all(|w| w[0] < w[1]))
        .count();

    // The group receives everything acknowledged (at least once). It may
    // lag behind the publishers; it fails only when it stops catching up.
    let mut missing: HashSet<(u64, u64)> = acknowledged.clone();
    let (mut checked, mut progress_at, drain_started) = (0, Instant::now(), Instant::now());
    let missed = loop {
        let before = missing.len();
        {
            let delivered = delivered.lock().unwrap();
            for id in &delivered[checked..] {
                missing.remove(id);
            }
            checked = delivered.len();
        }
        if missing.len() < before {
            progress_at = Instant::now();
        }
        if missing.is_empty() || progress_at.elapsed() > STALL {
            break missing.len();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let caught_up_after = drain_started.elapsed();
    let deliveries = delivered.lock().unwrap().len();
    for m in members {
        m.abort();
    }
    println!(
        "soak: {} s, {PUBLISHERS} publishers, {MEMBERS} group members, broker restarted once\n\
         acknowledged {}, stored {}, lost {lost}, duplicated {duplicated}, keys out of order \
         {out_of_order}, failed attempts (retried) {}, group deliveries {deliveries} \
         (redelivered {}), not delivered {missed} (the group caught up {:.0?} after publishing \
         stopped), failed commits (during the outage) {}",
        RUN.as_secs(),
        acknowledged.len(),
        stored.len(),
        failed_attempts,
        deliveries.saturating_sub(stored.len()),
        caught_up_after,
        commit_failures.load(Ordering::Relaxed),
    );
    if missed > 0 {
        let log = server.log();
        let mut warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .filter(|l| !l.contains("Heartbeat task stopped") && !l.contains("Stream closed"))
            .collect();
        warnings.dedup();
        eprintln!(
            "partlog's warnings:\n{}",
            warnings[warnings.len().saturating_sub(40)..].join("\n")
        );
    }
    assert_eq!((lost, duplicated, out_of_order, missed), (0, 0, 0, 0));
}
