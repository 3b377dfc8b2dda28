//! Filter values on write, against the real broker: records published
//! through partlog with a `filter` carry it as the broker's filter value
//! (so a native filtered consumer is sent only the chunks that may hold
//! what it wants) and as the `partlog.filter` property (so every reader
//! sees it); records a native producer wrote with a filter value and that
//! property read back with their filter; `filter_size_bytes` reaches the
//! partitions' arguments.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{native_environment, publish_ok, read_all, unique_stream, Member, Partlog};
use futures::StreamExt;
use partlog::proto::consume_response::Event as ConsumeEvent;
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::start_position::{self, Position};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{
    ConsumeOpen, ConsumeRequest, CreateStreamRequest, GetOffsetsRequest, PublishRecord,
    ReadRequest, StartPosition, SubscribeRequest,
};
use partlog::record::FILTER_PROPERTY;
use rabbitmq_stream_client::types::{Message, OffsetSpecification, SimpleValue};
use rabbitmq_stream_client::{Environment, FilterConfiguration};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Records per publish call: each call is a chunk of its own, of one
/// filter value or none.
const PER_CALL: usize = 50;
const ROUNDS: usize = 6;

/// What each round publishes, one call each: a filter value or none.
const FILTERS: [Option<&str>; 3] = [Some("eu"), Some("us"), None];

/// The `partlog.filter` property of a native message ("" without one).
fn native_filter(message: &Message) -> String {
    match message
        .application_properties()
        .and_then(|p| p.get(FILTER_PROPERTY))
    {
        Some(SimpleValue::String(filter)) => filter.clone(),
        _ => String::new(),
    }
}

fn body(message: &Message) -> String {
    String::from_utf8(message.data().unwrap_or_default().to_vec()).unwrap()
}

/// The bodies a native consumer filtering on `values` is sent from the
/// first record, in order: whole chunks that may hold the values (no
/// post-filter), until nothing more comes for a while.
async fn natively_filtered(
    environment: &Environment,
    partition: &str,
    values: &[&str],
    match_unfiltered: bool,
) -> Vec<(String, String)> {
    let filter = FilterConfiguration::new(
        values.iter().map(|v| v.to_string()).collect(),
        match_unfiltered,
    );
    let mut consumer = environment
        .consumer()
        .offset(OffsetSpecification::First)
        .filter_input(Some(filter))
        .build(partition)
        .await
        .expect("a native filtered consumer");
    let mut sent = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        let delivery = delivery.expect("a delivery");
        let message = delivery.message();
        sent.push((native_filter(message), body(message)));
    }
    consumer.handle().close().await.expect("close the consumer");
    sent
}

/// Publishes ROUNDS rounds of one call per value of FILTERS: chunks of one
/// filter value or none. Returns (filter, value) of each record in order.
async fn publish_rounds(
    client: &mut PartLogClient<Channel>,
    stream: &str,
) -> Vec<(String, String)> {
    let mut written: Vec<(String, String)> = Vec::new();
    for round in 0..ROUNDS {
        for filter in FILTERS {
            let records: Vec<PublishRecord> = (0..PER_CALL)
                .map(|i| PublishRecord {
                    key: "k".into(),
                    value: format!("{}-{round}-{i}", filter.unwrap_or("none"))
                        .into_bytes()
                        .into(),
                    filter: filter.unwrap_or_default().into(),
                    ..Default::default()
                })
                .collect();
            written.extend(records.iter().map(|r| {
                (
                    r.filter.clone(),
                    String::from_utf8(r.value.to_vec()).unwrap(),
                )
            }));
            publish_ok(client, stream, records).await;
        }
    }
    written
}

/// Writes `messages` (filter value, body) with a native producer that
/// gives the broker each message's `partlog.filter` property as its filter
/// value, and waits for every confirm.
async fn native_publish(environment: &Environment, partition: &str, messages: &[(String, String)]) {
    let producer = environment
        .producer()
        .filter_value_extractor(native_filter)
        .build(partition)
        .await
        .expect("a native producer with filter values");
    let (confirmed_tx, mut confirmed_rx) = mpsc::unbounded_channel();
    for (filter, body) in messages {
        let message = Message::builder()
            .body(body.clone())
            .application_properties()
            .insert(FILTER_PROPERTY, filter.as_str())
            .message_builder()
            .build();
        let confirmed_tx = confirmed_tx.clone();
        producer
            .send(message, move |status| {
                let confirmed_tx = confirmed_tx.clone();
                async move {
                    let _ = confirmed_tx.send(status.map(|s| s.confirmed()).unwrap_or(false));
                }
            })
            .await
            .expect("native send");
    }
    for _ in messages {
        let confirmed = tokio::time::timeout(Duration::from_secs(30), confirmed_rx.recv())
            .await
            .expect("native confirms arrive");
        assert_eq!(confirmed, Some(true), "native record confirmed");
    }
    producer.close().await.expect("close the native producer");
}

/// The partition stream's arguments as the broker lists them.
fn partition_arguments(partition: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq.sh");
    let output = Command::new(script)
        .args([
            "exec",
            "rabbitmqctl",
            "list_queues",
            "--quiet",
            "name",
            "arguments",
        ])
        .output()
        .expect("rabbitmqctl list_queues");
    let listed = String::from_utf8_lossy(&output.stdout);
    listed
        .lines()
        .find(|line| line.split_whitespace().next() == Some(partition))
        .unwrap_or_else(|| panic!("{partition} is not listed:\n{listed}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_filtered_consumers_are_sent_what_partlog_wrote_with_their_filters() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("filters");
    client
        .create_stream(CreateStreamRequest {
            stream: stream.clone(),
            partitions: 1,
            filter_size_bytes: Some(32),
            ..Default::default()
        })
        .await
        .expect("create with a filter size");
    let partition = format!("{stream}-0");
    let arguments = partition_arguments(&partition);
    assert!(
        arguments.contains("x-stream-filter-size-bytes") && arguments.contains("32"),
        "{arguments}"
    );

    let written = publish_rounds(&mut client, &stream).await;
    let kept = |wanted: &[&str]| -> Vec<(String, String)> {
        written
            .iter()
            .filter(|(filter, _)| wanted.contains(&filter.as_str()))
            .cloned()
            .collect()
    };

    // Every reader sees the filter as the record's.
    let read: Vec<(String, String)> = read_all(&mut client, &stream, 0)
        .await
        .into_iter()
        .map(|r| (r.filter, String::from_utf8(r.value.to_vec()).unwrap()))
        .collect();
    assert_eq!(read, written);

    // The broker sends a filtering consumer the chunks that hold its values
    // (and the unfiltered ones when it asks), never the others.
    let environment = native_environment().await;
    let eu = natively_filtered(&environment, &partition, &["eu"], false).await;
    assert_eq!(eu, kept(&["eu"]));
    let us_and_unfiltered = natively_filtered(&environment, &partition, &["us"], true).await;
    assert_eq!(us_and_unfiltered, kept(&["us", ""]));

    // A native producer's filter values, with the property partlog reads.
    let native: Vec<(String, String)> = (0..20)
        .map(|i| ("ap".to_owned(), format!("ap-native-{i}")))
        .collect();
    native_publish(&environment, &partition, &native).await;
    let read_native: Vec<(String, String)> = read_all(&mut client, &stream, 0)
        .await
        .into_iter()
        .skip(written.len())
        .map(|r| (r.filter, String::from_utf8(r.value.to_vec()).unwrap()))
        .collect();
    assert_eq!(read_native, native);
    let ap = natively_filtered(&environment, &partition, &["ap"], false).await;
    assert_eq!(ap, native);
}

#[tokio::test]
async fn a_filter_is_at_most_255_bytes_and_its_property_name_is_reserved() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("filter-limits");
    common::create_stream(&mut client, &stream, 1).await;
    let refused = |record: PublishRecord| {
        let mut client = client.clone();
        let stream = stream.clone();
        async move {
            client
                .publish(partlog::proto::PublishRequest {
                    stream,
                    records: vec![PublishRecord::default(), record],
                    ..Default::default()
                })
                .await
                .expect_err("refused")
        }
    };
    let status = refused(PublishRecord {
        filter: "f".repeat(256),
        ..Default::default()
    })
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("records[1].filter is 256 bytes; at most 255"),
        "{status:?}"
    );
    let status = refused(PublishRecord {
        headers: HashMap::from([(FILTER_PROPERTY.to_owned(), "eu".to_owned())]),
        ..Default::default()
    })
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("set its filter field"),
        "{status:?}"
    );
}

/// A record as the filtered-read checks compare it.
type Summary = (u64, String, String);

fn summary(record: &partlog::proto::Record) -> Summary {
    let value = String::from_utf8(record.value.to_vec()).unwrap();
    (record.offset, record.filter.clone(), value)
}

/// `partlog_chunks_received_total` of `stream`.
async fn chunks_received(server: &Partlog, stream: &str) -> u64 {
    let series = format!("partlog_chunks_received_total{{stream=\"{stream}\"}} ");
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

/// A filtered Read loop from offset 0 until a page comes back empty: the
/// records and the last `next_offset`.
async fn read_filtered(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    filters: &[&str],
    include_unfiltered: bool,
    max_records: u32,
    max_bytes: u32,
) -> (Vec<Summary>, u64) {
    let (mut read, mut offset) = (Vec::new(), 0);
    loop {
        let page = client
            .read(ReadRequest {
                stream: stream.into(),
                partition: 0,
                offset,
                max_records,
                max_bytes,
                filters: filters.iter().map(|f| f.to_string()).collect(),
                include_unfiltered,
                ..Default::default()
            })
            .await
            .expect("a filtered read")
            .into_inner();
        assert!(page.next_offset >= offset, "next_offset went back");
        offset = page.next_offset;
        if page.records.is_empty() {
            return (read, offset);
        }
        if let Some(last) = page.records.last() {
            assert!(offset > last.offset, "next_offset after the page's records");
        }
        read.extend(page.records.iter().map(summary));
    }
}

/// Subscribes from the first record with a filter until `expected`
/// records came and a Skipped event reached `skipped_end`.
async fn subscribe_filtered(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    filters: &[&str],
    include_unfiltered: bool,
    expected: usize,
    skipped_end: u64,
) -> Vec<Summary> {
    let mut events = client
        .subscribe(SubscribeRequest {
            stream: stream.into(),
            start: Some(StartPosition {
                position: Some(Position::First(start_position::First {})),
            }),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            include_unfiltered,
            ..Default::default()
        })
        .await
        .expect("a filtered subscription")
        .into_inner();
    let (mut records, mut skipped_to) = (Vec::new(), 0);
    while records.len() < expected || skipped_to < skipped_end {
        let event = tokio::time::timeout(Duration::from_secs(20), events.message())
            .await
            .unwrap_or_else(|_| panic!("{records:?} and skipped to {skipped_to}, then nothing"))
            .expect("subscription healthy")
            .expect("subscription open");
        match event.event.expect("event set") {
            Event::Record(record) => {
                assert!(record.offset >= skipped_to, "a record before a skip");
                records.push(summary(&record));
            }
            Event::Skipped(skipped) => {
                let last = records.last().map_or(0, |r: &Summary| r.0 + 1);
                assert!(skipped.next_offset > last.max(skipped_to), "{skipped:?}");
                skipped_to = skipped.next_offset;
            }
            Event::Assignment(_) => {}
            Event::EpochMarker(marker) => panic!("the stream never grew: {marker:?}"),
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_reads_return_exactly_what_a_scan_keeps_and_the_broker_skips_the_rest() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("filtered-reads");
    common::create_stream(&mut client, &stream, 1).await;
    let partition = format!("{stream}-0");
    // Chunks of one filter value or none, a native producer's chunks, and
    // last a chunk that mixes "eu" and "us" and ends with "us": a reader of
    // "eu" is sent it and skips its end.
    publish_rounds(&mut client, &stream).await;
    let environment = native_environment().await;
    let native: Vec<(String, String)> = (0..40)
        .map(|i| {
            let filter = if i < 20 { "ap" } else { "eu" };
            (filter.to_owned(), format!("{filter}-native-{i}"))
        })
        .collect();
    native_publish(&environment, &partition, &native).await;
    let mixed: Vec<PublishRecord> = (0..PER_CALL)
        .map(|i| PublishRecord {
            key: "k".into(),
            value: format!("mixed-{i}").into_bytes().into(),
            filter: if i % 2 == 0 { "eu" } else { "us" }.into(),
            ..Default::default()
        })
        .collect();
    publish_ok(&mut client, &stream, mixed).await;

    let before = chunks_received(&server, &stream).await;
    let scan: Vec<Summary> = read_all(&mut client, &stream, 0)
        .await
        .iter()
        .map(summary)
        .collect();
    let unfiltered_chunks = chunks_received(&server, &stream).await - before;
    let end = scan.last().unwrap().0 + 1;
    let mixed_start = scan.iter().find(|r| r.2.starts_with("mixed-")).unwrap().0;

    let specs: [(&[&str], bool); 4] = [
        (&["eu"], false),
        (&["us", "ap"], false),
        (&["eu"], true),
        (&["absent"], false),
    ];
    for (filters, include_unfiltered) in specs {
        let context = format!("filters {filters:?}, include_unfiltered {include_unfiltered}");
        let expected: Vec<Summary> = scan
            .iter()
            .filter(|(_, filter, _)| match filter.as_str() {
                "" => include_unfiltered,
                value => filters.contains(&value),
            })
            .cloned()
            .collect();
        // Paged by records and by bytes; every page resumes where the one
        // before ended, and the last ends past the records skipped.
        for (max_records, max_bytes) in [(7, 0), (1000, 0), (1000, 300)] {
            let before = chunks_received(&server, &stream).await;
            let (read, next_offset) = read_filtered(
                &mut client,
                &stream,
                filters,
                include_unfiltered,
                max_records,
                max_bytes,
            )
            .await;
            assert_eq!(
                read, expected,
                "{context}, pages of {max_records}/{max_bytes}"
            );
            // Past every record returned and the chunks skipped: at least
            // at the start of the last chunk (which the next read passes
            // again), within the last publish call.
            let last_returned = expected.last().map_or(0, |r| r.0 + 1);
            assert!(
                next_offset >= last_returned.max(mixed_start) && next_offset <= end,
                "{context}: the reads end at {next_offset}, before {mixed_start}..={end}"
            );
            if max_bytes == 0 && max_records == 1000 {
                // One subscription reads the partition: the broker sends
                // fewer chunks than it holds, none but by a Bloom filter's
                // false positive when no record matches.
                let chunks = chunks_received(&server, &stream).await - before;
                let most = if expected.is_empty() {
                    2
                } else {
                    unfiltered_chunks - 1
                };
                assert!(
                    chunks <= most,
                    "{context}: the broker sent {chunks} chunks, {unfiltered_chunks} unfiltered"
                );
            }
        }
        if !expected.is_empty() {
            // The last chunk ends with a record the filter skips: a Skipped
            // event says so.
            let skipped_end = expected.last().filter(|r| r.0 + 1 < end).map_or(0, |_| end);
            let subscribed = subscribe_filtered(
                &mut client,
                &stream,
                filters,
                include_unfiltered,
                expected.len(),
                skipped_end,
            )
            .await;
            assert_eq!(subscribed, expected, "{context}, Subscribe");
        }
    }

    // A group member that filters commits past the records it skipped: the
    // last chunk ends with a record it does not read, and its lag is 0.
    let mut member = Member::open_with(
        &mut client,
        ConsumeRequest {
            open: Some(ConsumeOpen {
                stream: stream.clone(),
                group: "eu-readers".into(),
                start: Some(StartPosition {
                    position: Some(Position::First(start_position::First {})),
                }),
                filters: vec!["eu".into()],
                ..Default::default()
            }),
            credit_records: 10_000,
            ..Default::default()
        },
    )
    .await;
    let eu_records = scan.iter().filter(|(_, f, _)| f == "eu").count();
    let (mut consumed, mut skipped_to) = (0, 0);
    while consumed < eu_records || skipped_to < end {
        match member.next().await {
            ConsumeEvent::Record(record) => {
                assert_eq!(record.filter, "eu");
                consumed += 1;
            }
            ConsumeEvent::Skipped(skipped) => skipped_to = skipped.next_offset,
            ConsumeEvent::Assignment(_) => {}
            ConsumeEvent::Commit(ack) => panic!("no commit sent: {ack:?}"),
            ConsumeEvent::EpochMarker(marker) => panic!("the stream never grew: {marker:?}"),
        }
    }
    member.commit([(0, end - 1)].into()).await;
    match member.next().await {
        ConsumeEvent::Commit(ack) => assert_eq!(ack.committed, Some(end - 1), "{ack:?}"),
        other => panic!("a commit's answer, not {other:?}"),
    }
    let offsets = client
        .get_offsets(GetOffsetsRequest {
            stream: stream.clone(),
            group: "eu-readers".into(),
        })
        .await
        .expect("offsets")
        .into_inner();
    assert_eq!(offsets.partitions[0].lag, 0, "{offsets:?}");
}

#[tokio::test]
async fn read_filters_are_refused_field_by_field() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("filter-refusals");
    common::create_stream(&mut client, &stream, 1).await;
    let read = |filters: Vec<String>, include_unfiltered: bool| {
        let mut client = client.clone();
        let stream = stream.clone();
        async move {
            client
                .read(ReadRequest {
                    stream,
                    filters,
                    include_unfiltered,
                    ..Default::default()
                })
                .await
                .expect_err("refused")
        }
    };
    let status = read(vec![], true).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status
        .message()
        .starts_with("include_unfiltered is set but filters is empty"));
    let status = read(vec!["eu".into(), String::new()], false).await;
    assert!(
        status.message().starts_with("filters[1] is empty"),
        "{status:?}"
    );
    let status = read((0..65).map(|i| i.to_string()).collect(), false).await;
    assert!(status.message().contains("at most 64"), "{status:?}");
    let status = client
        .subscribe(SubscribeRequest {
            stream: stream.clone(),
            filters: vec!["f".repeat(256)],
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("filters[0] is 256 bytes"),
        "{status:?}"
    );
    let open = ConsumeRequest {
        open: Some(ConsumeOpen {
            stream: stream.clone(),
            include_unfiltered: true,
            ..Default::default()
        }),
        credit_records: 1,
        ..Default::default()
    };
    let status = client
        .consume(futures::stream::iter([open]))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("include_unfiltered is set but open.filters is empty"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_chunk_records_makes_chunks_that_a_filter_can_skip() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let environment = native_environment().await;
    let status = client
        .create_stream(CreateStreamRequest {
            stream: unique_stream("chunk-cap"),
            partitions: 1,
            max_chunk_records: Some(0),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("max_chunk_records is 0; 1..=10000"),
        "{status:?}"
    );
    // One call of 50 records of "a" then 50 of "b": without the setting
    // the broker makes chunks of what it takes at once, some with both
    // values, and a reader of "a" is sent "b" records too; with chunks of
    // at most 10, none holds both: it is sent the 50 of "a" only, in 5
    // chunks or more.
    for cap in [None, Some(10)] {
        let stream = unique_stream("chunk-cap");
        let created = client
            .create_stream(CreateStreamRequest {
                stream: stream.clone(),
                partitions: 1,
                max_chunk_records: cap,
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        assert_eq!(created.stream.unwrap().max_chunk_records, cap);
        let described = client
            .describe_stream(partlog::proto::DescribeStreamRequest {
                stream: stream.clone(),
            })
            .await
            .expect("describe")
            .into_inner();
        assert_eq!(described.stream.unwrap().max_chunk_records, cap);
        let records: Vec<PublishRecord> = ["a", "b"]
            .iter()
            .flat_map(|filter| {
                (0..50).map(move |i| PublishRecord {
                    key: format!("k{i}"),
                    value: format!("{filter}-{i}").into_bytes().into(),
                    filter: filter.to_string(),
                    ..Default::default()
                })
            })
            .collect();
        publish_ok(&mut client, &stream, records).await;
        let partition = format!("{stream}-0");
        let sent = natively_filtered(&environment, &partition, &["a"], false).await;
        let only_a = sent.iter().all(|(filter, _)| filter == "a");
        assert_eq!(only_a, cap.is_some(), "cap {cap:?}: {sent:?}");
        let before = chunks_received(&server, &stream).await;
        let (read, _) = read_filtered(&mut client, &stream, &["a"], false, 1000, 0).await;
        assert_eq!(read.len(), 50);
        let chunks = chunks_received(&server, &stream).await - before;
        assert!(
            chunks >= if cap.is_some() { 5 } else { 1 },
            "cap {cap:?}: {chunks}"
        );
    }
}
