//! CreateStream, DescribeStream and DeleteStream against the real broker.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{create_stream, unique_stream, Partlog};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{
    CommitRequest, CreateStreamRequest, DeleteStreamRequest, DescribeStreamRequest,
    ListStreamsRequest, Retention, StreamDescription,
};
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

/// The stream's description, as DescribeStream answers it now.
async fn describe(client: &mut PartLogClient<Channel>, stream: &str) -> StreamDescription {
    client
        .describe_stream(DescribeStreamRequest {
            stream: stream.into(),
        })
        .await
        .expect("describe")
        .into_inner()
        .stream
        .expect("description")
}

#[tokio::test]
async fn create_describe_delete() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("admin");

    let created = client
        .create_stream(CreateStreamRequest {
            stream: stream.clone(),
            partitions: 3,
            retention: Some(Retention {
                max_age: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                max_bytes: 100 * 1024 * 1024,
                max_segment_bytes: 10 * 1024 * 1024,
            }),
            replicas: None,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .stream
        .expect("description");
    assert_eq!(created.stream, stream);

    let described = describe(&mut client, &stream).await;
    assert_eq!(described, created);
    assert_eq!(described.partitions.len(), 3);
    for (i, partition) in described.partitions.iter().enumerate() {
        assert_eq!(partition.index, i as u32);
        assert_eq!(partition.partition_stream, format!("{stream}-{i}"));
        let (host, port) = partition.leader.rsplit_once(':').expect("host:port");
        assert!(!host.is_empty());
        port.parse::<u16>().expect("numeric port");
        assert_eq!((partition.first, partition.tail), (None, None), "empty");
    }

    // Three records to one partition: its first and tail offsets show them.
    let records = (0..3)
        .map(|i| common::record("k", format!("v{i}")))
        .collect();
    let written = common::publish_ok(&mut client, &stream, records).await[0];
    let described = describe(&mut client, &stream).await;
    for partition in &described.partitions {
        let bounds = (partition.first, partition.tail);
        match partition.index == written {
            true => assert!(
                matches!(bounds, (Some(first), Some(tail)) if tail >= first + 2),
                "{partition:?}"
            ),
            false => assert_eq!(bounds, (None, None), "{partition:?}"),
        }
    }

    let again = client
        .create_stream(CreateStreamRequest {
            stream: stream.clone(),
            partitions: 3,
            ..Default::default()
        })
        .await
        .expect_err("second create");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    client
        .delete_stream(DeleteStreamRequest {
            stream: stream.clone(),
        })
        .await
        .expect("delete");

    let gone = client
        .describe_stream(DescribeStreamRequest {
            stream: stream.clone(),
        })
        .await
        .expect_err("describe after delete");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    let gone = client
        .delete_stream(DeleteStreamRequest { stream })
        .await
        .expect_err("second delete");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
}

#[tokio::test]
async fn a_deleted_stream_can_be_created_again_with_other_partitions() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("recreate");
    create_stream(&mut client, &stream, 2).await;
    let first = common::publish_ok(&mut client, &stream, vec![common::record("k", "v1")]).await;
    let commit = |partition| CommitRequest {
        group: "g".into(),
        stream: stream.clone(),
        offsets: HashMap::from([(partition, 0)]),
    };
    client.commit(commit(first[0])).await.expect("commit");
    client
        .delete_stream(DeleteStreamRequest {
            stream: stream.clone(),
        })
        .await
        .expect("delete");

    create_stream(&mut client, &stream, 5).await;
    // Nothing of the old stream's records counts for the new one.
    let empty = client.commit(commit(first[0])).await.unwrap_err();
    assert_eq!(empty.code(), Code::FailedPrecondition, "{empty:?}");
    let partitions: Vec<u32> = (0..50)
        .map(|i| partlog::routing::partition_for_key(&format!("key-{i}"), 5))
        .collect();
    let records = (0..50)
        .map(|i| common::record(&format!("key-{i}"), "v2"))
        .collect();
    let routed = common::publish_ok(&mut client, &stream, records).await;
    assert_eq!(routed, partitions, "routing uses the new partition count");
    client
        .delete_stream(DeleteStreamRequest { stream })
        .await
        .expect("delete");
}

/// Metadata answers carry strings, and a long-lived broker connection's
/// read buffer eventually splits one across two reads; rabbitmq-stream-client
/// 0.11 panics on that (in practice after about 8 KiB of answers, ~75
/// DescribeStream calls here) and its connection dies silently. partlog's
/// own metadata query must keep answering.
#[tokio::test]
async fn metadata_keeps_answering_on_a_long_lived_connection() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("meta");
    create_stream(&mut client, &stream, 7).await;
    for call in 0..500 {
        let described = client
            .describe_stream(DescribeStreamRequest {
                stream: stream.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("DescribeStream call {call}: {e}"))
            .into_inner()
            .stream
            .unwrap();
        assert_eq!(described.partitions.len(), 7);
    }
}

/// The longest stream name depends on the partition count: RabbitMQ names
/// each partition's data directory `<vhost>_<stream>-<index>_<timestamp>`
/// within the file system's 255 bytes. At the limit the stream works; one
/// character more is INVALID_ARGUMENT naming the limit — never a stream
/// whose partitions cannot start (which the broker would retry for ever).
#[tokio::test]
async fn stream_names_at_the_broker_directory_limit() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    // On the default vhost "/": 19 timestamp digits, 2 underscores, the
    // vhost, the dash and the index digits leave these.
    for (partitions, longest) in [(1u32, 231usize), (10, 231), (256, 229)] {
        // Unique, so that an earlier failed run does not get in the way.
        let prefix = unique_stream(&format!("limit{partitions}"));
        let at_limit = format!("{prefix}{}", "n".repeat(longest - prefix.len()));
        let too_long = format!("{at_limit}n");

        let err = client
            .create_stream(CreateStreamRequest {
                stream: too_long.clone(),
                partitions,
                ..Default::default()
            })
            .await
            .expect_err("one character over the limit");
        assert_eq!(err.code(), Code::InvalidArgument, "{partitions}: {err:?}");
        assert!(
            err.message().contains(&format!("at most {longest}")),
            "{partitions}: {}",
            err.message()
        );

        let created = client
            .create_stream(CreateStreamRequest {
                stream: at_limit.clone(),
                partitions,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{partitions} partitions, {longest} characters: {e}"))
            .into_inner()
            .stream
            .expect("description");
        assert_eq!(created.partitions.len(), partitions as usize);
        // Every partition runs: it has a leader and takes a record.
        assert!(created.partitions.iter().all(|p| !p.leader.is_empty()));
        common::publish_ok(&mut client, &at_limit, vec![common::record("k", "v")]).await;
        client
            .delete_stream(DeleteStreamRequest {
                stream: at_limit.clone(),
            })
            .await
            .expect("delete");
    }
}

#[tokio::test]
async fn list_streams_pages_through_a_prefix_in_name_order() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    // A prefix of its own; names that sort apart from their creation order.
    let prefix = unique_stream("listing");
    let names: Vec<String> = ["c", "a", "b-2", "b-10", "d"]
        .iter()
        .map(|n| format!("{prefix}-{n}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        create_stream(&mut client, name, i as u32 + 1).await;
    }
    let lister = client.clone();
    let list = |page_size: i32, page_token: String| {
        let mut client = lister.clone();
        let prefix = format!("{prefix}-");
        async move {
            client
                .list_streams(ListStreamsRequest {
                    prefix,
                    page_size,
                    page_token,
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(2, token).await.expect("a page");
        assert!(page.streams.len() <= 2);
        listed.extend(page.streams.into_iter().map(|s| (s.stream, s.partitions)));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<(String, u32)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32 + 1))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(pages, 3);
    // One page holds them all; a prefix nothing has is an empty answer.
    let all = list(0, String::new()).await.unwrap();
    assert_eq!(all.streams.len(), 5);
    assert!(all.next_page_token.is_empty());
    let none = client
        .list_streams(ListStreamsRequest {
            prefix: format!("{prefix}-nothing"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.streams.is_empty() && none.next_page_token.is_empty());
    // A deleted stream leaves the listing.
    client
        .delete_stream(DeleteStreamRequest {
            stream: names[0].clone(),
        })
        .await
        .unwrap();
    let after_delete = list(0, String::new()).await.unwrap();
    assert!(!after_delete.streams.iter().any(|s| s.stream == names[0]));
    assert_eq!(after_delete.streams.len(), 4);

    for (page_size, token, message) in [
        (1001, "", "page_size is 1001; at most 1000"),
        (-1, "", "page_size is -1; it must not be negative"),
        (
            0,
            "not-a-token",
            "page_token is not a next_page_token of ListStreams",
        ),
    ] {
        let status = list(page_size, token.into()).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(message), "{status:?}");
    }
    for name in &names[1..] {
        client
            .delete_stream(DeleteStreamRequest {
                stream: name.clone(),
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn list_streams_says_when_the_management_api_does_not_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}");
    let server = Partlog::start_with(&[("PARTLOG_BROKER_MANAGEMENT_URL", &url)]).await;
    let mut client = server.client().await;
    let status = client
        .list_streams(ListStreamsRequest::default())
        .await
        .expect_err("no management API");
    assert_eq!(status.code(), Code::Unavailable);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MANAGEMENT_API_UNAVAILABLE");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(
        retry.retry_delay.is_some_and(|d| d > Duration::ZERO),
        "{retry:?}"
    );
    assert!(
        status
            .message()
            .contains("is the rabbitmq_management plugin enabled?"),
        "{status:?}"
    );
    assert!(!status.message().contains("guest:"), "{status:?}");
}
