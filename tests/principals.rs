//! What belongs to a principal, and what is written about it (issue 17):
//! producer ids are their principal's, across instances; the audit log;
//! plain-text listeners refused with tokens; the CLI's warning before a
//! token goes out in plain text.

mod common;

use common::principals::{as_principal, everything, grant, new_token, principal, PrincipalsFile};
use common::{record, unique_stream, Partlog};
use partlog::proto::{self, PublishRecord, PublishRequest};

fn sequenced(key: &str, value: &str, sequence: u64) -> PublishRecord {
    PublishRecord {
        sequence,
        ..record(key, value)
    }
}

/// Alice and Bob both publish with producer id "checkout", through two
/// instances: neither makes the other's records duplicates, and each one's
/// retry through the other instance is still answered as a duplicate.
#[tokio::test]
async fn a_producer_id_is_its_principals_across_instances() {
    let (alice, bob) = (new_token(), new_token());
    let writer = || vec![everything()];
    let file = PrincipalsFile::new(
        &(principal("alice", &alice, &writer()) + &principal("bob", &bob, &writer())),
    );
    let settings = [("PARTLOG_AUTH_TOKENS_FILE", file.path())];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (one, two) = (
        Partlog::start_with(&settings).await,
        Partlog::start_with(&settings).await,
    );
    let (mut first, mut second) = (one.client().await, two.client().await);
    let stream = unique_stream("owned-ids");
    first
        .create_stream(as_principal(
            &alice,
            proto::CreateStreamRequest {
                stream: stream.clone(),
                partitions: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("create");
    let publish = |token: &str, value: &str, sequence: u64| {
        as_principal(
            token,
            PublishRequest {
                stream: stream.clone(),
                producer_id: "checkout".into(),
                records: vec![sequenced("k", value, sequence)],
                ..Default::default()
            },
        )
    };
    let duplicate = |response: tonic::Response<proto::PublishResponse>| {
        let result = &response.into_inner().results[0];
        assert!(result.error.is_none(), "{result:?}");
        result.duplicate
    };
    // Alice stores 1 and 2 through the first instance.
    assert!(!duplicate(
        first.publish(publish(&alice, "alice-1", 1)).await.unwrap()
    ));
    assert!(!duplicate(
        first.publish(publish(&alice, "alice-2", 2)).await.unwrap()
    ));
    // Bob's 1 and 2 through the second are his own, not her duplicates.
    assert!(!duplicate(
        second.publish(publish(&bob, "bob-1", 1)).await.unwrap()
    ));
    assert!(!duplicate(
        second.publish(publish(&bob, "bob-2", 2)).await.unwrap()
    ));
    // Alice's retry of 2 through the second instance is still a duplicate.
    assert!(duplicate(
        second.publish(publish(&alice, "alice-2", 2)).await.unwrap()
    ));

    let read = first
        .read(as_principal(
            &alice,
            proto::ReadRequest {
                stream: stream.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("read")
        .into_inner();
    let values: Vec<String> = read
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect();
    assert_eq!(values, ["alice-1", "alice-2", "bob-1", "bob-2"]);
}

/// The audit log has a line per administrative call and per refusal,
/// with principal, peer, resource and outcome, on its own target.
#[tokio::test]
async fn administrative_calls_and_refusals_are_audited() {
    let (admin, reader) = (new_token(), new_token());
    let file = PrincipalsFile::new(
        &(principal("admin", &admin, &[everything()])
            + &principal("reader", &reader, &[grant(&["read"], &["*"], &[])])),
    );
    let server = Partlog::start_with(&[
        ("PARTLOG_AUTH_TOKENS_FILE", &file.path()),
        ("PARTLOG_LOG_FORMAT", "json"),
    ])
    .await;
    let mut client = server.client().await;
    let stream = unique_stream("audited");
    let create = |token: &str| {
        as_principal(
            token,
            proto::CreateStreamRequest {
                stream: stream.clone(),
                partitions: 1,
                ..Default::default()
            },
        )
    };
    client.create_stream(create(&admin)).await.expect("create");
    let denied = client.create_stream(create(&reader)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let refused = client.create_stream(create("not-a-token-0123456789")).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    let lines: Vec<serde_json::Value> = server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["target"] == "partlog::audit")
        .collect();
    // Event fields are flattened into the line.
    let field = |line: &serde_json::Value, name: &str| line[name].as_str().map(str::to_owned);
    let summary: Vec<(Option<String>, Option<String>, Option<String>)> = lines
        .iter()
        .map(|l| {
            (
                field(l, "action"),
                field(l, "principal"),
                field(l, "outcome"),
            )
        })
        .collect();
    let some = |s: &str| Some(s.to_owned());
    assert!(
        summary.contains(&(some("CreateStream"), some("admin"), some("OK"))),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(
            some("call denied"),
            some("reader"),
            some("PERMISSION_DENIED")
        )),
        "{summary:?}"
    );
    assert!(
        summary.contains(&(some("call refused"), some("-"), some("UNAUTHENTICATED"))),
        "{summary:?}"
    );
    let created = lines
        .iter()
        .find(|l| field(l, "action").as_deref() == Some("CreateStream"))
        .unwrap();
    assert_eq!(
        field(created, "resource"),
        Some(format!("stream {stream:?}"))
    );
    assert!(field(created, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert!(!server.log().contains("not-a-token"), "no token in the log");
}

/// With tokens, a plain-text listener beyond loopback is refused at
/// start-up, unless auth.allow_plaintext says so.
#[test]
fn a_plain_text_listener_beyond_loopback_is_refused_with_tokens() {
    let token = new_token();
    let file = PrincipalsFile::new(&principal("admin", &token, &[everything()]));
    let path = file.path();
    let (status, log) = Partlog::run_to_exit(&[
        ("PARTLOG_AUTH_TOKENS_FILE", &path),
        ("PARTLOG_SERVER_LISTEN", "0.0.0.0:0"),
    ]);
    assert!(!status.success());
    assert!(
        log.contains("bearer tokens would reach") && log.contains("auth.allow_plaintext"),
        "{log}"
    );
    let (status, log) = Partlog::run_to_exit(&[
        ("PARTLOG_AUTH_TOKENS_FILE", &path),
        ("PARTLOG_METRICS_LISTEN", "0.0.0.0:0"),
    ]);
    assert!(!status.success());
    assert!(log.contains("metrics.listen 0.0.0.0"), "{log}");
}

/// The CLI warns before it sends a token over http:// to another machine.
#[test]
fn the_cli_warns_before_a_token_goes_out_in_plain_text() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_partlog"))
        .args([
            "stream",
            "describe",
            "orders",
            "--server",
            "http://192.0.2.1:50051",
        ])
        .env("PARTLOG_TOKEN", new_token())
        .output()
        .expect("run partlog");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("warning: the bearer token goes to 192.0.2.1:50051 in plain text"),
        "{stderr}"
    );
    let local = std::process::Command::new(env!("CARGO_BIN_EXE_partlog"))
        .args([
            "stream",
            "describe",
            "orders",
            "--server",
            "http://127.0.0.1:1",
        ])
        .env("PARTLOG_TOKEN", new_token())
        .output()
        .expect("run partlog");
    assert!(!String::from_utf8_lossy(&local.stderr).contains("warning"));
}
