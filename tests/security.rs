//! TLS, mutual TLS, tokens and permissions of a real partlog against the
//! real broker, with certificates made for each test (rcgen).

mod common;

use common::{create_stream, record, trusting, unique_stream, Partlog, TestPki};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{self, PublishRecord};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The hex SHA-256 the principals file holds, computed here rather than
/// by partlog's own function.
fn token_sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token() -> String {
    format!("tok-{:032x}", rand::random::<u128>())
}

/// Principals and their tokens for one partlog.
#[derive(Clone)]
struct Tokens {
    admin: String,
    reader: String,
    orders: String,
    nobody: String,
}

impl Tokens {
    fn new() -> Tokens {
        Tokens {
            admin: new_token(),
            reader: new_token(),
            orders: new_token(),
            nobody: new_token(),
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.admin, &self.reader, &self.orders, &self.nobody]
    }

    /// The principals file: `ops` has no token and gets in with a client
    /// certificate naming it (when partlog is configured so).
    fn file(&self, with_ops: bool) -> String {
        let entry = |name: &str, token: &str, grants: &str| {
            format!(
                "[[principal]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n{grants}\n",
                token_sha256_hex(token)
            )
        };
        let everything = "[[principal.grant]]\npermissions = [\"admin\", \"write\", \"read\", \
                          \"group\"]\nstreams = [\"*\"]\ngroups = [\"*\"]\n";
        let mut file = entry("admin", &self.admin, everything);
        file += &entry(
            "reader",
            &self.reader,
            "[[principal.grant]]\npermissions = [\"read\"]\nstreams = [\"*\"]\n",
        );
        file += &entry(
            "orders",
            &self.orders,
            "[[principal.grant]]\npermissions = [\"read\", \"write\"]\nstreams = [\"orders-*\"]\n\
             [[principal.grant]]\npermissions = [\"group\"]\nstreams = [\"orders-*\"]\n\
             groups = [\"billing\"]\n",
        );
        file += &entry("nobody", &self.nobody, "");
        if with_ops {
            file += &format!("[[principal]]\nname = \"ops\"\n{everything}");
        }
        file
    }
}

/// A partlog with TLS (mutual when `mutual`) and tokens.
struct Secured {
    server: Partlog,
    pki: TestPki,
    tokens: Tokens,
    tokens_file: std::path::PathBuf,
}

impl Secured {
    async fn start(mutual: bool) -> Secured {
        let pki = TestPki::new("partlog test CA");
        let tokens = Tokens::new();
        let server_cert = pki.server();
        let tokens_file = pki.write("tokens.toml", &tokens.file(mutual));
        let (cert, key, ca) = (
            path(&server_cert.cert),
            path(&server_cert.key),
            path(&pki.ca_file()),
        );
        let tokens_path = path(&tokens_file);
        let mut settings = vec![
            ("PARTLOG_SERVER_TLS_CERT_FILE", cert.as_str()),
            ("PARTLOG_SERVER_TLS_KEY_FILE", key.as_str()),
            ("PARTLOG_AUTH_TOKENS_FILE", tokens_path.as_str()),
            // Everything partlog could log, for the secrets checks.
            ("PARTLOG_LOG", "debug"),
        ];
        let mut client_tls = trusting(&pki);
        if mutual {
            settings.push(("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", ca.as_str()));
            settings.push(("PARTLOG_AUTH_CLIENT_CERT_PRINCIPAL", "subject_cn"));
            client_tls = client_tls.identity(pki.client("ops").identity());
        }
        let server = Partlog::start_tls(&settings, client_tls).await;
        Secured {
            server,
            pki,
            tokens,
            tokens_file,
        }
    }

    /// A client over TLS trusting the test CA, with `identity`'s
    /// certificate (mutual TLS) if given.
    async fn client(&self, identity: Option<&str>) -> PartLogClient<Channel> {
        let mut tls = trusting(&self.pki).domain_name("localhost");
        if let Some(name) = identity {
            tls = tls.identity(self.pki.client(name).identity());
        }
        PartLogClient::new(connect(&self.server.url(), tls).await.expect("connect"))
    }

    /// Asserts that no token appears in partlog's log.
    fn assert_log_keeps_tokens(&self, more: &[&str]) {
        let log = self.server.log();
        for secret in self.tokens.all().iter().chain(more) {
            assert!(!log.contains(secret), "the log shows a token:\n{log}");
        }
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

async fn connect(url: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.to_owned())
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// `message` with `authorization: Bearer <token>` when a token is given.
fn with_token<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn describe(stream: &str) -> proto::DescribeStreamRequest {
    proto::DescribeStreamRequest {
        stream: stream.into(),
    }
}

fn publish(stream: &str) -> proto::PublishRequest {
    proto::PublishRequest {
        stream: stream.into(),
        records: vec![record("k", "v")],
        ..Default::default()
    }
}

fn read(stream: &str) -> proto::ReadRequest {
    proto::ReadRequest {
        stream: stream.into(),
        ..Default::default()
    }
}

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, says: &str) -> Status {
    let status = result.expect_err("the call succeeded");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "{:?} does not say {says:?}",
        status.message()
    );
    let reason = reason(&status);
    let fits = match code {
        Code::Unauthenticated => reason.starts_with("CREDENTIALS_"),
        Code::PermissionDenied => reason == "PERMISSION_DENIED",
        _ => true,
    };
    assert!(fits, "{reason} on {status:?}");
    status
}

/// The ErrorInfo reason of a status partlog answered.
fn reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "partlog");
    info.reason
}

/// Asserts that partlog refused a client below gRPC: connecting failed, or
/// the call failed in the transport (a TLS alert, the connection closed).
/// Any status partlog answered, an error included, means it served the
/// call; the stream asked about exists, so a served call succeeds.
async fn assert_refused_by_transport(
    connected: Result<Channel, tonic::transport::Error>,
    stream: &str,
    what: &str,
) {
    let Ok(channel) = connected else {
        return;
    };
    let status = PartLogClient::new(channel)
        .describe_stream(describe(stream))
        .await
        .map(drop)
        .expect_err(&format!("a client with {what} was served"));
    let transport = std::error::Error::source(&status)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    assert!(
        transport,
        "partlog answered a client with {what}: {status:?}"
    );
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_nothing_else() {
    let pki = TestPki::new("partlog test CA");
    let cert = pki.server();
    let (cert_file, key_file) = (path(&cert.cert), path(&cert.key));
    let server = Partlog::start_tls(
        &[
            ("PARTLOG_SERVER_TLS_CERT_FILE", &cert_file),
            ("PARTLOG_SERVER_TLS_KEY_FILE", &key_file),
        ],
        trusting(&pki),
    )
    .await;

    let channel = server.channel().await.expect("TLS with the test CA");
    let mut client = PartLogClient::new(channel);
    let stream = unique_stream("tls");
    create_stream(&mut client, &stream, 1).await;
    client.describe_stream(describe(&stream)).await.unwrap();

    // Plain text to a TLS listener: no call gets through.
    let plain = format!("http://{}", server.addr);
    let connected = Channel::from_shared(plain).unwrap().connect().await;
    assert_refused_by_transport(connected, &stream, "plain text").await;

    // A client that trusts another CA refuses partlog's certificate.
    let other = TestPki::new("another CA");
    let err = connect(&server.url(), trusting(&other).domain_name("localhost"))
        .await
        .expect_err("a certificate of an unknown CA was accepted");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    client
        .delete_stream(proto::DeleteStreamRequest { stream })
        .await
        .unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = TestPki::new("partlog test CA");
    let cert = pki.server();
    let (cert_file, key_file, ca) = (path(&cert.cert), path(&cert.key), path(&pki.ca_file()));
    let settings = [
        ("PARTLOG_SERVER_TLS_CERT_FILE", cert_file.as_str()),
        ("PARTLOG_SERVER_TLS_KEY_FILE", &key_file),
        ("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", &ca),
    ];
    let with_cert = trusting(&pki).identity(pki.client("app").identity());
    let server = Partlog::start_tls(&settings, with_cert).await;
    let tls = || trusting(&pki).domain_name("localhost");

    let mut client = PartLogClient::new(server.channel().await.unwrap());
    let stream = unique_stream("mtls");
    create_stream(&mut client, &stream, 1).await;

    // (TLS 1.3 checks the client's certificate after the client finished
    // its handshake: the call fails, not the connecting.)
    let other = TestPki::new("another CA");
    for (what, tls) in [
        ("no client certificate", tls()),
        (
            "a certificate of another CA",
            tls().identity(other.client("app").identity()),
        ),
    ] {
        let connected = connect(&server.url(), tls).await;
        assert_refused_by_transport(connected, &stream, what).await;
    }

    client
        .delete_stream(proto::DeleteStreamRequest { stream })
        .await
        .unwrap();
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_and_change_nothing() {
    let secured = Secured::start(false).await;
    let tokens = &secured.tokens;
    let mut client = secured.client(None).await;
    let stream = unique_stream("orders");
    let admin = Some(tokens.admin.as_str());

    // No token: UNAUTHENTICATED, and the stream was not created.
    let create = proto::CreateStreamRequest {
        stream: stream.clone(),
        partitions: 2,
        ..Default::default()
    };
    let missing = assert_status(
        client.create_stream(with_token(None, create.clone())).await,
        Code::Unauthenticated,
        "missing credentials: send `authorization: Bearer <token>`",
    );
    assert_eq!(reason(&missing), "CREDENTIALS_MISSING");
    assert_status(
        client
            .describe_stream(with_token(admin, describe(&stream)))
            .await,
        Code::NotFound,
        "does not exist",
    );

    // A wrong token, or another scheme: UNAUTHENTICATED, never echoed.
    let wrong = new_token();
    let status = assert_status(
        client
            .create_stream(with_token(Some(&wrong), create.clone()))
            .await,
        Code::Unauthenticated,
        "not valid",
    );
    assert!(!status.message().contains(&wrong));
    assert_eq!(reason(&status), "CREDENTIALS_INVALID");
    let mut basic = Request::new(describe(&stream));
    basic.metadata_mut().insert(
        "authorization",
        format!("Basic {}", tokens.admin).parse().unwrap(),
    );
    let status = assert_status(
        client.describe_stream(basic).await,
        Code::Unauthenticated,
        "Bearer",
    );
    assert!(!status.message().contains(&tokens.admin));

    // The right token works; a publish without one stores nothing.
    client
        .create_stream(with_token(admin, create))
        .await
        .unwrap();
    assert_status(
        client.publish(with_token(None, publish(&stream))).await,
        Code::Unauthenticated,
        "missing credentials",
    );
    for partition in 0..2 {
        let mut request = read(&stream);
        request.partition = partition;
        let records = client.read(with_token(admin, request)).await.unwrap();
        assert!(records.get_ref().records.is_empty(), "{records:?}");
    }

    // Health stays open for probes; reflection needs a principal.
    assert_eq!(
        secured.server.health("").await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let list = || {
        tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let channel = secured.server.channel().await.unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    assert_status(
        reflection
            .server_reflection_info(with_token(None, list()))
            .await,
        Code::Unauthenticated,
        "missing credentials",
    );
    let mut answers = reflection
        .server_reflection_info(with_token(Some(&tokens.nobody), list()))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());

    client
        .delete_stream(with_token(
            admin,
            proto::DeleteStreamRequest {
                stream: stream.clone(),
            },
        ))
        .await
        .unwrap();
    secured.assert_log_keeps_tokens(&[&wrong]);
}

#[tokio::test]
async fn permissions_limit_each_principal_to_its_streams_and_groups() {
    let secured = Secured::start(false).await;
    let tokens = &secured.tokens;
    let mut client = secured.client(None).await;
    let admin = Some(tokens.admin.as_str());
    let reader = Some(tokens.reader.as_str());
    let orders_principal = Some(tokens.orders.as_str());
    let orders = unique_stream("orders");
    let payments = unique_stream("payments");
    for stream in [&orders, &payments] {
        let create = proto::CreateStreamRequest {
            stream: stream.clone(),
            partitions: 1,
            ..Default::default()
        };
        client
            .create_stream(with_token(admin, create))
            .await
            .unwrap();
    }

    // ListStreams lists what each may use: everything for the admin and the
    // reader, the orders-* streams for their principal, nothing for nobody.
    let nobody = Some(tokens.nobody.as_str());
    for (token, sees_orders, sees_payments) in [
        (admin, true, true),
        (reader, true, true),
        (orders_principal, true, false),
        (nobody, false, false),
    ] {
        let mut listed = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = proto::ListStreamsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            };
            let page = client
                .list_streams(with_token(token, request))
                .await
                .expect("ListStreams")
                .into_inner();
            listed.extend(page.streams.into_iter().map(|s| s.stream));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(
            listed.contains(&orders),
            sees_orders,
            "{token:?}: {listed:?}"
        );
        assert_eq!(
            listed.contains(&payments),
            sees_payments,
            "{token:?}: {listed:?}"
        );
        if token == orders_principal {
            assert!(
                listed.iter().all(|s| s.starts_with("orders-")),
                "{listed:?}"
            );
        }
    }

    // A reader reads, and can neither publish nor delete.
    client
        .read(with_token(reader, read(&orders)))
        .await
        .unwrap();
    assert_status(
        client.publish(with_token(reader, publish(&orders))).await,
        Code::PermissionDenied,
        &format!("principal \"reader\" lacks permission write on stream {orders:?}"),
    );
    let delete = |stream: &str| proto::DeleteStreamRequest {
        stream: stream.into(),
    };
    assert_status(
        client
            .delete_stream(with_token(reader, delete(&orders)))
            .await,
        Code::PermissionDenied,
        "lacks permission admin",
    );

    // `orders` may use orders-* and its group billing, nothing else.
    client
        .publish(with_token(orders_principal, publish(&orders)))
        .await
        .unwrap();
    client
        .describe_stream(with_token(orders_principal, describe(&orders)))
        .await
        .unwrap();
    let on_payments = format!("on stream {payments:?}");
    assert_status(
        client
            .publish(with_token(orders_principal, publish(&payments)))
            .await,
        Code::PermissionDenied,
        &on_payments,
    );
    assert_status(
        client
            .read(with_token(orders_principal, read(&payments)))
            .await,
        Code::PermissionDenied,
        &on_payments,
    );
    assert_status(
        client
            .describe_stream(with_token(orders_principal, describe(&payments)))
            .await,
        Code::PermissionDenied,
        &on_payments,
    );
    assert_status(
        client
            .delete_stream(with_token(orders_principal, delete(&payments)))
            .await,
        Code::PermissionDenied,
        &on_payments,
    );
    let subscribe = |group: &str| proto::SubscribeRequest {
        stream: orders.clone(),
        group: group.into(),
        ..Default::default()
    };
    client
        .subscribe(with_token(orders_principal, subscribe("billing")))
        .await
        .unwrap();
    assert_status(
        client
            .subscribe(with_token(orders_principal, subscribe("audit")))
            .await,
        Code::PermissionDenied,
        &format!("lacks permission group on group \"audit\" of stream {orders:?}"),
    );

    // PublishStream checks every batch: the one for payments ends the call.
    let batches = tokio_stream::iter([
        proto::PublishStreamRequest {
            stream: orders.clone(),
            records: vec![record("k", "first")],
            ..Default::default()
        },
        proto::PublishStreamRequest {
            stream: payments.clone(),
            records: vec![record("k", "forbidden")],
            ..Default::default()
        },
    ]);
    let mut answers = client
        .publish_stream(with_token(orders_principal, batches))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert!(first.results[0].error.is_none(), "{first:?}");
    assert_status(
        answers.message().await,
        Code::PermissionDenied,
        &on_payments,
    );

    // payments is untouched; orders holds what was allowed.
    let stored = |stream: &str| {
        let mut client = client.clone();
        let request = with_token(admin, read(stream));
        async move { client.read(request).await.unwrap().into_inner().records }
    };
    assert!(stored(&payments).await.is_empty());
    let values: Vec<_> = stored(&orders).await.into_iter().map(|r| r.value).collect();
    assert_eq!(values, [b"v".to_vec(), b"first".to_vec()]);

    for stream in [&orders, &payments] {
        client
            .delete_stream(with_token(admin, delete(stream)))
            .await
            .unwrap();
    }
    secured.assert_log_keeps_tokens(&[]);
}

/// Every RPC of partlog.v1.PartLog, called by a principal without grants.
/// The list must name every RPC of the proto, so that a new RPC without an
/// authorization check cannot go unnoticed.
#[tokio::test]
async fn every_rpc_checks_permissions() {
    use prost::Message;
    let secured = Secured::start(false).await;
    let mut client = secured.client(None).await;
    let nobody = Some(secured.tokens.nobody.as_str());
    let stream = "anything".to_owned();
    let records: Vec<PublishRecord> = vec![record("k", "v")];

    let mut checked = Vec::new();
    let mut denied = |rpc: &str, result: Result<(), Status>| {
        checked.push(rpc.to_owned());
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
        assert!(status.message().contains("\"nobody\""), "{rpc}: {status:?}");
    };
    let create = proto::CreateStreamRequest {
        stream: stream.clone(),
        partitions: 1,
        ..Default::default()
    };
    denied(
        "CreateStream",
        client
            .create_stream(with_token(nobody, create))
            .await
            .map(drop),
    );
    let delete = proto::DeleteStreamRequest {
        stream: stream.clone(),
    };
    denied(
        "DeleteStream",
        client
            .delete_stream(with_token(nobody, delete))
            .await
            .map(drop),
    );
    let resize = proto::ResizeStreamRequest {
        stream: stream.clone(),
        partitions: 2,
    };
    denied(
        "ResizeStream",
        client
            .resize_stream(with_token(nobody, resize))
            .await
            .map(drop),
    );
    denied(
        "DescribeStream",
        client
            .describe_stream(with_token(nobody, describe(&stream)))
            .await
            .map(drop),
    );
    denied(
        "Publish",
        client
            .publish(with_token(nobody, publish(&stream)))
            .await
            .map(drop),
    );
    let batch = proto::PublishStreamRequest {
        stream: stream.clone(),
        records,
        ..Default::default()
    };
    let answer = match client
        .publish_stream(with_token(nobody, tokio_stream::iter([batch])))
        .await
    {
        Ok(answers) => answers.into_inner().message().await.map(drop),
        Err(status) => Err(status),
    };
    denied("PublishStream", answer);
    denied(
        "Read",
        client
            .read(with_token(nobody, read(&stream)))
            .await
            .map(drop),
    );
    let subscribe = proto::SubscribeRequest {
        stream: stream.clone(),
        ..Default::default()
    };
    denied(
        "Subscribe",
        client
            .subscribe(with_token(nobody, subscribe))
            .await
            .map(drop),
    );
    let consume = proto::ConsumeRequest {
        open: Some(proto::ConsumeOpen {
            stream: stream.clone(),
            ..Default::default()
        }),
        credit_records: 1,
        ..Default::default()
    };
    let answer = match client
        .consume(with_token(nobody, tokio_stream::iter([consume])))
        .await
    {
        Ok(answers) => answers.into_inner().message().await.map(drop),
        Err(status) => Err(status),
    };
    denied("Consume", answer);
    let commit = proto::CommitRequest {
        stream: stream.clone(),
        group: "g".into(),
        offsets: [(0, 0)].into(),
    };
    denied(
        "Commit",
        client.commit(with_token(nobody, commit)).await.map(drop),
    );
    let reset = proto::ResetOffsetsRequest {
        stream: stream.clone(),
        group: "g".into(),
        ..Default::default()
    };
    denied(
        "ResetOffsets",
        client
            .reset_offsets(with_token(nobody, reset))
            .await
            .map(drop),
    );
    let offsets = proto::GetOffsetsRequest {
        stream: stream.clone(),
        group: "g".into(),
    };
    denied(
        "GetOffsets",
        client
            .get_offsets(with_token(nobody, offsets))
            .await
            .map(drop),
    );
    let members = proto::DescribeGroupRequest {
        stream: stream.clone(),
        group: "g".into(),
    };
    denied(
        "DescribeGroup",
        client
            .describe_group(with_token(nobody, members))
            .await
            .map(drop),
    );
    let groups = proto::ListGroupsRequest {
        stream: stream.clone(),
    };
    denied(
        "ListGroups",
        client
            .list_groups(with_token(nobody, groups))
            .await
            .map(drop),
    );
    // ListStreams needs no permission: its answer holds only what the
    // caller may use (see permissions_limit_each_principal_to_its_streams_and_groups).
    let listing = proto::ListStreamsRequest::default();
    let listed = client
        .list_streams(with_token(nobody, listing))
        .await
        .expect("ListStreams answers")
        .into_inner();
    assert!(listed.streams.is_empty(), "{listed:?}");
    checked.push("ListStreams".to_owned());

    let descriptors = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs: Vec<String> = descriptors
        .file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "PartLog")
        .flat_map(|s| &s.method)
        .map(|m| m.name().to_owned())
        .collect();
    rpcs.sort();
    checked.sort();
    assert_eq!(checked, rpcs, "an RPC of the proto is not checked here");
}

#[tokio::test]
async fn client_certificates_name_principals_and_tokens_win() {
    let secured = Secured::start(true).await;
    let stream = unique_stream("ops");

    // CN=ops, no token: the principal ops (admin on everything).
    let mut ops = secured.client(Some("ops")).await;
    let create = proto::CreateStreamRequest {
        stream: stream.clone(),
        partitions: 1,
        ..Default::default()
    };
    ops.create_stream(with_token(None, create)).await.unwrap();

    // CN=stranger names nobody of the file.
    let mut stranger = secured.client(Some("stranger")).await;
    assert_status(
        stranger
            .describe_stream(with_token(None, describe(&stream)))
            .await,
        Code::Unauthenticated,
        "subject common name \"stranger\" is not a principal",
    );
    // With a token, the token decides.
    let reader = Some(secured.tokens.reader.as_str());
    stranger
        .describe_stream(with_token(reader, describe(&stream)))
        .await
        .unwrap();
    assert_status(
        ops.publish(with_token(reader, publish(&stream))).await,
        Code::PermissionDenied,
        "\"reader\" lacks permission write",
    );

    ops.delete_stream(with_token(None, proto::DeleteStreamRequest { stream }))
        .await
        .unwrap();
    secured.assert_log_keeps_tokens(&[]);
}

/// `partlog mirror` to a target that asks for client certificates: its own
/// CA and certificate (CN=ops, a principal of the target) get it in; without
/// the certificate the target refuses it.
#[tokio::test]
async fn a_mirror_reaches_a_mutual_tls_target_with_a_certificate_of_its_own() {
    let source = Partlog::start().await;
    let target = Secured::start(true).await;
    let ops = target.pki.client("ops");
    let stream = unique_stream("mirrored");
    let mut source_client = source.client().await;
    create_stream(&mut source_client, &stream, 1).await;
    let records: Vec<PublishRecord> = (0..10).map(|i| record("k", format!("{i}"))).collect();
    source_client
        .publish(proto::PublishRequest {
            stream: stream.clone(),
            records,
            ..Default::default()
        })
        .await
        .unwrap();
    // Both partlogs use the same broker: the copy needs a name of its own.
    let copy = unique_stream("mirror-copy");
    let mut target_client = target.client(Some("ops")).await;
    let create = proto::CreateStreamRequest {
        stream: copy.clone(),
        partitions: 2,
        ..Default::default()
    };
    target_client
        .create_stream(with_token(None, create))
        .await
        .unwrap();

    let (ca, cert, key) = (path(&target.pki.ca_file()), path(&ops.cert), path(&ops.key));
    let target_url = format!("https://localhost:{}", port(&target.server));
    let mirror = |certificate: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_partlog"));
        command
            .args(["--server", &source.url(), "mirror", &stream])
            .args(["--to", &target_url, "--to-stream", &copy, "--to-ca", &ca])
            .args(["--group", "copy"])
            .arg("--until-caught-up")
            .env_remove("PARTLOG_TOKEN")
            .env_remove("PARTLOG_TOKEN_FILE");
        if certificate {
            command.args(["--to-cert", &cert, "--to-key", &key]);
        }
        command.output().expect("run partlog mirror")
    };
    let refused = mirror(false);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let copied = mirror(true);
    let err = String::from_utf8_lossy(&copied.stderr);
    assert_eq!(copied.status.code(), Some(0), "{err}");
    assert!(err.contains("10 records copied"), "{err}");
    let mut stored = 0;
    for partition in 0..2 {
        let request = proto::ReadRequest {
            stream: copy.clone(),
            partition,
            ..Default::default()
        };
        stored += target_client
            .read(with_token(None, request))
            .await
            .unwrap()
            .into_inner()
            .records
            .len();
    }
    assert_eq!(stored, 10);
}

#[tokio::test]
async fn the_cli_calls_a_secured_partlog_with_ca_certificate_and_token() {
    let secured = Secured::start(true).await;
    let client = secured.pki.client("stranger");
    let token_file = secured
        .pki
        .write("token", &format!("{}\n", secured.tokens.admin));
    let stream = unique_stream("orders");
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_partlog"));
        command
            .args(args)
            .args([
                "--server",
                &format!("https://localhost:{}", port(&secured.server)),
            ])
            .args(["--ca", &path(&secured.pki.ca_file())])
            .args(["--cert", &path(&client.cert), "--key", &path(&client.key)])
            .env_remove("PARTLOG_TOKEN")
            .env_remove("PARTLOG_TOKEN_FILE");
        if let Some(token) = token {
            command.env("PARTLOG_TOKEN", token);
        }
        let output = command.output().expect("run the partlog CLI");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let token_file = path(&token_file);
    let (code, out, err) = cli(
        &[
            "stream",
            "create",
            &stream,
            "--partitions",
            "1",
            "--token-file",
            &token_file,
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("{stream}-0")), "{out}");

    // CN=stranger without a token.
    let (code, _, err) = cli(&["stream", "describe", &stream], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with("error: UNAUTHENTICATED: "), "{err}");

    // PARTLOG_TOKEN: a reader may describe but not delete.
    let (code, out, err) = cli(
        &["stream", "describe", &stream],
        Some(&secured.tokens.reader),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = cli(&["stream", "delete", &stream], Some(&secured.tokens.reader));
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: PERMISSION_DENIED: "), "{err}");
    assert!(!err.contains(&secured.tokens.reader), "{err}");

    let (code, out, err) = cli(&["stream", "delete", &stream], Some(&secured.tokens.admin));
    assert_eq!(code, Some(0), "{out}{err}");
}

fn port(server: &Partlog) -> &str {
    server.addr.rsplit_once(':').unwrap().1
}

#[test]
fn broker_secrets_stay_out_of_the_log() {
    let secret = format!("wrong-s3cret-{:016x}", rand::random::<u64>());
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{secret}\n")).unwrap();
    let password_file = path(&password_file);
    let cases: [&[(&str, &str)]; 2] = [
        &[("PARTLOG_BROKER_PASSWORD_FILE", &password_file)],
        &[("PARTLOG_BROKER_PASSWORD", &secret)],
    ];
    for settings in cases {
        // Everything any crate logs, the broker client library's included.
        let settings = [settings, &[("PARTLOG_LOG", "trace")]].concat();
        let (status, log) = Partlog::run_to_exit(&settings);
        assert!(
            !status.success(),
            "partlog ran with a wrong password:\n{log}"
        );
        assert!(
            log.contains(
                "the broker refused user \"guest\": check broker.user and broker.password"
            ),
            "{log}"
        );
        assert!(!log.contains(&secret), "the log shows the password:\n{log}");
    }
}

#[test]
fn a_bad_certificate_file_stops_start_up_naming_it() {
    let pki = TestPki::new("partlog test CA");
    let cert = pki.server();
    let key = path(&cert.key);
    let (status, log) = Partlog::run_to_exit(&[
        ("PARTLOG_SERVER_TLS_CERT_FILE", "/no/such/cert.pem"),
        ("PARTLOG_SERVER_TLS_KEY_FILE", &key),
    ]);
    assert!(!status.success());
    assert!(
        log.contains("server.tls.cert_file /no/such/cert.pem: cannot read it"),
        "{log}"
    );
    let key_pem = std::fs::read_to_string(&cert.key).unwrap();
    let (status, log) = Partlog::run_to_exit(&[
        ("PARTLOG_SERVER_TLS_CERT_FILE", &key),
        ("PARTLOG_SERVER_TLS_KEY_FILE", &key),
    ]);
    assert!(!status.success());
    assert!(log.contains("holds no PEM certificate"), "{log}");
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "the log quotes the key:\n{log}");
    }
}

#[tokio::test]
async fn certificates_are_replaced_on_sighup_without_dropping_connections() {
    let old_ca = TestPki::new("old CA");
    let old = old_ca.server();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&old.cert, &cert_file).unwrap();
    std::fs::copy(&old.key, &key_file).unwrap();
    let (cert, key) = (path(&cert_file), path(&key_file));
    let server = Partlog::start_tls(
        &[
            ("PARTLOG_SERVER_TLS_CERT_FILE", &cert),
            ("PARTLOG_SERVER_TLS_KEY_FILE", &key),
        ],
        trusting(&old_ca),
    )
    .await;
    let mut before = PartLogClient::new(server.channel().await.unwrap());
    let stream = unique_stream("reload");
    let ask = |client: &mut PartLogClient<Channel>| {
        let mut client = client.clone();
        let request = describe(&stream);
        async move { client.describe_stream(request).await.map(drop) }
    };
    assert_eq!(ask(&mut before).await.unwrap_err().code(), Code::NotFound);

    let new_ca = TestPki::new("new CA");
    let new = new_ca.server();
    std::fs::copy(&new.key, &key_file).unwrap();
    std::fs::copy(&new.cert, &cert_file).unwrap();
    server.hangup();

    // New connections get the new certificate (at once after SIGHUP, or
    // at the latest when the file watcher sees the change).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut after = loop {
        let tls = trusting(&new_ca).domain_name("localhost");
        if let Ok(channel) = connect(&server.url(), tls).await {
            break PartLogClient::new(channel);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ask(&mut after).await.unwrap_err().code(), Code::NotFound);
    // The connection made before keeps working.
    assert_eq!(ask(&mut before).await.unwrap_err().code(), Code::NotFound);
    assert!(
        server
            .log()
            .contains("reloaded the server TLS certificates"),
        "{}",
        server.log()
    );
}

/// Replaces `file` with `content` in one rename (partlog never reads half a
/// file); with `keep_modified`, the new version has the previous one's
/// modification time and, the content being as long, its size: partlog's
/// file watcher cannot see the change, so only SIGHUP can load it.
fn replace(file: &std::path::Path, content: &str, keep_modified: bool) {
    let before = std::fs::metadata(file).unwrap();
    let next = file.with_extension("next");
    std::fs::write(&next, content).unwrap();
    if keep_modified {
        assert_eq!(content.len() as u64, before.len(), "a change of size shows");
        let written = std::fs::File::options().write(true).open(&next).unwrap();
        written.set_modified(before.modified().unwrap()).unwrap();
    }
    std::fs::rename(&next, file).unwrap();
}

/// The principals file is read again on SIGHUP and when it changes: from
/// then on a token taken out of it is UNAUTHENTICATED and the token that
/// replaced it works. (Calls that are open keep their principal.)
#[tokio::test]
async fn the_principals_file_is_reloaded_on_sighup_and_when_it_changes() {
    let secured = Secured::start(false).await;
    let mut client = secured.client(None).await;
    let stream = unique_stream("principals");
    let admin = Some(secured.tokens.admin.as_str());
    let create = proto::CreateStreamRequest {
        stream: stream.clone(),
        partitions: 1,
        ..Default::default()
    };
    client
        .create_stream(with_token(admin, create))
        .await
        .unwrap();
    // The reader describes the stream: a call that succeeds only for a
    // principal partlog knows.
    let describe_as = |token: &str| {
        let mut client = client.clone();
        let request = with_token(Some(token), describe(&stream));
        async move { client.describe_stream(request).await.map(drop) }
    };
    let until_it_works = async |token: &str, within: std::time::Duration| {
        let deadline = std::time::Instant::now() + within;
        while let Err(status) = describe_as(token).await {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(
                std::time::Instant::now() < deadline,
                "the new token was refused for {within:?}:\n{}",
                secured.server.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let first = secured.tokens.clone();
    describe_as(&first.reader).await.unwrap();

    // SIGHUP: the reader's token replaced where the watcher cannot see it.
    let mut second = first.clone();
    second.reader = new_token();
    replace(&secured.tokens_file, &second.file(false), true);
    describe_as(&first.reader).await.unwrap();
    secured.server.hangup();
    until_it_works(&second.reader, std::time::Duration::from_secs(10)).await;
    assert_status(
        describe_as(&first.reader).await,
        Code::Unauthenticated,
        "not valid",
    );

    // A change of the file, no signal: the watcher loads it.
    let mut third = second.clone();
    third.reader = new_token();
    replace(&secured.tokens_file, &third.file(false), false);
    until_it_works(&third.reader, std::time::Duration::from_secs(15)).await;
    assert_status(
        describe_as(&second.reader).await,
        Code::Unauthenticated,
        "not valid",
    );

    let log = secured.server.log();
    assert!(log.contains("reloaded the principals file"), "{log}");
    client
        .delete_stream(with_token(admin, proto::DeleteStreamRequest { stream }))
        .await
        .unwrap();
    secured.assert_log_keeps_tokens(&[&second.reader, &third.reader]);
}
