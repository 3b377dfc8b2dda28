//! Growing a stream's partitions online (ResizeStream): key order kept for
//! consumer groups across instances while publishers write, an instance
//! killed during a resize, native routing agreement after each growth,
//! epoch markers shown to readers, and the requests a resize refuses.

mod common;

use std::time::Duration;

use common::resize::{native_routing_agrees, Workload};
use common::{broker_port, create_stream, publish_ok, record, unique_stream, Partlog};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{self, subscribe_response::Event};
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

async fn resize(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    partitions: u32,
) -> Result<proto::StreamDescription, tonic::Status> {
    client
        .resize_stream(proto::ResizeStreamRequest {
            stream: stream.into(),
            partitions,
        })
        .await
        .map(|answer| answer.into_inner().stream.expect("a description"))
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn growths(description: &proto::StreamDescription) -> Vec<(u32, u32, usize)> {
    description
        .epochs
        .iter()
        .map(|e| (e.from_partitions, e.to_partitions, e.marker_offsets.len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grows_3_to_5_to_8_under_load_keeping_each_keys_order_across_instances() {
    let mut a = Partlog::start().await;
    let b = Partlog::start().await;
    let mut via_a = a.client().await;
    let mut via_b = b.client().await;
    let stream = unique_stream("grow");
    create_stream(&mut via_a, &stream, 3).await;

    let mut workload = Workload::new(&stream);
    for (name, server) in [("a1", &a), ("a2", &a), ("b1", &b), ("b2", &b)] {
        workload.join(name, &server.url()).await;
    }
    workload.publish("pa", vec![a.url(), b.url()]);
    workload.publish("pb", vec![b.url(), a.url()]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The group falls behind before each resize: old records of every key
    // wait on the old partitions while new ones arrive on the new.
    workload.pause();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = resize(&mut via_a, &stream, 5).await.expect("3 -> 5");
    tokio::time::sleep(Duration::from_millis(500)).await;
    workload.resume();
    assert_eq!(grown.partitions.len(), 5);
    assert_eq!(growths(&grown), [(3, 5, 3)]);
    native_routing_agrees(&mut via_b, &stream, 5_000, broker_port()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The second resize runs on A, which is killed while it fences: the
    // stream stays fenced until the resize is repeated, here through B.
    workload.pause();
    let resizing = tokio::spawn({
        let (mut via_a, stream) = (via_a.clone(), stream.clone());
        async move { resize(&mut via_a, &stream, 8).await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.kill();
    let cut_short = resizing.await.expect("resize task");
    assert!(
        cut_short.is_err(),
        "the resize on the killed instance answered {cut_short:?}"
    );
    let grown = resize(&mut via_b, &stream, 8)
        .await
        .expect("5 -> 8, finished through B");
    assert_eq!(growths(&grown), [(3, 5, 3), (5, 8, 5)]);
    native_routing_agrees(&mut via_b, &stream, 5_000, broker_port()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    workload.finish(Duration::from_secs(60)).await;
    let summary = workload.assert_kept_order(8);
    assert!(
        !workload.markers().is_empty(),
        "members were told of the markers: {summary}"
    );
    println!("{summary}");
}

#[tokio::test]
async fn a_resize_only_grows_and_repeating_it_answers_the_same() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("only-grows");
    create_stream(&mut client, &stream, 3).await;
    for (partitions, expected) in [
        (2, "RESIZE_NOT_GROWING"),
        (3, "RESIZE_NOT_GROWING"),
        (0, "VALUE_OUT_OF_RANGE"),
        (257, "VALUE_OUT_OF_RANGE"),
    ] {
        let refused = resize(&mut client, &stream, partitions).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{partitions}: {refused:?}"
        );
        assert_eq!(reason(&refused), expected, "{partitions}: {refused:?}");
    }
    let missing = resize(&mut client, &unique_stream("missing"), 4)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let grown = resize(&mut client, &stream, 4).await.expect("3 -> 4");
    let again = resize(&mut client, &stream, 4).await.expect("repeated");
    assert_eq!(growths(&grown), [(3, 4, 3)]);
    assert_eq!(
        again.epochs, grown.epochs,
        "a repeated resize changes nothing"
    );
    let shrink = resize(&mut client, &stream, 3).await.unwrap_err();
    assert_eq!(reason(&shrink), "RESIZE_NOT_GROWING", "{shrink:?}");

    // The marker's property is partlog's.
    let mut marked = record("k", "v");
    marked.headers.insert("partlog.epoch".into(), "3>5".into());
    let refused = client
        .publish(proto::PublishRequest {
            stream: stream.clone(),
            records: vec![marked],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "HEADER_INVALID", "{refused:?}");
}

#[tokio::test]
async fn two_instances_resizing_at_once_make_one_growth() {
    let a = Partlog::start().await;
    let b = Partlog::start().await;
    let mut via_a = a.client().await;
    let mut via_b = b.client().await;
    let stream = unique_stream("at-once");
    create_stream(&mut via_a, &stream, 2).await;
    publish_ok(
        &mut via_a,
        &stream,
        (0..20).map(|i| record(&format!("k{i}"), "v")).collect(),
    )
    .await;
    let (first, second) = tokio::join!(
        resize(&mut via_a, &stream, 4),
        resize(&mut via_b, &stream, 4)
    );
    let (first, second) = (first.expect("through A"), second.expect("through B"));
    assert_eq!(growths(&first), [(2, 4, 2)]);
    assert_eq!(
        growths(&second),
        growths(&first),
        "one growth, whichever answered"
    );
    assert_eq!(first.partitions.len(), 4);
    // Both instances route over the four partitions.
    for client in [&mut via_a, &mut via_b] {
        let routed = publish_ok(
            client,
            &stream,
            (0..200).map(|i| record(&format!("n{i}"), "v")).collect(),
        )
        .await;
        assert!(
            routed.iter().any(|&p| p >= 2),
            "new partitions used: {routed:?}"
        );
    }
}

#[tokio::test]
async fn readers_are_told_where_the_markers_are_and_never_get_them_as_records() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("markers");
    create_stream(&mut client, &stream, 2).await;
    let before: Vec<_> = (0..30).map(|i| record(&format!("k{i}"), "old")).collect();
    publish_ok(&mut client, &stream, before).await;
    let mut tail = client
        .subscribe(proto::SubscribeRequest {
            stream: stream.clone(),
            start: Some(proto::StartPosition {
                position: Some(proto::start_position::Position::First(
                    proto::start_position::First {},
                )),
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();

    let grown = resize(&mut client, &stream, 3).await.expect("2 -> 3");
    let markers = grown.epochs[0].marker_offsets.clone();
    let after: Vec<_> = (0..30).map(|i| record(&format!("k{i}"), "new")).collect();
    publish_ok(&mut client, &stream, after).await;

    for partition in 0..2u32 {
        let read = client
            .read(proto::ReadRequest {
                stream: stream.clone(),
                partition,
                max_records: 1000,
                ..Default::default()
            })
            .await
            .expect("read")
            .into_inner();
        let marker = markers[partition as usize];
        assert_eq!(
            read.markers,
            [proto::EpochMarker {
                partition,
                offset: marker,
                from_partitions: 2,
                to_partitions: 3
            }]
        );
        assert!(read
            .records
            .iter()
            .all(|r| r.offset != marker && !r.headers.contains_key("partlog.epoch")));
        let old = read.records.iter().filter(|r| &r.value[..] == b"old");
        assert!(
            old.clone().all(|r| r.offset < marker),
            "old records precede the marker"
        );
        assert!(read
            .records
            .iter()
            .filter(|r| &r.value[..] == b"new")
            .all(|r| r.offset > marker));
    }

    // A filtered Read of a grown stream is told of the marker too (the
    // broker sends the marker's chunk for its filter value).
    let filtered = client
        .read(proto::ReadRequest {
            stream: stream.clone(),
            partition: 0,
            max_records: 1000,
            filters: vec!["no-record-has-this".into()],
            ..Default::default()
        })
        .await
        .expect("filtered read")
        .into_inner();
    assert!(filtered.records.is_empty(), "{:?}", filtered.records);
    assert_eq!(
        filtered
            .markers
            .iter()
            .map(|m| m.offset)
            .collect::<Vec<_>>(),
        [markers[0]]
    );

    // Without a group, Subscribe passes the markers as events and reads
    // the new partition too.
    let mut told = Vec::new();
    let mut new_partition_records = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (told.len() < 2 || new_partition_records == 0) && tokio::time::Instant::now() < deadline {
        let event = tokio::time::timeout(Duration::from_secs(30), tail.message())
            .await
            .expect("an event")
            .expect("subscription healthy")
            .expect("subscription open")
            .event
            .expect("event set");
        match event {
            Event::EpochMarker(marker) => told.push((marker.partition, marker.offset)),
            Event::Record(r) => {
                assert!(!r.headers.contains_key("partlog.epoch"));
                if r.partition == 2 {
                    new_partition_records += 1;
                }
            }
            Event::Assignment(_) | Event::Skipped(_) => {}
        }
    }
    told.sort();
    assert_eq!(told, [(0, markers[0]), (1, markers[1])]);
    assert!(
        new_partition_records > 0,
        "the subscription read the new partition"
    );

    let offsets = client
        .get_offsets(proto::GetOffsetsRequest {
            stream: stream.clone(),
            group: "g".into(),
        })
        .await
        .expect("get offsets")
        .into_inner();
    let shown: Vec<Vec<u64>> = offsets
        .partitions
        .iter()
        .map(|p| p.epoch_markers.clone())
        .collect();
    assert_eq!(shown, [vec![markers[0]], vec![markers[1]], vec![]]);
}
