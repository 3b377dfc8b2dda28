//! Records that native producers wrote in sub-entry batches — uncompressed,
//! gzip, snappy, lz4 and zstd — read through `Read`, `Subscribe` and
//! `Consume`; and a batch that cannot be read: DATA_LOSS naming where, a
//! metric, and a group that gets past it with a reset.
//!
//! The batches are written by RabbitMQ's Python stream client, rstream
//! (`tests/native_clients/compressed_batches.py`, in a virtualenv from its
//! requirements file), the way RabbitMQ's Java client compresses.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    broker_host, broker_port, create_stream, publish_ok, python, read_all, record, unique_stream,
    Member, Partlog,
};
use partlog::proto::consume_response::Event;
use partlog::proto::{
    self, start_position::Position, ReadRequest, ResetOffsetsRequest, StartPosition,
    SubscribeRequest,
};

const CODECS: [&str; 5] = ["gzip", "snappy", "lz4", "zstd", "none"];

/// Writes `batches` (`codec:count`) into partition stream `stream` with
/// rstream.
fn native_batches(stream: &str, batches: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native_clients");
    let venv = python::virtualenv(&dir.join("requirements.txt"));
    let output = Command::new(venv.join("bin/python"))
        .arg(dir.join("compressed_batches.py"))
        .args([&broker_host(), &broker_port().to_string(), stream])
        .args(batches)
        .output()
        .expect("run compressed_batches.py");
    assert!(
        output.status.success(),
        "compressed_batches.py failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// (key, value, codec header) of a record.
fn summary(record: &proto::Record) -> (String, String, String) {
    let codec = record.headers.get("codec").cloned().unwrap_or_default();
    let value = String::from_utf8(record.value.to_vec()).expect("UTF-8 value");
    (record.key.clone(), value, codec)
}

/// What the stream holds: a partlog record, three records per codec, a
/// partlog record.
fn expected() -> Vec<(String, String, String)> {
    let mut expected = vec![("before".into(), "partlog before".into(), String::new())];
    for codec in CODECS {
        for i in 0..3 {
            expected.push((
                format!("{codec}-{i}"),
                format!("{codec} record {i}"),
                codec.into(),
            ));
        }
    }
    expected.push(("after".into(), "partlog after".into(), String::new()));
    expected
}

#[tokio::test]
async fn batches_of_every_codec_are_read_by_read_subscribe_and_consume() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("codecs");
    create_stream(&mut client, &stream, 1).await;
    publish_ok(
        &mut client,
        &stream,
        vec![record("before", "partlog before")],
    )
    .await;
    let batches: Vec<String> = CODECS.iter().map(|c| format!("{c}:3")).collect();
    let batches: Vec<&str> = batches.iter().map(String::as_str).collect();
    native_batches(&format!("{stream}-0"), &batches);
    publish_ok(&mut client, &stream, vec![record("after", "partlog after")]).await;

    let read = read_all(&mut client, &stream, 0).await;
    let offsets: Vec<u64> = read.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (0..17).collect::<Vec<_>>(),
        "one offset per record"
    );
    assert_eq!(read.iter().map(summary).collect::<Vec<_>>(), expected());

    // Read from inside a compressed batch: its records after the offset.
    let from_inside = client
        .read(ReadRequest {
            stream: stream.clone(),
            offset: 5,
            max_records: 2,
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    let keys: Vec<&str> = from_inside.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        (keys, from_inside.next_offset),
        (vec!["snappy-1", "snappy-2"], 7)
    );

    let mut tail = client
        .subscribe(SubscribeRequest {
            stream: stream.clone(),
            start: Some(StartPosition {
                position: Some(Position::First(Default::default())),
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut tailed = Vec::new();
    while tailed.len() < 17 {
        let message = tokio::time::timeout(Duration::from_secs(30), tail.message())
            .await
            .expect("records within 30 s")
            .expect("subscription healthy")
            .expect("subscription open");
        if let Some(proto::subscribe_response::Event::Record(record)) = message.event {
            tailed.push(summary(&record));
        }
    }
    assert_eq!(tailed, expected());

    let mut member = Member::open(&mut client, &stream, "codecs", 100).await;
    let mut consumed = Vec::new();
    while consumed.len() < 17 {
        match member.next().await {
            Event::Record(record) => consumed.push(summary(&record)),
            Event::Assignment(_) => {}
            Event::Commit(ack) => panic!("no commit sent: {ack:?}"),
            Event::Skipped(skipped) => panic!("skipped without a filter: {skipped:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
    assert_eq!(consumed, expected());
}

#[tokio::test]
async fn a_batch_that_cannot_be_read_is_data_loss_and_a_reset_gets_a_group_past_it() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("broken");
    create_stream(&mut client, &stream, 1).await;
    publish_ok(
        &mut client,
        &stream,
        vec![record("before", "partlog before")],
    )
    .await;
    native_batches(&format!("{stream}-0"), &["broken-gzip:2"]);
    publish_ok(&mut client, &stream, vec![record("after", "partlog after")]).await;
    let read_at = |offset| ReadRequest {
        stream: stream.clone(),
        offset,
        ..Default::default()
    };

    // What comes before the damage is answered; reading on there fails.
    let first = client.read(read_at(0)).await.expect("read").into_inner();
    let keys: Vec<&str> = first.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!((keys, first.next_offset), (vec!["before"], 1));
    let status = client.read(read_at(1)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    let expected = format!(
        "stream \"{stream}\" partition 0: the records at offsets 1 to 2 cannot be read (a gzip \
         sub-entry batch cannot be read: it does not decompress: invalid gzip header); read on \
         from offset 3, or move a consumer group past them with ResetOffsets (partlog reset \
         {stream} --group GROUP --partitions 0 --to offset:3)"
    );
    assert_eq!(status.message(), expected);
    let after = client.read(read_at(3)).await.expect("read").into_inner();
    assert_eq!(after.records[0].key, "after");

    // A member gets the records before, then the call ends with the same
    // status — every time, not a silent stall.
    for _ in 0..2 {
        let mut member = Member::open(&mut client, &stream, "billing", 100).await;
        let mut keys = Vec::new();
        let status = loop {
            match member.try_next().await {
                Ok(Event::Record(record)) => keys.push(record.key),
                Ok(_) => {}
                Err(status) => break status,
            }
        };
        assert_eq!(keys, ["before"]);
        assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
        assert_eq!(status.message(), expected);
    }
    let metrics = server.metrics().await;
    let line = format!("partlog_chunks_unreadable_total{{stream=\"{stream}\"}} ");
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{metrics}"));
    assert!(count.parse::<u64>().unwrap() >= 3, "{count}");

    // The operator moves the group past the damage, as the message says.
    client
        .reset_offsets(ResetOffsetsRequest {
            stream: stream.clone(),
            group: "billing".into(),
            partitions: vec![0],
            to: Some(StartPosition {
                position: Some(Position::Offset(3)),
            }),
        })
        .await
        .expect("reset");
    let mut member = Member::open(&mut client, &stream, "billing", 100).await;
    let mut keys = Vec::new();
    while keys.is_empty() {
        if let Event::Record(record) = member.next().await {
            keys.push(record.key);
        }
    }
    member.commit(BTreeMap::from([(0, 3)])).await;
    assert_eq!(keys, ["after"]);
}
