//! Prometheus metrics of a real partlog against the real broker: a session
//! (create, publish, read, a group member consuming and committing,
//! GetOffsets, an error) shows in `/metrics` with real values, the group
//! gauges show the committed offsets, tails and lag the session made, and
//! without `metrics.listen` nothing listens for them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{create_stream, http_get, publish_ok, record, unique_stream, Partlog};
use partlog::proto::consume_response::Event;
use partlog::proto::{
    ConsumeOpen, ConsumeRequest, DeleteStreamRequest, DescribeStreamRequest, GetOffsetsRequest,
    ReadRequest,
};
use partlog::routing::partition_for_key;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const PARTITIONS: u32 = 3;
/// A bound for what must happen; a test fails, never hangs.
const PATIENCE: Duration = Duration::from_secs(30);

/// One series of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of the series `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn expect(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:#?}"))
}

/// A key of each partition, as partlog routes them.
fn keys() -> Vec<String> {
    (0..PARTITIONS)
        .map(|p| {
            (0..)
                .map(|i| format!("customer-{i}"))
                .find(|k| partition_for_key(k, PARTITIONS) == p)
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_session_shows_in_the_metrics_with_the_groups_committed_offsets_tail_and_lag() {
    let server = Partlog::start_with(&[("PARTLOG_METRICS_LAG_REFRESH_MS", "200")]).await;
    let mut client = server.client().await;
    let stream = unique_stream("metrics");
    let group = "billing";
    create_stream(&mut client, &stream, PARTITIONS).await;
    let keys = keys();
    // Two records in each partition, in two Publish calls.
    for round in 0..2 {
        let records = keys
            .iter()
            .map(|k| record(k, format!("v{round}")))
            .collect();
        publish_ok(&mut client, &stream, records).await;
    }
    let read = client
        .read(ReadRequest {
            stream: stream.clone(),
            partition: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.records.len(), 2);
    let missing = client
        .describe_stream(DescribeStreamRequest {
            stream: unique_stream("nosuch"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A member of the group takes the six records and commits each
    // partition's last.
    let (requests, outgoing) = mpsc::channel(8);
    requests
        .send(ConsumeRequest {
            open: Some(ConsumeOpen {
                stream: stream.clone(),
                group: group.into(),
                ..Default::default()
            }),
            credit_records: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = client
        .consume(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    let mut last = BTreeMap::new();
    let mut acks = 0;
    let deadline = Instant::now() + PATIENCE;
    while acks < PARTITIONS {
        let event = tokio::time::timeout_at(deadline.into(), events.message())
            .await
            .expect("the member's events in time")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        match event {
            Event::Record(r) => {
                last.insert(r.partition, r.offset);
                if last.len() as u32 == PARTITIONS && last.values().all(|o| *o == 1) {
                    requests
                        .send(ConsumeRequest {
                            commits: last.clone().into_iter().collect(),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }
            Event::Commit(ack) => {
                assert!(ack.error.is_none(), "{ack:?}");
                acks += 1;
            }
            Event::Assignment(_) => {}
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
    // One more record in partition 0, delivered but not committed: the
    // group lags there.
    publish_ok(&mut client, &stream, vec![record(&keys[0], "late")]).await;
    let late = loop {
        let event = tokio::time::timeout_at(deadline.into(), events.message())
            .await
            .expect("the late record in time")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        match event {
            Event::Record(r) if r.value[..] == b"late"[..] => break r,
            _ => {}
        }
    };
    // The late record is at offset 2, or at 3 when the offset tracking
    // entry mirroring the commit to the broker took offset 2 first.
    assert_eq!(late.partition, 0);
    assert!((2..=3).contains(&late.offset), "{late:?}");

    // Known numbers: (committed, tail, lag) per partition. Every partition
    // committed its second record (offset 1); partition 0 ends with the
    // late record, and its lag counts the offsets after the commit (a
    // tracking entry's too).
    let known: [(u64, u64, u64); PARTITIONS as usize] =
        [(1, late.offset, late.offset - 1), (1, 1, 0), (1, 1, 0)];
    let offsets = client
        .get_offsets(GetOffsetsRequest {
            stream: stream.clone(),
            group: group.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .partitions;
    let answered: Vec<_> = offsets
        .iter()
        .map(|p| (p.committed, p.tail, p.lag))
        .collect();
    let expected: Vec<_> = known
        .iter()
        .map(|(c, t, l)| (Some(*c), Some(*t), *l))
        .collect();
    assert_eq!(answered, expected, "GetOffsets: {offsets:?}");

    // After a refresh the gauges say the same; a missing gauge is wrong.
    let gauges = |samples: &[Sample]| -> Vec<[Option<f64>; 3]> {
        (0..PARTITIONS)
            .map(|p| {
                let partition = p.to_string();
                let at = [
                    ("group", group),
                    ("stream", stream.as_str()),
                    ("partition", partition.as_str()),
                ];
                [
                    "partlog_group_committed_offset",
                    "partlog_group_tail_offset",
                    "partlog_group_lag",
                ]
                .map(|name| value(samples, name, &at))
            })
            .collect()
    };
    let expected: Vec<[Option<f64>; 3]> = known
        .iter()
        .map(|(c, t, l)| [Some(*c as f64), Some(*t as f64), Some(*l as f64)])
        .collect();
    let deadline = Instant::now() + PATIENCE;
    let samples = loop {
        let samples = parse(&server.metrics().await);
        let shown = gauges(&samples);
        if shown == expected {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "the group gauges (committed, tail, lag) show {shown:?}, not {expected:?}:\n{}",
            server.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let s = stream.as_str();
    let on_stream = [("stream", s)];
    let rpc = |method: &str, code: &str| {
        expect(
            &samples,
            "partlog_rpc_requests_total",
            &[
                ("method", &format!("partlog.v1.PartLog/{method}")),
                ("code", code),
            ],
        )
    };
    assert_eq!(rpc("Publish", "OK"), 3.0);
    assert_eq!(rpc("CreateStream", "OK"), 1.0);
    assert_eq!(rpc("Read", "OK"), 1.0);
    assert_eq!(rpc("DescribeStream", "NOT_FOUND"), 1.0);
    assert_eq!(rpc("GetOffsets", "OK"), 1.0);
    let publish_calls = [("method", "partlog.v1.PartLog/Publish")];
    assert_eq!(
        expect(
            &samples,
            "partlog_rpc_duration_seconds_count",
            &publish_calls
        ),
        3.0
    );
    assert!(expect(&samples, "partlog_rpc_duration_seconds_sum", &publish_calls) > 0.0);
    let consume_calls = [("method", "partlog.v1.PartLog/Consume")];
    assert_eq!(
        expect(&samples, "partlog_rpc_in_flight", &consume_calls),
        1.0
    );

    assert_eq!(
        expect(&samples, "partlog_records_published_total", &on_stream),
        7.0
    );
    let bytes = expect(
        &samples,
        "partlog_records_published_bytes_total",
        &on_stream,
    );
    let expected_bytes: usize =
        keys.iter().map(|k| 2 * (k.len() + 2)).sum::<usize>() + keys[0].len() + "late".len();
    assert_eq!(bytes, expected_bytes as f64);
    // Read's two records and the member's seven.
    assert_eq!(
        expect(&samples, "partlog_records_delivered_total", &on_stream),
        9.0
    );
    assert!(
        expect(
            &samples,
            "partlog_records_delivered_bytes_total",
            &on_stream
        ) > 0.0
    );
    // One confirm per partition each batch touched: 3 + 3 + 1.
    assert_eq!(
        expect(
            &samples,
            "partlog_publish_confirm_seconds_count",
            &on_stream
        ),
        7.0
    );
    assert_eq!(
        expect(&samples, "partlog_subscriptions_active", &on_stream),
        1.0
    );
    let in_group = [("stream", s), ("group", group)];
    assert_eq!(
        expect(&samples, "partlog_group_members_active", &in_group),
        1.0
    );
    assert_eq!(
        expect(&samples, "partlog_group_partitions_active", &in_group),
        PARTITIONS as f64
    );
    assert_eq!(expect(&samples, "partlog_broker_up", &[]), 1.0);
    for kind in ["admin", "query", "producer", "reader"] {
        let kind = [("kind", kind)];
        assert!(expect(&samples, "partlog_broker_connections_open", &kind) >= 1.0);
        assert!(expect(&samples, "partlog_broker_connections_opened_total", &kind) >= 1.0);
    }
    assert!(expect(&samples, "partlog_offset_store_flush_seconds_count", &[]) >= 1.0);
    assert!(expect(&samples, "partlog_lag_refresh_partitions", &[]) >= PARTITIONS as f64);

    // The member leaves: its call ends, its gauges go.
    drop(requests);
    drop(events);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let samples = parse(&server.metrics().await);
        let gone = value(&samples, "partlog_subscriptions_active", &on_stream).is_none()
            && value(&samples, "partlog_group_members_active", &in_group).is_none()
            && value(&samples, "partlog_rpc_in_flight", &consume_calls) == Some(0.0);
        if gone {
            let ended: f64 = samples
                .iter()
                .filter(|s| {
                    s.name == "partlog_rpc_requests_total"
                        && s.labels["method"] == "partlog.v1.PartLog/Consume"
                })
                .map(|s| s.value)
                .sum();
            assert_eq!(ended, 1.0, "one Consume call counted once");
            break;
        }
        assert!(Instant::now() < deadline, "{}", server.metrics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Deleting the stream removes its series, the lag gauges with the next
    // refresh.
    client
        .delete_stream(DeleteStreamRequest {
            stream: stream.clone(),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = server.metrics().await;
        if !text.contains(&format!("\"{stream}\"")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series of the deleted stream remain:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The TCP ports the process listens on (its sockets in state LISTEN).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's file descriptors")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields[1], fields[3], fields[9]);
            if state == "0A" && inodes.iter().any(|i| i == inode) {
                let port = local.rsplit_once(':').unwrap().1;
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

fn port(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[tokio::test]
async fn without_metrics_listen_nothing_listens_for_them() {
    let on = Partlog::start().await;
    let mut both = vec![port(&on.addr), port(&on.metrics_addr)];
    both.sort_unstable();
    assert_eq!(listening_ports(on.pid()), both);
    let answer = http_get(&on.metrics_addr, "/").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    let off = Partlog::start_with(&[("PARTLOG_METRICS_LISTEN", "")]).await;
    assert!(off.metrics_addr.is_empty(), "{}", off.log());
    assert!(off.log().contains("metrics off"), "{}", off.log());
    assert_eq!(listening_ports(off.pid()), [port(&off.addr)]);
}
