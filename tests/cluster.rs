//! Cluster behaviour on the three-node local cluster
//! (`scripts/rabbitmq.sh start-cluster`, run by `make test-cluster`):
//! partitions with three replicas; stopping the node that leads a
//! partition — and that partlog administers through — lets publishing to it
//! resume within 15 s without losing an acknowledged record, and a group of
//! two members on two partlog instances carries on: each member is told
//! INACTIVE and ACTIVE as the broker moves partitions, and in the end each
//! partition has exactly one member that knows it holds it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{
    assert_one_holder_each, broker_script, read_all, unique_stream, IdempotentPublisher,
    MemberEvents, Partlog,
};
use partlog::proto::CreateStreamRequest;
use partlog::routing::partition_for_key;

/// Stream ports of the cluster's nodes.
const NODE_PORTS: [&str; 3] = ["5552", "5553", "5554"];

/// The cluster node that serves a stream port.
fn node_of(address: &str) -> &'static str {
    match address.rsplit_once(':').map(|(_, port)| port) {
        Some("5552") => "partlog1@localhost",
        Some("5553") => "partlog2@localhost",
        Some("5554") => "partlog3@localhost",
        _ => panic!("{address} is not a node of scripts/rabbitmq.sh start-cluster"),
    }
}

fn rabbitmqctl(node: &str, command: &str) {
    broker_script(&["exec", "rabbitmqctl", command], Some(node));
}

/// Starts the node's broker again even when the test fails.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        rabbitmqctl(self.0, "start_app");
    }
}

/// The two tests stop cluster nodes; they must not overlap.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// partlog is told about every node: it fails over to another one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stop_with_other_nodes_configured() {
    leader_stop_loses_no_acknowledged_record(true).await;
}

/// partlog is told only about the node that will stop; it learned the
/// others from the partitions' metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stop_with_nodes_learned_from_metadata() {
    leader_stop_loses_no_acknowledged_record(false).await;
}

/// Stops the node that leads a partition *and* is the node partlog
/// administers through (whatever node the broker chose as leader), while
/// an idempotent publisher writes to that partition and a group member
/// reads everything.
async fn leader_stop_loses_no_acknowledged_record(configure_other_nodes: bool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stream = unique_stream("cluster");
    let description = Partlog::start()
        .await
        .client()
        .await
        .create_stream(CreateStreamRequest {
            stream: stream.clone(),
            partitions: 3,
            replicas: Some(3),
            ..Default::default()
        })
        .await
        .expect("create with 3 replicas")
        .into_inner()
        .stream
        .unwrap();
    for p in &description.partitions {
        assert_eq!(p.replicas.len(), 2, "leader plus two replicas: {p:?}");
    }
    let victim = &description.partitions[0];
    let (_, victim_port) = victim.leader.rsplit_once(':').unwrap();
    let others = NODE_PORTS
        .iter()
        .filter(|port| **port != victim_port)
        .map(|port| format!("localhost:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut settings = vec![("PARTLOG_BROKER_PORT", victim_port)];
    if configure_other_nodes {
        settings.push(("PARTLOG_BROKER_OTHER_NODES", &others));
    }
    let server = Partlog::start_with(&settings).await;
    let second = Partlog::start_with(&settings).await;
    let mut client = server.client().await;
    let partition = victim.index;
    let leader = node_of(&victim.leader);
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("key-{i}"))
        .filter(|k| partition_for_key(k, 3) == partition)
        .take(5)
        .collect();

    // A group of two members on two instances, reading everything.
    let group = "cluster-readers";
    let member_a = MemberEvents::join(&mut client, "a", &stream, group).await;
    let member_b = MemberEvents::join(&mut second.client().await, "b", &stream, group).await;
    let received = || -> BTreeSet<u64> {
        [&member_a, &member_b]
            .iter()
            .flat_map(|m| m.values())
            .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
            .collect()
    };

    // An idempotent publisher to the victim partition.
    let publisher =
        IdempotentPublisher::spawn(client.clone(), &stream, "cluster-writer", 10, move |seq| {
            (
                keys[seq as usize % keys.len()].clone(),
                seq.to_string().into_bytes(),
            )
        });

    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(leader, "stop_app");
    // From here the partition has no leader until the cluster elects one.
    let stopped_at = Instant::now();
    let _restart = Restart(leader);
    // Publishing to the partition must resume within 15 s.
    let resumed = loop {
        let first_after = publisher
            .acknowledged()
            .iter()
            .map(|(t, _)| *t)
            .find(|t| *t > stopped_at);
        if let Some(t) = first_after {
            break t - stopped_at;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(30),
            "publishing did not resume:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        resumed <= Duration::from_secs(15),
        "publishing resumed only after {resumed:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acknowledged: BTreeSet<u64> = publisher.acknowledged().iter().map(|(_, s)| *s).collect();
    publisher.stop().await;
    let mut stored: HashMap<u64, usize> = HashMap::new();
    for r in read_all(&mut client, &stream, partition).await {
        *stored
            .entry(
                String::from_utf8(r.value.to_vec())
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
            .or_default() += 1;
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|s| !stored.contains_key(s))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(stored.values().all(|n| *n == 1), "stored twice");

    // The group carries on across the failover: its members agree with the
    // broker on who holds each partition, and every record reaches one.
    let logs = || format!("a:\n{}\nb:\n{}", server.log(), second.log());
    assert_one_holder_each(&[&member_a, &member_b], 3, Duration::from_secs(60), logs).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged.is_subset(&received()) {
        assert!(
            Instant::now() < deadline,
            "the group missed records:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "leader {leader} stopped (other nodes configured: {configure_other_nodes}): publishing \
         resumed after {resumed:?}; {} acknowledged, 0 lost",
        acknowledged.len()
    );
}
