//! The server around the API: health, reflection, an unreachable broker and
//! graceful shutdown.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{create_stream, read_all, record, unique_stream, Partlog};
use partlog::proto::{CreateStreamRequest, PublishRequest};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_types::StatusExt;

#[tokio::test]
async fn health_is_serving_and_reflection_lists_the_service() {
    let server = Partlog::start().await;
    assert_eq!(server.health("").await, Some(ServingStatus::Serving));
    assert_eq!(
        server.health("partlog.v1.PartLog").await,
        Some(ServingStatus::Serving)
    );

    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains("partlog.v1.PartLog"), "{names:?}");
    assert!(names.contains("grpc.health.v1.Health"), "{names:?}");
}

/// Standard error goes to a file here, not a terminal: plain text, no
/// colour codes.
#[tokio::test]
async fn logs_to_a_file_carry_no_colour_codes() {
    let server = Partlog::start().await;
    let log = server.log();
    assert!(log.contains("partlog listening"), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in the log:\n{log:?}");
}

#[tokio::test]
async fn unreachable_broker_means_not_serving_and_unavailable() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let server = Partlog::start_unready(&[
        ("PARTLOG_BROKER_HOST", "127.0.0.1"),
        ("PARTLOG_BROKER_PORT", &port),
        ("PARTLOG_BROKER_REQUEST_TIMEOUT_MS", "2000"),
    ])
    .await;
    assert_eq!(server.health("").await, Some(ServingStatus::NotServing));
    let mut client = server.client().await;
    let err = client
        .create_stream(CreateStreamRequest {
            stream: "never".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .expect_err("no broker");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "BROKER_UNAVAILABLE");
    assert!(err.get_details_retry_info().is_some(), "{err:?}");
    assert!(
        err.message().contains(&port),
        "names the broker: {}",
        err.message()
    );
    let err = client
        .publish(PublishRequest {
            stream: "never".into(),
            records: vec![record("k", "v")],
            ..Default::default()
        })
        .await
        .expect_err("no broker");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

// Multi-threaded: the publishers must keep running while this task blocks
// waiting for partlog to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_publishing_loses_no_acknowledged_record() {
    let mut server = Partlog::start().await;
    let stream = unique_stream("shutdown");
    create_stream(&mut server.client().await, &stream, 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for publisher in 0..4 {
        let mut client = server.client().await;
        let stream = stream.clone();
        let stop = stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let values: Vec<String> = (0..50)
                    .map(|i| format!("p{publisher}-b{batch}-r{i}"))
                    .collect();
                let records = values.iter().map(|v| record(v, v.as_str())).collect();
                let Ok(response) = client
                    .publish(PublishRequest {
                        stream: stream.clone(),
                        records,
                        ..Default::default()
                    })
                    .await
                else {
                    break; // The server went away: nothing of this batch was acknowledged.
                };
                for (value, result) in values.into_iter().zip(response.into_inner().results) {
                    if result.error.is_none() {
                        acknowledged.push(value);
                    }
                }
                batch += 1;
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = server.terminate();
    stop.store(true, Ordering::Relaxed);
    assert!(
        status.success(),
        "partlog exits 0 on SIGTERM: {status}\n{}",
        server.log()
    );
    assert!(
        server.log().contains("shutdown complete"),
        "{}",
        server.log()
    );

    let mut acknowledged = HashSet::new();
    for publisher in publishers {
        acknowledged.extend(publisher.await.unwrap());
    }
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );

    let server = Partlog::start().await;
    let mut client = server.client().await;
    let mut stored = HashSet::new();
    for partition in 0..3 {
        for r in read_all(&mut client, &stream, partition).await {
            assert!(
                stored.insert(String::from_utf8(r.value.to_vec()).unwrap()),
                "no duplicates"
            );
        }
    }
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_offset_store_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("offsets");
    let data_dir = data_dir.to_str().unwrap();
    let _first = Partlog::start_with(&[("PARTLOG_OFFSETS_DATA_DIR", data_dir)]).await;
    let (status, log) = Partlog::run_to_exit(&[("PARTLOG_OFFSETS_DATA_DIR", data_dir)]);
    assert!(!status.success());
    assert!(log.contains(data_dir), "names the directory: {log}");
    assert!(log.contains("locked"), "says why: {log}");
}

#[tokio::test]
async fn a_corrupt_offset_store_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("offsets");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("conf"), b"not a sled configuration").unwrap();
    std::fs::write(data_dir.join("db"), vec![0xffu8; 4096]).unwrap();
    let data_dir = data_dir.to_str().unwrap();
    let (status, log) = Partlog::run_to_exit(&[("PARTLOG_OFFSETS_DATA_DIR", data_dir)]);
    assert!(!status.success());
    assert!(log.contains(data_dir), "names the directory: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_subscriptions_instead_of_waiting_for_them() {
    let mut server = Partlog::start_with(&[("PARTLOG_SERVER_SHUTDOWN_TIMEOUT_MS", "20000")]).await;
    let mut client = server.client().await;
    let stream = unique_stream("shutsub");
    create_stream(&mut client, &stream, 2).await;
    let mut events = client
        .subscribe(partlog::proto::SubscribeRequest {
            stream: stream.clone(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    // Both partitions are active for the only member.
    for _ in 0..2 {
        events.message().await.expect("assignment").expect("open");
    }
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let log = server.log();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains("timed out"), "{log}");
    assert!(
        !matches!(events.message().await, Ok(Some(_))),
        "the subscription ended"
    );
}
