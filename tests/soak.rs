//! Soak (`make soak`, not part of `make test`): 100 idempotent publishers
//! and 10 members of one consumer group (each a `Consume` call) for 60 s on
//! loopback, with a broker restart in the middle — of the single node, or
//! of the three-node cluster when that runs (`make soak-cluster`).
//! Afterwards every acknowledged record is stored exactly once, in per-key
//! order, and reached the group; the counts, and how long the group took
//! to catch up once publishing stopped, are printed.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    broker_script, create_stream, read_all, stop_task, unique_stream, IdempotentPublisher, Member,
    Partlog, Regrant,
};
use partlog::proto::consume_response::Event;

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

/// A member of the group on a Consume stream: records every delivery,
/// grants the records read back ([`Regrant`]), and commits the last
/// processed offset of each partition every 50 records, as a consumer
/// batching its commits would, without waiting for the answers. Commits
/// refused (the broker away, a partition moved) are counted; the next
/// commit or the next owner covers them. The call stays open through the
/// broker restart (partlog's partition tasks reconnect and tell the member
/// INACTIVE and ACTIVE); a call that ends, or a record beyond the credit,
/// panics the member, which fails the test when the members are stopped.
async fn consume(
    mut member: Member,
    delivered: Arc<Mutex<Vec<(u64, u64)>>>,
    commit_failures: Arc<AtomicU64>,
) {
    let (mut uncommitted, mut processed) = (BTreeMap::new(), 0u64);
    let mut regrant = Regrant::default();
    loop {
        let event = tokio::select! {
            event = member.next_within(STALL) => event,
            () = regrant.due() => {
                regrant.grant(&mut member).await;
                continue;
            }
        };
        let Some(event) = event else {
            continue;
        };
        match event {
            Event::Record(r) => {
                delivered.lock().unwrap().push(parse(&r.value));
                uncommitted.insert(r.partition, r.offset);
                processed += 1;
                if processed % 50 == 0 {
                    member.commit(std::mem::take(&mut uncommitted)).await;
                }
                regrant.consumed();
            }
            Event::Commit(ack) if ack.error.is_some() => {
                commit_failures.fetch_add(1, Ordering::Relaxed);
            }
            Event::Commit(_) | Event::Assignment(_) => {}
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
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
        let member = Member::open(&mut client, &stream, "soak-group", 500).await;
        let (delivered, commit_failures) = (delivered.clone(), commit_failures.clone());
        members.push(tokio::spawn(consume(member, delivered, commit_failures)));
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
    // A member that failed fails the test, with its own panic.
    for member in members {
        assert!(stop_task(member).await.is_none(), "a member's loop ended");
    }
    assert_eq!((lost, duplicated, out_of_order, missed), (0, 0, 0, 0));
}
