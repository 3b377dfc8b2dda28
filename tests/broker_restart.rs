//! A broker restart in the middle of publishing and subscribing: partlog
//! recovers unaided, loses no acknowledged record, duplicates none, keeps
//! per-key order and tells a plain subscriber it re-attached; the members of
//! a group on two instances are told INACTIVE when their connections break
//! and ACTIVE when the broker picks them again, so that in the end each
//! partition has exactly one member that knows it holds it.
//!
//! This binary restarts the broker that `scripts/rabbitmq.sh` runs (the
//! single node or the cluster, whichever runs), so it holds this one test:
//! cargo runs test binaries one after the other.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    assert_one_holder_each, broker_script, create_stream, publish_ok, record, stop_task,
    unique_stream, IdempotentPublisher, MemberEvents, Partlog,
};
use partlog::proto::start_position::{First, Position};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{AssignmentState, StartPosition, SubscribeRequest};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partlog_recovers_from_a_broker_restart() {
    let server = Partlog::start_with(&[("PARTLOG_BROKER_REQUEST_TIMEOUT_MS", "3000")]).await;
    let mut client = server.client().await;
    let stream = unique_stream("restart");
    create_stream(&mut client, &stream, 3).await;

    // Subscriber: every record it sees, and whether it was re-attached.
    let received = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let reattached = Arc::new(Mutex::new(BTreeSet::new()));
    let mut events = client
        .subscribe(SubscribeRequest {
            stream: stream.clone(),
            start: Some(StartPosition {
                position: Some(Position::First(First {})),
            }),
            window: 100,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let subscriber = {
        let (received, reattached) = (received.clone(), reattached.clone());
        tokio::spawn(async move {
            while let Ok(Some(message)) = events.message().await {
                match message.event.expect("event") {
                    Event::Record(r) => {
                        let seq = String::from_utf8(r.value.to_vec())
                            .unwrap()
                            .parse()
                            .unwrap();
                        received.lock().unwrap().push((r.key, seq));
                    }
                    Event::Assignment(a) if a.state() == AssignmentState::Reattached => {
                        reattached.lock().unwrap().insert(a.partition);
                    }
                    Event::Assignment(_) => {}
                    Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
                    Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
                }
            }
            panic!("the subscription ended");
        })
    };

    // Two members of a group, on two instances.
    let other = Partlog::start_with(&[("PARTLOG_BROKER_REQUEST_TIMEOUT_MS", "3000")]).await;
    let member_a = MemberEvents::join(&mut client, "a", &stream, "restart-group").await;
    let member_b =
        MemberEvents::join(&mut other.client().await, "b", &stream, "restart-group").await;

    let publisher =
        IdempotentPublisher::spawn(client.clone(), &stream, "restart-writer", 20, |seq| {
            (format!("key-{}", seq % 7), seq.to_string().into_bytes())
        });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart = tokio::task::spawn_blocking(|| broker_script(&["restart"], None));
    let mut saw_not_serving = false;
    for _ in 0..600 {
        if server.health("").await == Some(ServingStatus::NotServing) {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restart.await.unwrap();
    assert!(
        saw_not_serving,
        "health turns NOT_SERVING while the broker is down"
    );
    let mut serving = false;
    for _ in 0..300 {
        if server.health("").await == Some(ServingStatus::Serving) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        serving,
        "health is SERVING again after the restart:\n{}",
        server.log()
    );
    // Keep publishing a little after the restart, then stop.
    let before = publisher.acknowledged().len();
    for _ in 0..300 {
        if publisher.acknowledged().len() > before + 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acknowledged: Vec<u64> = publisher.acknowledged().iter().map(|(_, s)| *s).collect();
    let failures = publisher.stop().await;
    assert!(
        acknowledged.len() > before,
        "publishing resumed:\n{}",
        server.log()
    );
    assert!(failures > 0, "the outage was visible to the publisher");

    // Every acknowledged record reaches the subscriber exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<u64> = received.lock().unwrap().iter().map(|(_, s)| *s).collect();
        if acknowledged.iter().all(|s| got.contains(s)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "records missing at the subscriber:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let received = received.lock().unwrap().clone();
    let mut counts: HashMap<u64, usize> = HashMap::new();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, seq) in &received {
        *counts.entry(*seq).or_default() += 1;
        per_key.entry(key.clone()).or_default().push(*seq);
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    for (key, seqs) in per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order of {key}");
    }
    assert_eq!(
        reattached.lock().unwrap().len(),
        3,
        "every partition told the subscriber it re-attached"
    );
    // The subscription never ended (its task panics when it does).
    stop_task(subscriber).await;

    // The group: one member knows it holds each partition, and it gets the
    // partition's new records.
    let logs = || format!("a:\n{}\nb:\n{}", server.log(), other.log());
    assert_one_holder_each(&[&member_a, &member_b], 3, Duration::from_secs(60), logs).await;
    let markers: Vec<_> = (0..30)
        .map(|i| record(&format!("marker-{i}"), "marker"))
        .collect();
    let partitions = publish_ok(&mut client, &stream, markers).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for member in [&member_a, &member_b] {
        let expected = partitions
            .iter()
            .filter(|p| member.held().contains(p))
            .count();
        while member.values().iter().filter(|v| *v == b"marker").count() < expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "member {} did not get the new records of its partitions {:?}\n{}",
                member.name,
                member.held(),
                logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Both members' calls stayed open through the restart.
    member_a.stop().await;
    member_b.stop().await;
    println!(
        "broker restart: {} acknowledged, {} delivered, 0 lost, 0 duplicated, {failures} failed attempts",
        acknowledged.len(),
        received.len()
    );
}
