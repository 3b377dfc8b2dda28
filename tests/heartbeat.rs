//! Heartbeats: the broker sends one only on a connection it has had
//! nothing else to send on for a heartbeat interval, so a client must count
//! every frame it receives as a sign of life. (The stream client library
//! counted only heartbeats and pushed frames, not the answers to its
//! requests: an administration connection kept busy with commits and
//! offset queries was closed as dead after four heartbeat intervals, and
//! every call in flight on it failed.)

mod common;

use std::time::Duration;

use common::{create_stream, publish_ok, record, unique_stream, Partlog};
use partlog::proto::{CommitRequest, GetOffsetsRequest};

#[tokio::test]
async fn a_connection_busy_with_requests_is_not_taken_for_dead() {
    // Heartbeats every second: the library gives a connection up after four
    // seconds without a frame it counts.
    let server = Partlog::start_with(&[("PARTLOG_BROKER_HEARTBEAT_SECS", "1")]).await;
    let mut client = server.client().await;
    let stream = unique_stream("busy");
    create_stream(&mut client, &stream, 1).await;
    publish_ok(&mut client, &stream, vec![record("k", "v")]).await;

    // Commits and offset queries — requests answered on the administration
    // connection — several times a second for twice that long.
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        client
            .commit(CommitRequest {
                group: "busy".into(),
                stream: stream.clone(),
                offsets: [(0, 0)].into(),
            })
            .await
            .expect("commit");
        client
            .get_offsets(GetOffsetsRequest {
                group: "busy".into(),
                stream: stream.clone(),
            })
            .await
            .expect("offsets");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.log();
    assert!(
        !log.contains("Heartbeat timeout"),
        "a busy connection was closed as dead:\n{log}"
    );
}
