//! Interoperability with RabbitMQ's native stream client
//! (rabbitmq-stream-client): routing agreement, and records flowing both
//! ways between partlog and native producers and consumers, and committed
//! offsets shared with native consumers of the same name.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{create_stream, native_environment, publish_ok, read_all, unique_stream, Partlog};
use futures::StreamExt;
use partlog::proto::{CommitRequest, GetOffsetsRequest, OffsetSource, PublishRecord};
use partlog::record::KEY_PROPERTY;
use rabbitmq_stream_client::types::{
    HashRoutingMurmurStrategy, Message, OffsetSpecification, RoutingStrategy, SimpleValue,
};
use tokio::sync::mpsc;

/// The routing key of a native record: partlog's key property.
fn native_key(message: &Message) -> String {
    match message
        .application_properties()
        .and_then(|p| p.get(KEY_PROPERTY))
    {
        Some(SimpleValue::String(key)) => key.clone(),
        other => panic!("message without a string key property: {other:?}"),
    }
}

/// Publishes `keys` once through partlog (value "partlog") and once through
/// the native super stream producer with its murmur hash strategy (value
/// "native"), reads every partition back and checks that both put each key
/// in the same partition.
async fn routing_agrees(partitions: u32) {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream(&format!("agree{partitions}"));
    create_stream(&mut client, &stream, partitions).await;
    let keys: Vec<String> = (0..10_000)
        .map(|_| {
            let len = rand::random_range(1..24);
            (0..len)
                .map(|_| match rand::random_range(0..4) {
                    0 => char::from_u32(rand::random_range(0x400..0x4ff)).unwrap(),
                    1 => char::from_u32(rand::random_range(0x4e00..0x9fff)).unwrap(),
                    _ => char::from(rand::random_range(b'!'..=b'~')),
                })
                .collect()
        })
        .collect();

    for chunk in keys.chunks(2000) {
        let records = chunk
            .iter()
            .map(|k| PublishRecord {
                key: k.clone(),
                value: b"partlog".to_vec().into(),
                headers: HashMap::new(),
                ..Default::default()
            })
            .collect();
        publish_ok(&mut client, &stream, records).await;
    }

    let environment = native_environment().await;
    let mut producer = environment
        .super_stream_producer(RoutingStrategy::HashRoutingStrategy(
            HashRoutingMurmurStrategy {
                routing_extractor: &native_key,
            },
        ))
        .build(&stream)
        .await
        .expect("native super stream producer");
    let (confirmed_tx, mut confirmed_rx) = mpsc::unbounded_channel();
    for key in &keys {
        let message = Message::builder()
            .body("native")
            .application_properties()
            .insert(KEY_PROPERTY, key.as_str())
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
    for _ in &keys {
        let confirmed = tokio::time::timeout(Duration::from_secs(60), confirmed_rx.recv())
            .await
            .expect("native confirms arrive")
            .expect("confirm channel open");
        assert!(confirmed, "native record confirmed");
    }
    producer.close().await.expect("close native producer");

    let mut partlog_partition: HashMap<String, u32> = HashMap::new();
    let mut native_partition: HashMap<String, u32> = HashMap::new();
    for partition in 0..partitions {
        for r in read_all(&mut client, &stream, partition).await {
            let target = match &r.value[..] {
                b"partlog" => &mut partlog_partition,
                b"native" => &mut native_partition,
                other => panic!("unexpected value {other:?}"),
            };
            target.insert(r.key, partition);
        }
    }
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(
        partlog_partition.len(),
        distinct.len(),
        "every partlog record read back"
    );
    assert_eq!(
        native_partition.len(),
        distinct.len(),
        "every native record read back"
    );
    for (key, partition) in &partlog_partition {
        assert_eq!(
            native_partition.get(key),
            Some(partition),
            "key {key:?}: partlog chose {partition}, the native producer {:?}",
            native_partition.get(key)
        );
    }
    // Every partition is used.
    let mut used: Vec<u32> = partlog_partition.values().copied().collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), partitions as usize);
}

#[tokio::test]
async fn routing_agrees_with_native_producer_on_3_partitions() {
    routing_agrees(3).await;
}

#[tokio::test]
async fn routing_agrees_with_native_producer_on_7_partitions() {
    routing_agrees(7).await;
}

#[tokio::test]
async fn native_consumer_reads_partlog_records() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("to-native");
    create_stream(&mut client, &stream, 2).await;
    let partition = publish_ok(
        &mut client,
        &stream,
        vec![PublishRecord {
            key: "order-42".into(),
            value: b"{\"total\": 12}".to_vec().into(),
            headers: HashMap::from([("content-type".to_string(), "application/json".to_string())]),
            ..Default::default()
        }],
    )
    .await[0];

    let environment = native_environment().await;
    let mut consumer = environment
        .consumer()
        .offset(OffsetSpecification::First)
        .build(&format!("{stream}-{partition}"))
        .await
        .expect("native consumer");
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery within 30 s")
        .expect("stream open")
        .expect("delivery ok");
    let message = delivery.message();
    assert_eq!(message.data(), Some(&b"{\"total\": 12}"[..]));
    let properties = message
        .application_properties()
        .expect("application properties");
    assert_eq!(
        properties.get(KEY_PROPERTY),
        Some(&SimpleValue::String("order-42".into()))
    );
    assert_eq!(
        properties.get("content-type"),
        Some(&SimpleValue::String("application/json".into()))
    );
    consumer.handle().close().await.expect("close consumer");
}

#[tokio::test]
async fn read_returns_records_a_native_producer_wrote() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("from-native");
    create_stream(&mut client, &stream, 2).await;

    let environment = native_environment().await;
    let producer = environment
        .producer()
        .build(&format!("{stream}-1"))
        .await
        .expect("native producer");
    let with_key = Message::builder()
        .body("keyed")
        .application_properties()
        .insert(KEY_PROPERTY, "k-1")
        .insert("source", "native")
        .insert("attempt", 3i32)
        .message_builder()
        .build();
    let plain = Message::builder().body("plain").build();
    for message in [with_key, plain] {
        let status = producer
            .send_with_confirm(message)
            .await
            .expect("native send");
        assert!(status.confirmed());
    }
    producer.close().await.expect("close producer");

    let records = read_all(&mut client, &stream, 1).await;
    assert_eq!(records.len(), 2);
    assert_eq!(&records[0].value[..], b"keyed");
    assert_eq!(records[0].key, "k-1");
    assert_eq!(records[0].headers["source"], "native");
    assert_eq!(records[0].headers["attempt"], "3");
    assert_eq!(&records[1].value[..], b"plain");
    assert_eq!(records[1].key, "");
    assert!(records[1].headers.is_empty());
    assert_eq!((records[0].offset, records[1].offset), (0, 1));
}

/// A group's commit is the native consumer offset of the group's name on
/// the partition stream, and the other way round: a native consumer and a
/// partlog group of the same name resume from each other's offsets.
#[tokio::test]
async fn committed_offsets_are_shared_with_native_consumers() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("offsets-native");
    create_stream(&mut client, &stream, 2).await;
    let partition = publish_ok(
        &mut client,
        &stream,
        (0..10)
            .map(|i| PublishRecord {
                key: "same-key".into(),
                value: format!("{i}").into_bytes().into(),
                ..Default::default()
            })
            .collect(),
    )
    .await[0];
    let partition_stream = format!("{stream}-{partition}");
    let environment = native_environment().await;
    let native_consumer = |name: &'static str| {
        environment
            .consumer()
            .name(name)
            .offset(OffsetSpecification::First)
            .build(&partition_stream)
    };

    // partlog → native.
    client
        .commit(CommitRequest {
            group: "billing".into(),
            stream: stream.clone(),
            offsets: HashMap::from([(partition, 4)]),
        })
        .await
        .expect("commit");
    let billing = native_consumer("billing").await.expect("native consumer");
    let mut seen = None;
    for _ in 0..100 {
        seen = billing.query_offset().await.ok();
        if seen == Some(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(4), "the native consumer sees the group's commit");
    billing.handle().close().await.expect("close");

    // native → partlog.
    let audit = native_consumer("audit").await.expect("native consumer");
    audit.store_offset(7).await.expect("native store_offset");
    audit.handle().close().await.expect("close");
    let mut row = None;
    for _ in 0..100 {
        let rows = client
            .get_offsets(GetOffsetsRequest {
                group: "audit".into(),
                stream: stream.clone(),
            })
            .await
            .expect("get offsets")
            .into_inner()
            .partitions;
        row = rows.into_iter().find(|r| r.partition == partition);
        if row.as_ref().is_some_and(|r| r.committed == Some(7)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = row.expect("a row for the partition");
    assert_eq!(row.committed, Some(7), "partlog sees the native offset");
    assert_eq!(row.committed_source(), OffsetSource::Broker);
    assert_eq!(row.lag, 2, "records 8 and 9 are left");
}
