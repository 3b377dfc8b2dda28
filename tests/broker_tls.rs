//! partlog ↔ broker over TLS: the stream TLS listener of
//! `scripts/rabbitmq.sh start --tls` (5551, `make test` starts it), its test
//! CA and client certificate from `scripts/rabbitmq.sh tls-dir`.
//! `PARTLOG_RABBITMQ_TLS_PORT` (or `PARTLOG_RABBITMQ_PORT_OFFSET`, as for the
//! script) and `PARTLOG_RABBITMQ_TLS_DIR` name another broker's.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{broker_host, create_stream, publish_ok, read_all, record, unique_stream};
use common::{Partlog, TestPki};
use partlog::proto;

fn tls_port() -> u16 {
    if let Ok(port) = std::env::var("PARTLOG_RABBITMQ_TLS_PORT") {
        return port.parse().expect("PARTLOG_RABBITMQ_TLS_PORT is a port");
    }
    let offset: u16 = std::env::var("PARTLOG_RABBITMQ_PORT_OFFSET")
        .ok()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    5551 + offset
}

/// The broker's TLS files (ca.pem, client.pem, client.key); fails loudly
/// when the broker was started without `--tls`.
fn tls_dir() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq.sh");
    let output = Command::new(script)
        .arg("tls-dir")
        .output()
        .expect("run scripts/rabbitmq.sh tls-dir");
    assert!(
        output.status.success(),
        "the broker has no TLS files; run `scripts/rabbitmq.sh start --tls` (or `restart \
         --tls`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn file(dir: &std::path::Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// partlog's settings for the TLS listener, with `ca` and `more`.
fn over_tls(ca: &str, more: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("PARTLOG_BROKER_HOST", broker_host()),
        ("PARTLOG_BROKER_PORT", tls_port().to_string()),
        ("PARTLOG_BROKER_TLS_ENABLED", "true".into()),
        ("PARTLOG_BROKER_TLS_CA_FILE", ca.into()),
    ];
    settings.extend(more.iter().cloned());
    settings
}

fn borrowed<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The ports partlog's process has TCP connections to, its clients' left
/// out.
fn broker_ports_of(server: &Partlog) -> Vec<u16> {
    let (pid, listen) = (server.pid(), &server.addr);
    let output = Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .expect("run ss");
    let pid = format!("pid={pid},");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&pid))
        .filter_map(|line| {
            let mut columns = line.split_whitespace().skip(2);
            let (local, peer) = (columns.next()?, columns.next()?);
            (local != listen).then(|| peer.rsplit_once(':')?.1.parse().ok())?
        })
        .collect()
}

#[tokio::test]
async fn every_broker_connection_goes_through_tls_with_a_client_certificate() {
    let dir = tls_dir();
    let settings = over_tls(
        &file(&dir, "ca.pem"),
        &[
            ("PARTLOG_BROKER_TLS_CERT_FILE", file(&dir, "client.pem")),
            ("PARTLOG_BROKER_TLS_KEY_FILE", file(&dir, "client.key")),
            // Reached by address, verified for the name in the certificate.
            ("PARTLOG_BROKER_HOST", "127.0.0.1".into()),
            ("PARTLOG_BROKER_TLS_SERVER_NAME", "localhost".into()),
        ],
    );
    let server = Partlog::start_with(&borrowed(&settings)).await;
    let mut client = server.client().await;
    let stream = unique_stream("tls-broker");
    create_stream(&mut client, &stream, 2).await;
    let partitions = publish_ok(
        &mut client,
        &stream,
        vec![record("customer-1", "a"), record("customer-2", "b")],
    )
    .await;
    let mut read = 0;
    for partition in 0..2 {
        read += read_all(&mut client, &stream, partition).await.len();
    }
    assert_eq!(read, 2, "published to {partitions:?}");
    // Readers, producers and the admin connection: a group member commits.
    let mut events = client
        .subscribe(proto::SubscribeRequest {
            stream: stream.clone(),
            group: "g".into(),
            start: Some(proto::StartPosition {
                position: Some(proto::start_position::Position::First(
                    proto::start_position::First {},
                )),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = 0;
    while records < 2 {
        let event = events.message().await.unwrap().expect("an event");
        if let Some(proto::subscribe_response::Event::Record(r)) = event.event {
            records += 1;
            client
                .commit(proto::CommitRequest {
                    stream: stream.clone(),
                    group: "g".into(),
                    offsets: [(r.partition, r.offset)].into(),
                })
                .await
                .unwrap();
        }
    }
    let offsets = client
        .get_offsets(proto::GetOffsetsRequest {
            stream: stream.clone(),
            group: "g".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(offsets.partitions.iter().all(|p| p.lag == 0), "{offsets:?}");

    let ports = broker_ports_of(&server);
    assert!(!ports.is_empty(), "partlog holds no broker connection");
    assert!(
        ports.iter().all(|p| *p == tls_port()),
        "partlog connects to broker ports {ports:?}, not only the TLS port {}",
        tls_port()
    );
    drop(events);
    client
        .delete_stream(proto::DeleteStreamRequest { stream })
        .await
        .unwrap();
}

#[test]
fn a_broker_certificate_partlog_cannot_verify_stops_start_up() {
    let dir = tls_dir();
    let stranger = TestPki::new("not the broker's CA");
    let cases = [
        (
            over_tls(&stranger.ca_file().display().to_string(), &[]),
            "check broker.tls.ca_file and broker.tls.server_name",
        ),
        (
            over_tls(
                &file(&dir, "ca.pem"),
                &[("PARTLOG_BROKER_TLS_SERVER_NAME", "rabbit.example".into())],
            ),
            "check broker.tls.ca_file and broker.tls.server_name",
        ),
        (
            over_tls("/no/such/ca.pem", &[]),
            "broker.tls.ca_file /no/such/ca.pem: cannot read it",
        ),
    ];
    for (settings, expected) in cases {
        let (status, log) = Partlog::run_to_exit(&borrowed(&settings));
        assert!(!status.success(), "{settings:?}: partlog ran:\n{log}");
        assert!(log.contains(expected), "{settings:?}:\n{log}");
    }
}
