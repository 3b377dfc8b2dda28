//! `partlog mirror` against the real broker: a stream copied from one
//! partlog to another — two instances on two virtual hosts of the local
//! broker, which keep separate streams, offsets and producers as two
//! clusters would; the mirror only ever talks to partlog — with the mirror
//! killed (SIGKILL) mid-copy and two mirrors of the group finishing the
//! work: the target holds each source record exactly once, keys routed by
//! its own partition count, every key's records in order, headers kept.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{create_stream, publish_ok, read_all, unique_stream, Partlog};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{GetOffsetsRequest, PublishRecord};
use tonic::transport::Channel;

const RECORDS: u64 = 20_000;
const GROUP: &str = "mirror";
/// The second virtual host: the target partlog's "cluster".
const TARGET_VHOST: &str = "partlog-mirror-test";

/// Creates the target's virtual host (again: adding an existing one is
/// refused, and that is fine) and lets the broker's user in.
fn target_vhost() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq.sh");
    let _ = Command::new(script)
        .args(["exec", "rabbitmqctl", "add_vhost", TARGET_VHOST])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    common::broker_script(
        &[
            "exec",
            "rabbitmqctl",
            "set_permissions",
            "-p",
            TARGET_VHOST,
            "guest",
            ".*",
            ".*",
            ".*",
        ],
        None,
    );
}

fn mirror(source: &Partlog, target: &Partlog, stream: &str, to_stream: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_partlog"))
        .args(["--server", &source.url(), "mirror", stream, "--to"])
        .args([&target.url(), "--to-stream", to_stream, "--group", GROUP])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start partlog mirror")
}

/// Records of `stream` the group has committed (the mirror commits a batch
/// once the target stored it), and its lag.
async fn committed(client: &mut PartLogClient<Channel>, stream: &str) -> (u64, u64) {
    let request = GetOffsetsRequest {
        stream: stream.into(),
        group: GROUP.into(),
    };
    let rows = client.get_offsets(request).await.unwrap().into_inner();
    let done = rows
        .partitions
        .iter()
        .map(|p| p.committed.map_or(0, |c| c + 1))
        .sum();
    (done, rows.partitions.iter().map(|p| p.lag).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_killed_mid_copy_leaves_an_exact_copy() {
    target_vhost();
    let source = Partlog::start().await;
    let target = Partlog::start_with(&[("PARTLOG_BROKER_VHOST", TARGET_VHOST)]).await;
    let mut source_client = source.client().await;
    let mut target_client = target.client().await;
    let stream = unique_stream("mirror-src");
    let copy = unique_stream("mirror-dst");
    create_stream(&mut source_client, &stream, 3).await;
    create_stream(&mut target_client, &copy, 5).await;
    for batch in 0..RECORDS / 1000 {
        let records = (batch * 1000..(batch + 1) * 1000)
            .map(|n| PublishRecord {
                key: format!("key-{}", n % 50),
                value: n.to_string().into_bytes().into(),
                headers: HashMap::from([("n".to_string(), n.to_string())]),
                ..Default::default()
            })
            .collect();
        publish_ok(&mut source_client, &stream, records).await;
    }

    let mut first = mirror(&source, &target, &stream, &copy);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while committed(&mut source_client, &stream).await.0 < RECORDS / 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirror copies nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let killed_at = committed(&mut source_client, &stream).await.0;
    assert!(
        killed_at < RECORDS,
        "killed mid-copy: {killed_at} of {RECORDS}"
    );

    let mut mirrors = [
        mirror(&source, &target, &stream, &copy),
        mirror(&source, &target, &stream, &copy),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while committed(&mut source_client, &stream).await.1 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirrors did not finish: {:?}",
            committed(&mut source_client, &stream).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mirror in &mut mirrors {
        mirror.kill().unwrap();
        mirror.wait().unwrap();
    }

    let mut copies: HashMap<u64, u32> = HashMap::new();
    for partition in 0..5 {
        let mut last_of_key: HashMap<String, u64> = HashMap::new();
        for r in read_all(&mut target_client, &copy, partition).await {
            let n: u64 = std::str::from_utf8(&r.value).unwrap().parse().unwrap();
            assert_eq!(r.key, format!("key-{}", n % 50));
            assert_eq!(r.headers.get("n"), Some(&n.to_string()), "headers kept");
            assert_eq!(
                partlog::routing::partition_for_key(&r.key, 5),
                partition,
                "routed by the target's partitions"
            );
            if let Some(before) = last_of_key.insert(r.key.clone(), n) {
                assert!(before < n, "key {}: {n} after {before}", r.key);
            }
            *copies.entry(n).or_default() += 1;
        }
    }
    let twice: Vec<_> = copies.iter().filter(|(_, c)| **c > 1).take(10).collect();
    assert!(twice.is_empty(), "copied more than once: {twice:?}");
    assert_eq!(copies.len() as u64, RECORDS, "every record copied");
    println!("mirror killed after {killed_at} of {RECORDS} records; the copy is exact");
}
