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

use common::{native_environment, publish_ok, read_all, unique_stream, Partlog};
use futures::StreamExt;
use partlog::proto::{CreateStreamRequest, PublishRecord};
use partlog::record::FILTER_PROPERTY;
use rabbitmq_stream_client::types::{Message, OffsetSpecification, SimpleValue};
use rabbitmq_stream_client::{Environment, FilterConfiguration};
use tokio::sync::mpsc;

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
            publish_ok(&mut client, &stream, records).await;
        }
    }
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
    let producer = environment
        .producer()
        .filter_value_extractor(native_filter)
        .build(&partition)
        .await
        .expect("a native producer with filter values");
    let (confirmed_tx, mut confirmed_rx) = mpsc::unbounded_channel();
    for i in 0..20 {
        let message = Message::builder()
            .body(format!("ap-native-{i}"))
            .application_properties()
            .insert(FILTER_PROPERTY, "ap")
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
    for _ in 0..20 {
        let confirmed = tokio::time::timeout(Duration::from_secs(30), confirmed_rx.recv())
            .await
            .expect("native confirms arrive");
        assert_eq!(confirmed, Some(true), "native record confirmed");
    }
    producer.close().await.expect("close the native producer");
    let native: Vec<(String, String)> = (0..20)
        .map(|i| ("ap".to_owned(), format!("ap-native-{i}")))
        .collect();
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
