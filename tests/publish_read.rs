//! Publish then Read against the real broker: every record back exactly
//! once, per-key order, key, value and headers intact.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use common::{create_stream, publish_ok, read_all, record, unique_stream, Partlog};
use partlog::proto::{CommitRequest, PublishRecord, ReadRequest};
use partlog::routing::partition_for_key;

#[tokio::test]
async fn every_record_comes_back_once_in_per_key_order() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("roundtrip");
    create_stream(&mut client, &stream, 3).await;

    // Several batches, keys interleaved, one sequence number per key.
    let keys: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let mut sent: HashMap<String, Vec<u32>> = HashMap::new();
    for batch in 0..10u32 {
        let records: Vec<PublishRecord> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let seq = batch * 100 + i as u32;
                sent.entry(key.clone()).or_default().push(seq);
                PublishRecord {
                    key: key.clone(),
                    value: seq.to_be_bytes().to_vec().into(),
                    headers: HashMap::from([
                        ("seq".to_string(), seq.to_string()),
                        ("ünïcode".to_string(), "✓".to_string()),
                    ]),
                    ..Default::default()
                }
            })
            .collect();
        let partitions = publish_ok(&mut client, &stream, records).await;
        for (key, partition) in keys.iter().zip(partitions) {
            assert_eq!(partition, partition_for_key(key, 3), "routing of {key}");
        }
    }

    let before = SystemTime::now() - Duration::from_secs(600);
    let mut received: HashMap<String, Vec<u32>> = HashMap::new();
    for partition in 0..3 {
        let records = read_all(&mut client, &stream, partition).await;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "offsets of partition {partition} are consecutive"
        );
        for r in records {
            assert_eq!(r.partition, partition);
            assert_eq!(
                partition_for_key(&r.key, 3),
                partition,
                "{} in the wrong partition",
                r.key
            );
            let seq = u32::from_be_bytes(r.value[..].try_into().expect("4-byte value"));
            assert_eq!(r.headers["seq"], seq.to_string());
            assert_eq!(r.headers["ünïcode"], "✓");
            assert_eq!(r.headers.len(), 2, "no extra headers: {:?}", r.headers);
            let ts = r.timestamp.expect("broker timestamp");
            let ts = SystemTime::UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos as u32);
            assert!(ts > before && ts < SystemTime::now() + Duration::from_secs(60));
            received.entry(r.key).or_default().push(seq);
        }
    }
    assert_eq!(received, sent, "each record exactly once, in per-key order");
}

#[tokio::test]
async fn unkeyed_records_spread_round_robin() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("roundrobin");
    create_stream(&mut client, &stream, 4).await;
    let records = (0..40).map(|i| record("", format!("v{i}"))).collect();
    let partitions = publish_ok(&mut client, &stream, records).await;
    let mut counts = BTreeMap::new();
    for p in &partitions {
        *counts.entry(*p).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([(0, 10), (1, 10), (2, 10), (3, 10)]));
    for partition in 0..4 {
        let records = read_all(&mut client, &stream, partition).await;
        assert_eq!(records.len(), 10);
        assert!(records.iter().all(|r| r.key.is_empty()));
    }
}

#[tokio::test]
async fn read_is_bounded_and_resumes_at_next_offset() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("bounded");
    create_stream(&mut client, &stream, 1).await;
    for batch in 0..5 {
        let records = (0..20)
            .map(|i| record("k", format!("{}", batch * 20 + i)))
            .collect();
        publish_ok(&mut client, &stream, records).await;
    }
    let read = |offset, max_records| ReadRequest {
        stream: stream.clone(),
        partition: 0,
        offset,
        max_records,
        ..Default::default()
    };
    let first = client.read(read(0, 7)).await.unwrap().into_inner();
    assert_eq!(first.records.len(), 7);
    assert_eq!(first.next_offset, 7);
    let middle = client.read(read(55, 10)).await.unwrap().into_inner();
    let values: Vec<String> = middle
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect();
    assert_eq!(values, (55..65).map(|i| i.to_string()).collect::<Vec<_>>());
    let tail = client.read(read(95, 100)).await.unwrap().into_inner();
    assert_eq!(tail.records.len(), 5);
    assert_eq!(tail.next_offset, 100);
    let beyond = client.read(read(100, 100)).await.unwrap().into_inner();
    assert!(beyond.records.is_empty());
    assert_eq!(beyond.next_offset, 100);
    let far = client.read(read(10_000, 100)).await.unwrap().into_inner();
    assert!(far.records.is_empty());
}

/// Reads stop before the record that would pass the byte limit (by
/// default 4 MiB, gRPC clients' default message limit), but always return
/// the first record.
#[tokio::test]
async fn read_is_bounded_in_bytes() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("bytes");
    create_stream(&mut client, &stream, 1).await;
    // Ten records of 1 MiB - 100 bytes, key "k" and no headers.
    let value = |i: u8| vec![i; 1024 * 1024 - 100];
    for i in 0..10u8 {
        publish_ok(&mut client, &stream, vec![record("k", value(i))]).await;
    }
    let read = |offset, max_bytes| ReadRequest {
        stream: stream.clone(),
        partition: 0,
        offset,
        max_records: 100,
        max_bytes,
        ..Default::default()
    };
    let by_default = client.read(read(0, 0)).await.unwrap().into_inner();
    assert_eq!(by_default.records.len(), 4, "4 MiB hold four records");
    assert_eq!(by_default.next_offset, by_default.records[3].offset + 1);
    let two = client
        .read(read(0, 2 * (1024 * 1024 - 99)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(two.records.len(), 2);
    let rest = client
        .read(read(two.next_offset, 2 * (1024 * 1024 - 99)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records[0].value, value(2), "resumes after the limit");
    let tiny = client.read(read(0, 1)).await.unwrap().into_inner();
    assert_eq!(tiny.records.len(), 1, "the first record comes anyway");
    assert_eq!(tiny.records[0].value, value(0));
}

#[tokio::test]
async fn read_of_an_empty_partition_answers_at_once_or_waits_for_data() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("waiting");
    create_stream(&mut client, &stream, 1).await;
    let empty = client
        .read(ReadRequest {
            stream: stream.clone(),
            partition: 0,
            offset: 0,
            max_records: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.records.is_empty());
    assert_eq!(empty.next_offset, 0);

    // A waiting read is answered by a record published while it waits.
    let mut reader = server.client().await;
    let waiting_stream = stream.clone();
    let waiting = tokio::spawn(async move {
        reader
            .read(ReadRequest {
                stream: waiting_stream,
                partition: 0,
                offset: 0,
                max_records: 10,
                max_wait: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_ok(&mut client, &stream, vec![record("k", "late")]).await;
    let answered = waiting.await.unwrap();
    assert_eq!(answered.records.len(), 1);
    assert_eq!(&answered.records[0].value[..], b"late");
    assert_eq!(answered.next_offset, 1);
}

#[tokio::test]
async fn concurrent_publishers_keep_each_keys_order() {
    let server = Partlog::start().await;
    let stream = unique_stream("concurrent");
    create_stream(&mut server.client().await, &stream, 3).await;
    let mut tasks = Vec::new();
    for publisher in 0..4 {
        let mut client = server.client().await;
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..10 {
                let records = (0..25)
                    .map(|i| {
                        record(
                            &format!("p{publisher}-k{}", i % 5),
                            format!("{batch:03}-{i:03}"),
                        )
                    })
                    .collect();
                publish_ok(&mut client, &stream, records).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut client = server.client().await;
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0;
    for partition in 0..3 {
        for r in read_all(&mut client, &stream, partition).await {
            per_key
                .entry(r.key)
                .or_default()
                .push(String::from_utf8(r.value.to_vec()).unwrap());
            total += 1;
        }
    }
    assert_eq!(total, 4 * 10 * 25);
    for (key, values) in per_key {
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "order of {key}");
        assert_eq!(values.len(), 50);
    }
}

#[tokio::test]
async fn records_at_the_value_limit_are_stored_and_framed() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("large");
    create_stream(&mut client, &stream, 1).await;
    // Five 1 MiB values need several publish frames of at most 4 MiB.
    let values: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1024 * 1024]).collect();
    let records = values.iter().map(|v| record("big", v.clone())).collect();
    publish_ok(&mut client, &stream, records).await;
    let stored = read_all(&mut client, &stream, 0).await;
    assert_eq!(stored.len(), 5);
    for (r, v) in stored.iter().zip(&values) {
        assert!(r.value == *v, "value at offset {} intact", r.offset);
    }
}

/// The value of the series `series` (name and labels) in `metrics`.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A client reading a partition in a loop of Reads, each from the
/// `next_offset` of the one before, is served by one broker subscription:
/// every call after the first goes on with the reader of the call before.
/// It still sees every record once, new records as soon as they are
/// confirmed, and an answer at once at the tail — also when the last thing
/// the broker stored is a group's offset, which no reader receives.
#[tokio::test]
async fn a_read_loop_goes_on_with_one_reader_and_misses_nothing() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("readloop");
    create_stream(&mut client, &stream, 1).await;
    for batch in 0..5 {
        let records = (0..50)
            .map(|i| record("k", format!("{}", batch * 50 + i)))
            .collect();
        publish_ok(&mut client, &stream, records).await;
    }
    let read = |offset: u64| ReadRequest {
        stream: stream.clone(),
        partition: 0,
        offset,
        max_records: 30,
        ..Default::default()
    };
    let resumed = format!("partlog_reads_resumed_total{{stream=\"{stream}\"}}");
    let (mut offset, mut values, mut calls) = (0, Vec::new(), 0u64);
    while offset < 250 {
        let answer = client.read(read(offset)).await.unwrap().into_inner();
        calls += 1;
        assert_eq!(answer.records.first().map(|r| r.offset), Some(offset));
        values.extend(answer.records.iter().map(|r| r.value.to_vec()));
        offset = answer.next_offset;
    }
    let expected: Vec<Vec<u8>> = (0..250).map(|i| format!("{i}").into_bytes()).collect();
    assert_eq!(values, expected, "every record once, in order");
    assert_eq!(
        sample(&server.metrics().await, &resumed),
        calls - 1,
        "every call after the first went on with the reader before"
    );

    let at_tail = client.read(read(250)).await.unwrap().into_inner();
    assert!(at_tail.records.is_empty());
    assert_eq!(at_tail.next_offset, 250);
    assert_eq!(sample(&server.metrics().await, &resumed), calls);

    // Two chunks: the kept reader may hold the first already, and must
    // not stop there.
    publish_ok(&mut client, &stream, vec![record("k", "new")]).await;
    publish_ok(&mut client, &stream, vec![record("k", "newer")]).await;
    let fresh = client.read(read(250)).await.unwrap().into_inner();
    let fresh: Vec<_> = fresh
        .records
        .iter()
        .map(|r| (r.offset, r.value.to_vec()))
        .collect();
    assert_eq!(
        fresh,
        [(250, b"new".to_vec()), (251, b"newer".to_vec())],
        "confirmed records are read at once"
    );

    // The group's offset goes to the broker's offset tracking, which takes
    // an offset of the partition but is never delivered to a reader.
    client
        .commit(CommitRequest {
            group: "g".into(),
            stream: stream.clone(),
            offsets: HashMap::from([(0, 251)]),
        })
        .await
        .unwrap();
    let after_commit = client.read(read(252)).await.unwrap().into_inner();
    assert!(after_commit.records.is_empty());
    assert_eq!(after_commit.next_offset, 252);
}
