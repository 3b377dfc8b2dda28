//! Revocation reaches open calls (issue 17): a reload of the principals
//! file ends the open Subscribe, Consume and PublishStream calls of a
//! principal removed or whose grants narrowed; a reload of the client CAs
//! closes the connections whose certificate they no longer verify.

mod common;

use std::time::Duration;

use common::principals::{as_principal, everything, grant, new_token, principal, PrincipalsFile};
use common::{create_stream, record, trusting, unique_stream, Partlog, TestPki};
use partlog::proto::{self, PublishRequest, SubscribeRequest};
use tonic::Code;
use tonic_types::StatusExt;

/// Sends SIGHUP to `server`: it reloads its security files.
/// The next message of a Subscribe within 10 s: a record, or the status
/// that ended the call.
async fn next_event(
    stream: &mut tonic::Streaming<proto::SubscribeResponse>,
) -> Result<Option<proto::subscribe_response::Event>, tonic::Status> {
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event or the call's end within 10 s")?;
    Ok(message.and_then(|m| m.event))
}

/// `partlog tail` as bob; remove bob; SIGHUP; publish as admin: bob's tail
/// ends UNAUTHENTICATED and never sees the record. A narrowed grant ends a
/// member's call PERMISSION_DENIED; an unrelated change ends nothing.
#[tokio::test]
async fn a_reload_ends_the_open_calls_it_no_longer_allows() {
    let (admin, bob, carol) = (new_token(), new_token(), new_token());
    let reading = |streams: &str| principal("bob", &bob, &[grant(&["read"], &[streams], &[])]);
    let carol_entry = principal(
        "carol",
        &carol,
        &[grant(&["read", "group"], &["*"], &["g"])],
    );
    let file_with =
        |bob_entry: &str| principal("admin", &admin, &[everything()]) + bob_entry + &carol_entry;
    let file = PrincipalsFile::new(&file_with(&reading("*")));
    let server = Partlog::start_with(&[("PARTLOG_AUTH_TOKENS_FILE", &file.path())]).await;
    let mut client = server.client().await;
    let stream = unique_stream("revoke");
    client
        .create_stream(as_principal(
            &admin,
            proto::CreateStreamRequest {
                stream: stream.clone(),
                partitions: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("create");
    let subscribe = |token: &str, group: &str| {
        as_principal(
            token,
            SubscribeRequest {
                stream: stream.clone(),
                group: group.into(),
                ..Default::default()
            },
        )
    };
    let mut bobs_tail = client
        .subscribe(subscribe(&bob, ""))
        .await
        .expect("bob subscribes")
        .into_inner();
    assert!(matches!(
        next_event(&mut bobs_tail).await,
        Ok(Some(proto::subscribe_response::Event::Assignment(_)))
    ));
    let mut carols_member = client
        .subscribe(subscribe(&carol, "g"))
        .await
        .expect("carol joins g")
        .into_inner();

    // An unrelated change: both stay.
    file.rewrite(&(file_with(&reading("*")) + "# reviewed\n"));
    server.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Bob is removed.
    file.rewrite(&file_with(""));
    server.hangup();
    let status = loop {
        match next_event(&mut bobs_tail).await {
            Ok(Some(proto::subscribe_response::Event::Record(r))) => {
                panic!("bob received {r:?} after his removal")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("bob's call ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CREDENTIALS_REVOKED", "{status:?}");
    // Published after the reload: bob never sees it (his call is over).
    let published = client
        .publish(as_principal(
            &admin,
            PublishRequest {
                stream: stream.clone(),
                records: vec![record("k", "after bob left")],
                ..Default::default()
            },
        ))
        .await
        .expect("admin publishes");
    assert!(published.into_inner().results[0].error.is_none());

    // Carol is still a member; her group permission narrows to "other".
    let narrowed = file_with("").replace("groups = [\"g\"]", "groups = [\"other\"]");
    file.rewrite(&narrowed);
    server.hangup();
    let status = loop {
        match next_event(&mut carols_member).await {
            Ok(_) => {}
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("group \"g\""), "{status:?}");
    assert!(
        server.log().contains("open call revoked"),
        "the audit log names it:\n{}",
        server.log()
    );
}

/// A PublishStream whose principal is removed ends UNAUTHENTICATED; a
/// batch sent after the reload is not written.
#[tokio::test]
async fn an_open_publish_stream_is_revoked_too() {
    let (admin, writer) = (new_token(), new_token());
    let both = principal("admin", &admin, &[everything()])
        + &principal("writer", &writer, &[grant(&["write"], &["*"], &[])]);
    let file = PrincipalsFile::new(&both);
    let server = Partlog::start_with(&[("PARTLOG_AUTH_TOKENS_FILE", &file.path())]).await;
    let mut client = server.client().await;
    let stream = unique_stream("revoke-pub");
    client
        .create_stream(as_principal(
            &admin,
            proto::CreateStreamRequest {
                stream: stream.clone(),
                partitions: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("create");
    let (batches, outgoing) = tokio::sync::mpsc::channel(4);
    let batch = |value: &str| proto::PublishStreamRequest {
        stream: stream.clone(),
        records: vec![record("k", value)],
        ..Default::default()
    };
    batches.send(batch("before")).await.unwrap();
    let mut answers = client
        .publish_stream(as_principal(
            &writer,
            tokio_stream::wrappers::ReceiverStream::new(outgoing),
        ))
        .await
        .expect("publish stream")
        .into_inner();
    let first = answers.message().await.expect("answer").expect("open");
    assert!(first.results[0].error.is_none());

    file.rewrite(&principal("admin", &admin, &[everything()]));
    server.hangup();
    let status = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .expect("the call ends within 10 s")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let _ = batches.send(batch("after")).await;

    let read = client
        .read(as_principal(
            &admin,
            proto::ReadRequest {
                stream: stream.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("read")
        .into_inner();
    let values: Vec<&[u8]> = read.records.iter().map(|r| r.value.as_ref()).collect();
    assert_eq!(values, [b"before".as_slice()]);
}

/// Removing a CA from `server.tls.client_ca_file` closes the open
/// connections whose client certificate it signed; clients of the CA that
/// stays keep theirs.
#[tokio::test]
async fn removing_a_client_ca_closes_its_open_connections() {
    let pki = TestPki::new("revoke-ca");
    let other = TestPki::new("revoke-other-ca");
    let server_cert = pki.server();
    let cas = pki.write("client-cas.pem", &(pki.ca_pem() + &other.ca_pem()));
    let settings = [
        (
            "PARTLOG_SERVER_TLS_CERT_FILE",
            server_cert.cert.to_str().unwrap(),
        ),
        (
            "PARTLOG_SERVER_TLS_KEY_FILE",
            server_cert.key.to_str().unwrap(),
        ),
        ("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", cas.to_str().unwrap()),
    ];
    let server = Partlog::start_tls(
        &settings,
        trusting(&pki).identity(pki.client("harness").identity()),
    )
    .await;
    let stream = unique_stream("revoke-ca");
    let channel = |client_pki: &TestPki| {
        let tls = trusting(&pki)
            .domain_name("localhost")
            .identity(client_pki.client("reader").identity());
        let endpoint = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .tls_config(tls)
            .unwrap();
        async move { endpoint.connect().await.expect("connect") }
    };
    let mut kept = proto::part_log_client::PartLogClient::new(channel(&pki).await);
    let mut removed = proto::part_log_client::PartLogClient::new(channel(&other).await);
    create_stream(&mut kept, &stream, 1).await;
    let mut tail = removed
        .subscribe(SubscribeRequest {
            stream: stream.clone(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    assert!(next_event(&mut tail).await.is_ok());

    // Only the first CA stays.
    std::fs::write(&cas, pki.ca_pem()).unwrap();
    server.hangup();
    let ended = tokio::time::timeout(Duration::from_secs(10), tail.message())
        .await
        .expect("the connection closes within 10 s");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "the removed CA's client got {ended:?}"
    );
    let describe = proto::DescribeStreamRequest {
        stream: stream.clone(),
    };
    kept.describe_stream(describe)
        .await
        .expect("the CA that stays keeps its connection");
}
