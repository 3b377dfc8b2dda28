//! Cluster behaviour on the three-node local cluster
//! (`scripts/rabbitmq.sh start-cluster`, run by `make test-cluster`):
//! partitions with three replicas; stopping the node that leads a
//! partition — and that partlog administers through — lets publishing to it
//! resume within 15 s without losing an acknowledged record, and a group of
//! two members on two partlog instances carries on: each member is told
//! INACTIVE and ACTIVE as the broker moves partitions, and in the end each
//! partition has exactly one member that knows it holds it. A stream grows
//! while a node is killed, keeping every key's order.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::resize::{native_routing_agrees, Workload};
use common::{
    assert_one_holder_each, broker_script, read_all, unique_stream, IdempotentPublisher,
    MemberEvents, Partlog,
};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{
    AssignmentState, CreateStreamRequest, ResizeStreamRequest, StreamDescription,
};
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

/// A stream of 3 partitions with 3 replicas each, created through a
/// partlog of its own; its description.
async fn replicated_stream(stream: &str) -> StreamDescription {
    Partlog::start()
        .await
        .client()
        .await
        .create_stream(CreateStreamRequest {
            stream: stream.to_owned(),
            partitions: 3,
            replicas: Some(3),
            ..Default::default()
        })
        .await
        .expect("create with 3 replicas")
        .into_inner()
        .stream
        .unwrap()
}

/// Two partlog instances that administer through a node other than the one
/// at `victim` (`host:port`), which will die, and know every node as
/// `broker.other_nodes`; with that node's stream port.
async fn two_instances_through_another_node(victim: &str) -> (Partlog, Partlog, &'static str) {
    let (_, victim_port) = victim.rsplit_once(':').unwrap();
    let survivor = NODE_PORTS
        .iter()
        .copied()
        .find(|port| *port != victim_port)
        .unwrap();
    let all = NODE_PORTS.map(|port| format!("localhost:{port}")).join(",");
    let settings = [
        ("PARTLOG_BROKER_PORT", survivor),
        ("PARTLOG_BROKER_OTHER_NODES", all.as_str()),
    ];
    let first = Partlog::start_with(&settings).await;
    let second = Partlog::start_with(&settings).await;
    (first, second, survivor)
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
    let description = replicated_stream(&stream).await;
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
    assert!(
        !publisher.acknowledged().is_empty(),
        "nothing was stored before the stop: {:?}\n{}",
        publisher.last_failure(),
        server.log()
    );
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
            "publishing did not resume: {:?}\n{}",
            publisher.last_failure(),
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

/// Brings a killed node back (start-cluster starts the absent ones) even
/// when the test fails.
struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        broker_script(&["start-cluster"], None);
    }
}

/// When `member` held `partition`: from each ACTIVE to the INACTIVE after
/// it, or to `end`.
fn held_intervals(member: &MemberEvents, partition: u32, end: Instant) -> Vec<(Instant, Instant)> {
    let mut intervals = Vec::new();
    let mut since = None;
    for (at, event) in member.timed_events() {
        let Event::Assignment(a) = event else {
            continue;
        };
        if a.partition != partition {
            continue;
        }
        match AssignmentState::try_from(a.state) {
            Ok(AssignmentState::Active) => since = since.or(Some(at)),
            Ok(AssignmentState::Inactive) => {
                if let Some(from) = since.take() {
                    intervals.push((from, at));
                }
            }
            _ => {}
        }
    }
    intervals.extend(since.map(|from| (from, end)));
    intervals
}

/// How long both held the partition at once.
fn overlap(a: &[(Instant, Instant)], b: &[(Instant, Instant)]) -> Duration {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (x.0.max(y.0), x.1.min(y.1))))
        .filter(|(from, to)| from < to)
        .map(|(from, to)| to - from)
        .sum()
}

/// Offsets of `partition` delivered to `member`.
fn offsets(member: &MemberEvents, partition: u32) -> BTreeSet<u64> {
    member
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Record(r) if r.partition == partition => Some(r.offset),
            _ => None,
        })
        .collect()
}

/// The node that leads a partition dies without a goodbye (SIGKILL) under
/// a group of two members on two partlog instances that administer through
/// another node. Measures what single active consumer leaves a group
/// during a node loss: how long both members were told they hold a
/// partition at once, and how long until every partition is held again.
/// partlog tells a member INACTIVE as soon as its connection to the dead
/// leader breaks and delivers nothing of the partition until the broker
/// activates it again; whether the broker activates another member before
/// that is the broker's (RabbitMQ 4.0.5 did, for about 100 ms): bounded
/// here and stated in the README's promises, as is the time the broker
/// keeps a lost node's consumer before it activates another one
/// (`stream_sac_disconnected_timeout`). No acknowledged record is lost,
/// and in the end each partition has one holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_node_leaves_a_bounded_double_active_window() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stream = unique_stream("sigkill");
    let description = replicated_stream(&stream).await;
    let victim = &description.partitions[0];
    let (server, second, _) = two_instances_through_another_node(&victim.leader).await;
    let mut client = server.client().await;
    let group = "sigkill-readers";
    let member_a = MemberEvents::join(&mut client, "a", &stream, group).await;
    let member_b = MemberEvents::join(&mut second.client().await, "b", &stream, group).await;
    let publisher =
        IdempotentPublisher::spawn(client.clone(), &stream, "sigkill-writer", 10, |seq| {
            (format!("key-{}", seq % 100), seq.to_string().into_bytes())
        });
    let logs = || format!("a:\n{}\nb:\n{}", server.log(), second.log());
    assert_one_holder_each(&[&member_a, &member_b], 3, Duration::from_secs(30), logs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim_node = node_of(&victim.leader);
    broker_script(&["kill", victim_node.trim_end_matches("@localhost")], None);
    let killed_at = Instant::now();
    let _start_again = StartAgain;
    // The broker activates a member for every partition again, and the
    // group receives every record acknowledged meanwhile.
    assert_one_holder_each(&[&member_a, &member_b], 3, Duration::from_secs(120), logs).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acknowledged: BTreeSet<u64> = publisher.acknowledged().iter().map(|(_, s)| *s).collect();
    publisher.stop().await;
    let received = || -> BTreeSet<u64> {
        [&member_a, &member_b]
            .iter()
            .flat_map(|m| m.values())
            .map(|v| String::from_utf8(v).unwrap().parse().unwrap())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !acknowledged.is_subset(&received()) {
        assert!(
            Instant::now() < deadline,
            "the group missed records:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end = Instant::now();
    let mut report = Vec::new();
    let mut longest = Duration::ZERO;
    for partition in 0..3 {
        let window = overlap(
            &held_intervals(&member_a, partition, end),
            &held_intervals(&member_b, partition, end),
        );
        // The group commits nothing here: the member that takes a
        // partition over starts again where the group started.
        let again = offsets(&member_a, partition)
            .intersection(&offsets(&member_b, partition))
            .count();
        longest = longest.max(window);
        report.push(format!(
            "partition {partition}: both members held it at once for {window:?}; {again} \
             records delivered to both, one after the other"
        ));
    }
    println!(
        "{victim_node} killed (leader of partition 0); every partition held again after {:?}, \
         {} acknowledged, none lost\n{}",
        end - killed_at,
        acknowledged.len(),
        report.join("\n")
    );
    assert!(
        longest <= DOUBLE_ACTIVE_BOUND,
        "two members held a partition at once for longer than {DOUBLE_ACTIVE_BOUND:?}:\n{}\n{}",
        report.join("\n"),
        logs()
    );
    member_a.stop().await;
    member_b.stop().await;
}

/// Longest time two members may both hold a partition after a node loss
/// (the README's promise): partlog ends a member's hold as soon as its
/// connection to the dead leader breaks; what remains is the broker's
/// activation of the next member before the first heard anything.
const DOUBLE_ACTIVE_BOUND: Duration = Duration::from_secs(1);

/// The stream grows from 3 to 5 partitions while the node leading
/// partition 0 is killed (SIGKILL) in the middle of the resize's fence,
/// under publishers and a group on two partlog instances (the workload of
/// `tests/resize.rs`). The resize that the node loss cut short is repeated
/// until it finishes, as a client would; every key's records reach the
/// group in order, none acknowledged is lost, native routing agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resize_during_a_node_kill_keeps_each_keys_order() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let stream = unique_stream("grow-kill");
    let description = replicated_stream(&stream).await;
    let victim = &description.partitions[0];
    let (a, b, survivor) = two_instances_through_another_node(&victim.leader).await;
    let mut workload = Workload::new(&stream);
    for (name, server) in [("a1", &a), ("a2", &a), ("b1", &b), ("b2", &b)] {
        workload.join(name, &server.url()).await;
    }
    workload.publish("pa", vec![a.url(), b.url()]);
    workload.publish("pb", vec![b.url(), a.url()]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    workload.pause();
    let resizing = tokio::spawn({
        let (mut via_a, stream) = (a.client().await, stream.clone());
        async move {
            via_a
                .resize_stream(ResizeStreamRequest {
                    stream,
                    partitions: 5,
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let victim_node = node_of(&victim.leader);
    broker_script(&["kill", victim_node.trim_end_matches("@localhost")], None);
    let _start_again = StartAgain;
    let mut outcome = resizing.await.expect("resize task").map(drop);
    let mut via_b = b.client().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempts = 1;
    while let Err(status) = &outcome {
        attempts += 1;
        assert!(
            Instant::now() < deadline,
            "the resize did not finish: {status:?}\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        outcome = via_b
            .resize_stream(ResizeStreamRequest {
                stream: stream.clone(),
                partitions: 5,
            })
            .await
            .map(drop);
    }
    workload.resume();
    native_routing_agrees(&mut via_b, &stream, 5_000, survivor.parse().unwrap()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    workload.finish(Duration::from_secs(180)).await;
    let summary = workload.assert_kept_order(5);
    println!(
        "{victim_node} killed during a resize 3 -> 5 (finished at attempt {attempts}): {summary}"
    );
}
