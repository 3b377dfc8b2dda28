//! partlog's JSON log at trace level, with tokens and a broker password of
//! its own: no line shows a secret, every line is one JSON object, and the
//! lines of a call carry its span (method, peer, stream); the text log
//! names a call's stream and group once.

mod common;

use std::process::Command;

use common::{create_stream, record, unique_stream, Member, Partlog};
use partlog::proto::consume_response;
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{self, subscribe_response};
use serde_json::Value;
use tonic::{Code, Request};

/// A broker user made for one test, deleted when dropped: partlog must log
/// in with a password that appears nowhere else (guest's is its name).
struct BrokerUser {
    name: String,
    password: String,
}

fn rabbitmqctl(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq.sh");
    let output = Command::new(script)
        .arg("exec")
        .arg("rabbitmqctl")
        .args(args)
        .output()
        .expect("run the broker script");
    assert!(
        output.status.success(),
        "rabbitmqctl {:?} failed (the test needs the broker of scripts/rabbitmq.sh):\n{}{}",
        args.first(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl BrokerUser {
    fn new() -> BrokerUser {
        let id = rand::random::<u64>();
        let user = BrokerUser {
            name: format!("partlog-logs-{id:016x}"),
            password: format!("s3cret-{:032x}", rand::random::<u128>()),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]);
        user
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_user", &self.name]);
    }
}

fn token_sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The `rpc` span a line was logged in, if any.
fn rpc_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "rpc")
}

#[tokio::test]
async fn json_lines_carry_the_call_and_never_a_secret() {
    let user = BrokerUser::new();
    let token = format!("tok-{:032x}", rand::random::<u128>());
    let wrong = format!("tok-{:032x}", rand::random::<u128>());
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[principal]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\n[[principal.grant]]\n\
             permissions = [\"admin\", \"write\", \"read\", \"group\"]\nstreams = [\"*\"]\n\
             groups = [\"*\"]\n",
            token_sha256_hex(&token)
        ),
    )
    .unwrap();
    let server = Partlog::start_with(&[
        ("PARTLOG_LOG_FORMAT", "json"),
        // Everything any crate logs: h2's frames, the broker client's.
        ("PARTLOG_LOG", "trace"),
        ("PARTLOG_AUTH_TOKENS_FILE", tokens_file.to_str().unwrap()),
        ("PARTLOG_BROKER_USER", &user.name),
        ("PARTLOG_BROKER_PASSWORD", &user.password),
    ])
    .await;

    let mut client = PartLogClient::new(server.channel().await.unwrap());
    let stream = unique_stream("logs");
    let create = proto::CreateStreamRequest {
        stream: stream.clone(),
        partitions: 2,
        ..Default::default()
    };
    client
        .create_stream(with_token(&token, create))
        .await
        .unwrap();
    let publish = proto::PublishRequest {
        stream: stream.clone(),
        records: vec![record("a", "1"), record("b", "2")],
        ..Default::default()
    };
    let results = client
        .publish(with_token(&token, publish))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    // A group member: its partition tasks log inside the call.
    let join = proto::SubscribeRequest {
        stream: stream.clone(),
        group: "audit".into(),
        ..Default::default()
    };
    let mut member = client
        .subscribe(with_token(&token, join))
        .await
        .unwrap()
        .into_inner();
    let mut records = 0;
    while records < 2 {
        let message = member
            .message()
            .await
            .unwrap()
            .expect("the member's events");
        if let Some(subscribe_response::Event::Record(_)) = message.event {
            records += 1;
        }
    }
    drop(member);

    let describe = || proto::DescribeStreamRequest {
        stream: stream.clone(),
    };
    let refused = client
        .describe_stream(with_token(&wrong, describe()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = client.describe_stream(describe()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    client
        .delete_stream(with_token(
            &token,
            proto::DeleteStreamRequest {
                stream: stream.clone(),
            },
        ))
        .await
        .unwrap();

    let log = server.log();
    for secret in [&token, &wrong, &user.password] {
        assert!(!log.contains(secret.as_str()), "the log shows a secret");
    }
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(value.is_object(), "not a JSON object: {line}");
            value
        })
        .collect();
    let in_calls: Vec<&Value> = lines.iter().filter(|l| rpc_span(l).is_some()).collect();
    assert!(
        in_calls.len() > 20,
        "few lines inside calls at trace level:\n{log}"
    );
    for line in &in_calls {
        let span = rpc_span(line).unwrap();
        assert!(span["method"].is_string(), "no method: {line}");
        assert!(
            span["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "no peer: {line}"
        );
    }
    // Where a call named a stream, its lines name it too; a refused call
    // ends before its request is read.
    let find = |message: &str, method: &str| -> Vec<&Value> {
        in_calls
            .iter()
            .copied()
            .filter(|l| {
                l["message"] == message
                    && rpc_span(l).unwrap()["method"] == format!("partlog.v1.PartLog/{method}")
            })
            .collect()
    };
    for method in ["CreateStream", "Publish", "DeleteStream"] {
        let finished = find("call finished", method);
        assert_eq!(finished.len(), 1, "{method}: {finished:?}");
        assert_eq!(rpc_span(finished[0]).unwrap()["stream"], stream.as_str());
    }
    // Refusals go to the audit log, in the call's span.
    let refused: Vec<&Value> = find("audit", "DescribeStream")
        .into_iter()
        .filter(|l| l["target"] == "partlog::audit" && l["action"] == "call refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|l| l["outcome"] == "UNAUTHENTICATED"));
    let failed = find("call failed", "DescribeStream");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|l| l["code"] == "UNAUTHENTICATED"));
    // The member's partition tasks log in the call's span, and the group's.
    let active: Vec<&&Value> = in_calls
        .iter()
        .filter(|l| l["message"] == "active" && l["target"] == "partlog::log::subscribe")
        .collect();
    assert!(!active.is_empty(), "no partition task line in the call");
    for line in active {
        let span = rpc_span(line).unwrap();
        assert_eq!(span["method"], "partlog.v1.PartLog/Subscribe");
        assert_eq!(span["stream"], stream.as_str());
        assert_eq!(span["group"], "audit");
    }
}

/// A Consume call needs two permissions on its stream (read, group), and
/// its span still names the stream once.
#[tokio::test]
async fn a_text_line_names_the_stream_of_its_call_once() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("logs-text");
    create_stream(&mut client, &stream, 1).await;
    let mut member = Member::open(&mut client, &stream, "once", 10).await;
    while !matches!(member.next().await, consume_response::Event::Assignment(_)) {}
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rpc{method=\"partlog.v1.PartLog/Consume\""))
        .collect();
    assert!(!lines.is_empty(), "no line inside the Consume call:\n{log}");
    for line in lines {
        let span = &line[line.find("rpc{").unwrap()..];
        let span = &span[..span.find('}').unwrap()];
        assert_eq!(span.matches("stream=").count(), 1, "{line}");
        assert_eq!(span.matches("group=").count(), 1, "{line}");
    }
}
