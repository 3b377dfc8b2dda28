//! A table of bad requests over real gRPC, each with the status code it must
//! get, the `google.rpc` details a program acts on (the ErrorInfo reason, the
//! BadRequest field, RetryInfo when a retry helps); the service stays
//! healthy and usable afterwards.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use common::{create_stream, publish_ok, record, unique_stream, Partlog};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::start_position::{self, Position};
use partlog::proto::*;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

type Call = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

fn create(c: &PartLogClient<Channel>, stream: &str, partitions: u32) -> Call {
    create_with(
        c,
        CreateStreamRequest {
            stream: stream.into(),
            partitions,
            ..Default::default()
        },
    )
}

fn create_with(c: &PartLogClient<Channel>, request: CreateStreamRequest) -> Call {
    let mut c = c.clone();
    Box::pin(async move { c.create_stream(request).await.map(drop) })
}

fn publish(c: &PartLogClient<Channel>, stream: &str, records: Vec<PublishRecord>) -> Call {
    let mut c = c.clone();
    let request = PublishRequest {
        stream: stream.into(),
        records,
        ..Default::default()
    };
    Box::pin(async move { c.publish(request).await.map(drop) })
}

fn publish_as(
    c: &PartLogClient<Channel>,
    stream: &str,
    producer_id: &str,
    records: Vec<PublishRecord>,
) -> Call {
    let mut c = c.clone();
    let request = PublishRequest {
        stream: stream.into(),
        records,
        producer_id: producer_id.into(),
        ..Default::default()
    };
    Box::pin(async move { c.publish(request).await.map(drop) })
}

fn read(c: &PartLogClient<Channel>, request: ReadRequest) -> Call {
    let mut c = c.clone();
    Box::pin(async move { c.read(request).await.map(drop) })
}

fn subscribe(c: &PartLogClient<Channel>, request: SubscribeRequest) -> Call {
    let mut c = c.clone();
    Box::pin(async move { c.subscribe(request).await.map(drop) })
}

fn subscribe_to(stream: &str) -> SubscribeRequest {
    SubscribeRequest {
        stream: stream.into(),
        ..Default::default()
    }
}

fn committed() -> Option<StartPosition> {
    Some(StartPosition {
        position: Some(Position::Committed(start_position::Committed {})),
    })
}

fn commit(c: &PartLogClient<Channel>, request: CommitRequest) -> Call {
    let mut c = c.clone();
    Box::pin(async move { c.commit(request).await.map(drop) })
}

fn reset(c: &PartLogClient<Channel>, request: ResetOffsetsRequest) -> Call {
    let mut c = c.clone();
    Box::pin(async move { c.reset_offsets(request).await.map(drop) })
}

fn read_at(stream: &str, partition: u32) -> ReadRequest {
    ReadRequest {
        stream: stream.into(),
        partition,
        offset: 0,
        max_records: 10,
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_requests_get_precise_status_codes() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("bad");
    create_stream(&mut client, &stream, 3).await;
    let missing = unique_stream("missing");
    let c = &client;
    let mib = 1024 * 1024;

    let cases: Vec<(&str, Code, Call)> = vec![
        (
            "create: empty name",
            Code::InvalidArgument,
            create(c, "", 1),
        ),
        (
            "create: reserved amq. prefix",
            Code::InvalidArgument,
            create(c, "amq.orders", 1),
        ),
        (
            "create: control character",
            Code::InvalidArgument,
            create(c, "a\u{7}b", 1),
        ),
        (
            "create: name too long",
            Code::InvalidArgument,
            create(c, &"n".repeat(252), 1),
        ),
        (
            "create: zero partitions",
            Code::InvalidArgument,
            create(c, &unique_stream("z"), 0),
        ),
        (
            "create: 257 partitions",
            Code::InvalidArgument,
            create(c, &unique_stream("z"), 257),
        ),
        (
            "create: negative max_age",
            Code::InvalidArgument,
            create_with(
                c,
                CreateStreamRequest {
                    stream: unique_stream("z"),
                    partitions: 1,
                    retention: Some(Retention {
                        max_age: Some(prost_types::Duration {
                            seconds: -5,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    replicas: None,
                    ..Default::default()
                },
            ),
        ),
        (
            "create: sub-second max_age",
            Code::InvalidArgument,
            create_with(
                c,
                CreateStreamRequest {
                    stream: unique_stream("z"),
                    partitions: 1,
                    retention: Some(Retention {
                        max_age: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 5,
                        }),
                        ..Default::default()
                    }),
                    replicas: None,
                    ..Default::default()
                },
            ),
        ),
        (
            "create: zero replicas",
            Code::InvalidArgument,
            create_with(
                c,
                CreateStreamRequest {
                    stream: unique_stream("z"),
                    partitions: 1,
                    retention: None,
                    replicas: Some(0),
                    ..Default::default()
                },
            ),
        ),
        (
            "create: a Bloom filter of 8 bytes",
            Code::InvalidArgument,
            create_with(
                c,
                CreateStreamRequest {
                    stream: unique_stream("z"),
                    partitions: 1,
                    filter_size_bytes: Some(8),
                    ..Default::default()
                },
            ),
        ),
        (
            "create: a Bloom filter of 256 bytes",
            Code::InvalidArgument,
            create_with(
                c,
                CreateStreamRequest {
                    stream: unique_stream("z"),
                    partitions: 1,
                    filter_size_bytes: Some(256),
                    ..Default::default()
                },
            ),
        ),
        ("create: exists", Code::AlreadyExists, create(c, &stream, 3)),
        (
            "create: exists, other partition count",
            Code::AlreadyExists,
            create(c, &stream, 5),
        ),
        ("describe: unknown", Code::NotFound, {
            let mut c = c.clone();
            let missing = missing.clone();
            Box::pin(async move {
                c.describe_stream(DescribeStreamRequest { stream: missing })
                    .await
                    .map(drop)
            })
        }),
        ("describe: empty name", Code::InvalidArgument, {
            let mut c = c.clone();
            Box::pin(async move {
                c.describe_stream(DescribeStreamRequest {
                    stream: String::new(),
                })
                .await
                .map(drop)
            })
        }),
        ("delete: unknown", Code::NotFound, {
            let mut c = c.clone();
            let missing = missing.clone();
            Box::pin(async move {
                c.delete_stream(DeleteStreamRequest { stream: missing })
                    .await
                    .map(drop)
            })
        }),
        (
            "publish: unknown stream",
            Code::NotFound,
            publish(c, &missing, vec![record("k", "v")]),
        ),
        (
            "publish: bad stream name",
            Code::InvalidArgument,
            publish(c, "amq.x", vec![record("k", "v")]),
        ),
        (
            "publish: no records",
            Code::InvalidArgument,
            publish(c, &stream, vec![]),
        ),
        (
            "publish: value over 1 MiB",
            Code::InvalidArgument,
            publish(
                c,
                &stream,
                vec![record("k", "v"), record("k", vec![0u8; mib + 1])],
            ),
        ),
        (
            "publish: 10 001 records",
            Code::ResourceExhausted,
            publish(c, &stream, (0..10_001).map(|_| record("", "v")).collect()),
        ),
        (
            "publish: batch over 16 MiB",
            Code::ResourceExhausted,
            publish(
                c,
                &stream,
                (0..17).map(|_| record("", vec![1u8; mib])).collect(),
            ),
        ),
        (
            "publish: reserved header name",
            Code::InvalidArgument,
            publish(
                c,
                &stream,
                vec![PublishRecord {
                    key: "k".into(),
                    value: b"v".to_vec().into(),
                    headers: HashMap::from([("partlog.key".to_string(), "x".to_string())]),
                    ..Default::default()
                }],
            ),
        ),
        (
            "publish: empty header name",
            Code::InvalidArgument,
            publish(
                c,
                &stream,
                vec![PublishRecord {
                    key: "k".into(),
                    value: b"v".to_vec().into(),
                    headers: HashMap::from([(String::new(), "x".to_string())]),
                    ..Default::default()
                }],
            ),
        ),
        (
            "publish: oversized key",
            Code::InvalidArgument,
            publish(c, &stream, vec![record(&"k".repeat(40_000), "v")]),
        ),
        (
            "read: partition out of range",
            Code::InvalidArgument,
            read(c, read_at(&stream, 3)),
        ),
        (
            "read: huge partition",
            Code::InvalidArgument,
            read(c, read_at(&stream, u32::MAX)),
        ),
        (
            "read: unknown stream",
            Code::NotFound,
            read(c, read_at(&missing, 0)),
        ),
        (
            "read: empty stream name",
            Code::InvalidArgument,
            read(c, read_at("", 0)),
        ),
        (
            "read: too many records",
            Code::InvalidArgument,
            read(
                c,
                ReadRequest {
                    max_records: 10_001,
                    ..read_at(&stream, 0)
                },
            ),
        ),
        (
            "read: too many bytes",
            Code::InvalidArgument,
            read(
                c,
                ReadRequest {
                    max_bytes: 4 * 1024 * 1024 + 1,
                    ..read_at(&stream, 0)
                },
            ),
        ),
        (
            "read: wait too long",
            Code::InvalidArgument,
            read(
                c,
                ReadRequest {
                    max_wait: Some(prost_types::Duration {
                        seconds: 61,
                        nanos: 0,
                    }),
                    ..read_at(&stream, 0)
                },
            ),
        ),
        (
            "read: negative wait",
            Code::InvalidArgument,
            read(
                c,
                ReadRequest {
                    max_wait: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..read_at(&stream, 0)
                },
            ),
        ),
        (
            "subscribe: COMMITTED without a group",
            Code::InvalidArgument,
            subscribe(
                c,
                SubscribeRequest {
                    start: committed(),
                    ..subscribe_to(&stream)
                },
            ),
        ),
        (
            "subscribe: unknown stream",
            Code::NotFound,
            subscribe(c, subscribe_to(&missing)),
        ),
        (
            "subscribe: partition out of range",
            Code::InvalidArgument,
            subscribe(
                c,
                SubscribeRequest {
                    partitions: vec![0, 3],
                    ..subscribe_to(&stream)
                },
            ),
        ),
        (
            "subscribe: partition twice",
            Code::InvalidArgument,
            subscribe(
                c,
                SubscribeRequest {
                    partitions: vec![1, 1],
                    ..subscribe_to(&stream)
                },
            ),
        ),
        (
            "subscribe: window too large",
            Code::InvalidArgument,
            subscribe(
                c,
                SubscribeRequest {
                    window: 10_001,
                    ..subscribe_to(&stream)
                },
            ),
        ),
        (
            "subscribe: control character in group",
            Code::InvalidArgument,
            subscribe(
                c,
                SubscribeRequest {
                    group: "g\u{0}".into(),
                    ..subscribe_to(&stream)
                },
            ),
        ),
        (
            "subscribe: start without a position",
            Code::InvalidArgument,
            subscribe(
                c,
                SubscribeRequest {
                    start: Some(StartPosition { position: None }),
                    ..subscribe_to(&stream)
                },
            ),
        ),
        (
            "commit: no offsets",
            Code::InvalidArgument,
            commit(
                c,
                CommitRequest {
                    group: "g".into(),
                    stream: stream.clone(),
                    offsets: HashMap::new(),
                },
            ),
        ),
        (
            "commit: empty group",
            Code::InvalidArgument,
            commit(
                c,
                CommitRequest {
                    group: String::new(),
                    stream: stream.clone(),
                    offsets: HashMap::from([(0, 1)]),
                },
            ),
        ),
        (
            "commit: partition out of range",
            Code::InvalidArgument,
            commit(
                c,
                CommitRequest {
                    group: "g".into(),
                    stream: stream.clone(),
                    offsets: HashMap::from([(3, 1)]),
                },
            ),
        ),
        (
            "commit: partition without records",
            Code::FailedPrecondition,
            commit(
                c,
                CommitRequest {
                    group: "g".into(),
                    stream: stream.clone(),
                    offsets: HashMap::from([(0, 0)]),
                },
            ),
        ),
        (
            "commit: unknown stream",
            Code::NotFound,
            commit(
                c,
                CommitRequest {
                    group: "g".into(),
                    stream: missing.clone(),
                    offsets: HashMap::from([(0, 1)]),
                },
            ),
        ),
        ("get offsets: unknown stream", Code::NotFound, {
            let mut c = c.clone();
            let missing = missing.clone();
            Box::pin(async move {
                c.get_offsets(GetOffsetsRequest {
                    group: "g".into(),
                    stream: missing,
                })
                .await
                .map(drop)
            })
        }),
        ("get offsets: empty group", Code::InvalidArgument, {
            let mut c = c.clone();
            let stream = stream.clone();
            Box::pin(async move {
                c.get_offsets(GetOffsetsRequest {
                    group: String::new(),
                    stream,
                })
                .await
                .map(drop)
            })
        }),
        ("describe group: unknown stream", Code::NotFound, {
            let mut c = c.clone();
            let missing = missing.clone();
            Box::pin(async move {
                c.describe_group(DescribeGroupRequest {
                    group: "g".into(),
                    stream: missing,
                })
                .await
                .map(drop)
            })
        }),
        (
            "describe group: control character in group",
            Code::InvalidArgument,
            {
                let mut c = c.clone();
                let stream = stream.clone();
                Box::pin(async move {
                    c.describe_group(DescribeGroupRequest {
                        group: "a\u{1}b".into(),
                        stream,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        (
            "reset: to NEXT",
            Code::InvalidArgument,
            reset(
                c,
                ResetOffsetsRequest {
                    group: "g".into(),
                    stream: stream.clone(),
                    partitions: vec![],
                    to: Some(StartPosition {
                        position: Some(Position::Next(start_position::Next {})),
                    }),
                },
            ),
        ),
        (
            "reset: no target",
            Code::InvalidArgument,
            reset(
                c,
                ResetOffsetsRequest {
                    group: "g".into(),
                    stream: stream.clone(),
                    partitions: vec![],
                    to: None,
                },
            ),
        ),
        ("list groups: unknown stream", Code::NotFound, {
            let mut c = c.clone();
            let missing = missing.clone();
            Box::pin(async move {
                c.list_groups(ListGroupsRequest { stream: missing })
                    .await
                    .map(drop)
            })
        }),
        (
            "publish: sequence without producer",
            Code::InvalidArgument,
            publish(
                c,
                &stream,
                vec![PublishRecord {
                    sequence: 1,
                    ..record("k", "v")
                }],
            ),
        ),
        (
            "publish: producer without sequences",
            Code::InvalidArgument,
            publish_as(c, &stream, "p", vec![record("k", "v")]),
        ),
        (
            "publish: decreasing sequences",
            Code::InvalidArgument,
            publish_as(
                c,
                &stream,
                "p",
                vec![
                    PublishRecord {
                        sequence: 2,
                        ..record("k", "v")
                    },
                    PublishRecord {
                        sequence: 1,
                        ..record("k", "v")
                    },
                ],
            ),
        ),
        (
            "publish: producer id too long",
            Code::InvalidArgument,
            publish_as(
                c,
                &stream,
                &"p".repeat(201),
                vec![PublishRecord {
                    sequence: 1,
                    ..record("k", "v")
                }],
            ),
        ),
    ];

    let mut failures = Vec::new();
    for (name, expected, call) in cases {
        match call.await {
            Ok(()) => failures.push(format!("{name}: succeeded, expected {expected:?}")),
            Err(status) if status.code() != expected => failures.push(format!(
                "{name}: got {:?} ({}), expected {expected:?}",
                status.code(),
                status.message()
            )),
            Err(status) => {
                assert!(
                    !status.message().is_empty(),
                    "{name}: the status carries a message"
                );
                let details = details(&status);
                let wanted = expected_details(name);
                if details != wanted {
                    failures.push(format!(
                        "{name}: details {details:?}, expected {wanted:?} ({})",
                        status.message()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "wrong statuses:\n{}",
        failures.join("\n")
    );

    // Still healthy and working; nothing of the rejected batches was written.
    assert_eq!(server.health("").await, Some(ServingStatus::Serving));
    publish_ok(&mut client, &stream, vec![record("after", "ok")]).await;
    let mut total = 0;
    for partition in 0..3 {
        total += common::read_all(&mut client, &stream, partition)
            .await
            .len();
    }
    assert_eq!(total, 1, "only the final good record is stored");
}

/// What a program reads from a refusal: the ErrorInfo reason (domain
/// "partlog"), the BadRequest field (INVALID_ARGUMENT only), and whether it
/// says when to retry (RetryInfo).
#[derive(Debug, PartialEq)]
struct Details {
    reason: String,
    field: Option<String>,
    retry: bool,
}

fn details(status: &tonic::Status) -> Details {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "partlog", "{status:?}");
    let violations = status
        .get_details_bad_request()
        .map(|b| b.field_violations)
        .unwrap_or_default();
    assert!(violations.len() <= 1, "{violations:?}");
    let field = violations.into_iter().next().map(|v| {
        assert_eq!(v.description, status.message());
        assert_eq!(info.metadata.get("field"), Some(&v.field));
        v.field
    });
    Details {
        reason: info.reason,
        field,
        retry: status.get_details_retry_info().is_some(),
    }
}

/// The details each case of the table must carry.
fn expected_details(case: &str) -> Details {
    let (reason, field) = match case {
        "create: empty name" | "describe: empty name" | "read: empty stream name" => {
            ("FIELD_REQUIRED", Some("stream"))
        }
        "create: reserved amq. prefix" | "publish: bad stream name" => {
            ("NAME_RESERVED", Some("stream"))
        }
        "create: control character" => ("NAME_INVALID", Some("stream")),
        "create: name too long" => ("NAME_TOO_LONG", Some("stream")),
        "create: zero partitions" | "create: 257 partitions" => {
            ("VALUE_OUT_OF_RANGE", Some("partitions"))
        }
        "create: negative max_age" | "create: sub-second max_age" => {
            ("VALUE_OUT_OF_RANGE", Some("retention.max_age"))
        }
        "create: zero replicas" => ("VALUE_OUT_OF_RANGE", Some("replicas")),
        "create: a Bloom filter of 8 bytes" | "create: a Bloom filter of 256 bytes" => {
            ("VALUE_OUT_OF_RANGE", Some("filter_size_bytes"))
        }
        "create: exists" | "create: exists, other partition count" => {
            ("STREAM_ALREADY_EXISTS", None)
        }
        "describe: unknown"
        | "delete: unknown"
        | "publish: unknown stream"
        | "read: unknown stream"
        | "subscribe: unknown stream"
        | "commit: unknown stream"
        | "get offsets: unknown stream"
        | "describe group: unknown stream"
        | "list groups: unknown stream" => ("STREAM_NOT_FOUND", None),
        "publish: no records" => ("FIELD_REQUIRED", Some("records")),
        "publish: value over 1 MiB" => ("VALUE_TOO_LARGE", Some("records[1].value")),
        "publish: 10 001 records" | "publish: batch over 16 MiB" => ("BATCH_TOO_LARGE", None),
        "publish: reserved header name" | "publish: empty header name" => {
            ("HEADER_INVALID", Some("records[0].headers"))
        }
        "publish: oversized key" => ("KEY_TOO_LARGE", Some("records[0]")),
        "read: partition out of range"
        | "read: huge partition"
        | "subscribe: partition out of range"
        | "commit: partition out of range" => ("PARTITION_OUT_OF_RANGE", Some("partition")),
        "read: too many records" => ("VALUE_OUT_OF_RANGE", Some("max_records")),
        "read: too many bytes" => ("VALUE_OUT_OF_RANGE", Some("max_bytes")),
        "read: wait too long" | "read: negative wait" => ("VALUE_OUT_OF_RANGE", Some("max_wait")),
        "subscribe: COMMITTED without a group" => ("GROUP_REQUIRED", Some("group")),
        "subscribe: partition twice" => ("PARTITION_REPEATED", Some("partitions")),
        "subscribe: window too large" => ("VALUE_OUT_OF_RANGE", Some("window")),
        "subscribe: control character in group" | "describe group: control character in group" => {
            ("NAME_INVALID", Some("group"))
        }
        "subscribe: start without a position" => ("POSITION_INVALID", Some("start")),
        "commit: no offsets" => ("FIELD_REQUIRED", Some("offsets")),
        "commit: empty group" | "get offsets: empty group" => ("FIELD_REQUIRED", Some("group")),
        "commit: partition without records" => ("PARTITION_EMPTY", None),
        "reset: to NEXT" => ("POSITION_INVALID", Some("to")),
        "reset: no target" => ("FIELD_REQUIRED", Some("to")),
        "publish: sequence without producer" | "publish: producer without sequences" => {
            ("SEQUENCE_INVALID", Some("records[0].sequence"))
        }
        "publish: decreasing sequences" => ("SEQUENCE_INVALID", Some("records[1].sequence")),
        "publish: producer id too long" => ("NAME_TOO_LONG", Some("producer_id")),
        other => panic!("no expected details for case {other:?}"),
    };
    Details {
        reason: reason.into(),
        field: field.map(Into::into),
        retry: reason == "BATCH_TOO_LARGE",
    }
}

/// Bytes sent as they are and received as they come: a client that is not
/// bound to partlog.v1's message types.
#[derive(Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// A request that is not valid protobuf for its message (here a string
/// field holding invalid UTF-8) is the caller's error: INVALID_ARGUMENT,
/// saying so, not INTERNAL.
#[tokio::test]
async fn a_request_that_is_not_valid_protobuf_is_invalid_argument() {
    let server = Partlog::start().await;
    let channel = server.channel().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    // DescribeStreamRequest.stream (field 1, length-delimited): 0xff 0xfe.
    let not_utf8 = vec![0x0a, 2, 0xff, 0xfe];
    let path = "/partlog.v1.PartLog/DescribeStream".parse().unwrap();
    let status = grpc
        .unary(tonic::Request::new(not_utf8), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not valid protobuf"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MALFORMED_REQUEST");
    // A truncated field, on a streaming call's first message.
    let path = "/partlog.v1.PartLog/Consume".parse().unwrap();
    let requests = futures::stream::iter([vec![0x0a, 10, 0x0a]]);
    grpc.ready().await.expect("ready");
    let status = match grpc
        .streaming(tonic::Request::new(requests), path, RawCodec)
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// A method partlog does not serve (stubs newer than the server, a typo in
/// a path) is UNIMPLEMENTED with a reason, like every other error.
#[tokio::test]
async fn an_unknown_method_is_unimplemented_with_a_reason() {
    let server = Partlog::start().await;
    let channel = server.channel().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = "/partlog.v1.PartLog/NoSuchMethod".parse().unwrap();
    let status = grpc
        .unary(tonic::Request::new(Vec::new()), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("METHOD_UNKNOWN", "partlog")
    );
    assert!(status.message().contains("no such method"), "{status:?}");
}
