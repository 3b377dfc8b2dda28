//! Issue 7.6: partlog never runs a connection whose decoder can panic on valid
//! frames.
//!
//! The client library decodes whatever bytes a socket read returned and
//! expects `DecodeError::Incomplete` until a frame is all there; a panic
//! instead kills its connection task silently. These tests hold the protocol
//! crate partlog builds (the patched copy in `patches/rabbitmq-stream-protocol`)
//! to that contract:
//! - every response the decoder knows, cut at every byte (so every string of
//!   every command is split across reads), is `Incomplete` until whole, then
//!   decodes to the expected value and leaves the next frame untouched;
//! - frames a broker or a publisher could send that used to panic, overflow
//!   the stack or desynchronise the stream now decode or fail cleanly;
//! - arbitrary bytes never panic the decoder;
//! - end to end, a connection of the client library whose broker splits every
//!   frame inside a string completes its handshake, delivers an unsolicited
//!   metadata update to its handler and answers a query.
//!
//! Without the patch (drop `[patch.crates-io]` from Cargo.toml) they fail:
//! the prefix test panics with "mid > len", the deep-nesting one overflows
//! the stack and aborts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rabbitmq_stream_client::types::MessageResult;
use rabbitmq_stream_client::{Client, ClientOptions};
use rabbitmq_stream_protocol::codec::{Decoder, Encoder};
use rabbitmq_stream_protocol::commands::close::CloseResponse;
use rabbitmq_stream_protocol::commands::consumer_update::ConsumerUpdateCommand;
use rabbitmq_stream_protocol::commands::consumer_update_request::ConsumerUpdateRequestCommand;
use rabbitmq_stream_protocol::commands::deliver::DeliverCommand;
use rabbitmq_stream_protocol::commands::exchange_command_versions::{
    ExchangeCommandVersion, ExchangeCommandVersionsResponse,
};
use rabbitmq_stream_protocol::commands::heart_beat::HeartbeatResponse;
use rabbitmq_stream_protocol::commands::peer_properties::PeerPropertiesResponse;
use rabbitmq_stream_protocol::commands::publish_confirm::PublishConfirm;
use rabbitmq_stream_protocol::commands::publish_error::PublishErrorResponse;
use rabbitmq_stream_protocol::commands::query_offset::QueryOffsetResponse;
use rabbitmq_stream_protocol::commands::query_publisher_sequence::QueryPublisherResponse;
use rabbitmq_stream_protocol::commands::subscribe::OffsetSpecification;
use rabbitmq_stream_protocol::commands::superstream_partitions::SuperStreamPartitionsResponse;
use rabbitmq_stream_protocol::commands::superstream_route::SuperStreamRouteResponse;
use rabbitmq_stream_protocol::commands::tune::TunesCommand;
use rabbitmq_stream_protocol::error::DecodeError;
use rabbitmq_stream_protocol::message::Message;
use rabbitmq_stream_protocol::types::{Header, PublishingError};
use rabbitmq_stream_protocol::{Response, ResponseCode, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

// Command keys of the stream protocol (its `protocol` module is private).
// The broker sets the top bit on a response; the decoder clears it.
const DELIVER: u16 = 0x0008;
const PUBLISH_CONFIRM: u16 = 0x0003;
const PUBLISH_ERROR: u16 = 0x0004;
const QUERY_PUBLISHER_SEQUENCE: u16 = 0x0005;
const CREDIT: u16 = 0x0009;
const QUERY_OFFSET: u16 = 0x000b;
const CREATE_STREAM: u16 = 0x000d;
const METADATA: u16 = 0x000f;
const METADATA_UPDATE: u16 = 0x0010;
const PEER_PROPERTIES: u16 = 0x0011;
const SASL_HANDSHAKE: u16 = 0x0012;
const SASL_AUTHENTICATE: u16 = 0x0013;
const TUNE: u16 = 0x0014;
const OPEN: u16 = 0x0015;
const CLOSE: u16 = 0x0016;
const HEARTBEAT: u16 = 0x0017;
const ROUTE: u16 = 0x0018;
const PARTITIONS: u16 = 0x0019;
const CONSUMER_UPDATE: u16 = 0x001a;
const EXCHANGE_COMMAND_VERSIONS: u16 = 0x001b;
const RESPONSE: u16 = 0x8000;

/// A frame body as the broker writes it: big endian, strings with an i16
/// length, arrays and maps with a 32-bit count.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    /// Where the last string written starts and ends, to split a frame
    /// inside it.
    last_string: Option<(usize, usize)>,
}

impl Wire {
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }
    fn u16(self, v: u16) -> Self {
        self.raw(&v.to_be_bytes())
    }
    fn u32(self, v: u32) -> Self {
        self.raw(&v.to_be_bytes())
    }
    fn i16(self, v: i16) -> Self {
        self.raw(&v.to_be_bytes())
    }
    fn i32(self, v: i32) -> Self {
        self.raw(&v.to_be_bytes())
    }
    fn str(self, s: &str) -> Self {
        let mut wire = self.i16(s.len().try_into().unwrap());
        let start = wire.bytes.len();
        wire = wire.raw(s.as_bytes());
        wire.last_string = Some((start, wire.bytes.len()));
        wire
    }
    fn strs(self, strings: &[&str]) -> Self {
        strings
            .iter()
            .fold(self.u32(strings.len() as u32), |w, s| w.str(s))
    }
    fn map(self, entries: &[(&str, &str)]) -> Self {
        entries
            .iter()
            .fold(self.u32(entries.len() as u32), |w, (k, v)| w.str(k).str(v))
    }
}

/// A whole frame: size, key, version, body.
fn frame(key: u16, version: u16, body: &[u8]) -> Vec<u8> {
    let size = u32::try_from(4 + body.len()).unwrap();
    let mut frame = size.to_be_bytes().to_vec();
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// A command as the protocol crate's own encoder writes it.
fn encoded(command: &impl Encoder) -> Vec<u8> {
    let mut bytes = Vec::new();
    command.encode(&mut bytes).unwrap();
    bytes
}

enum Expected {
    /// The decoded response equals this one.
    Equal(Response),
    /// For responses the crate gives no constructor for: the decoded
    /// response's debug form (maps in them have one entry, so it is
    /// deterministic).
    Debug(&'static str),
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expected: Expected,
}

fn case(name: &'static str, frame: Vec<u8>, expected: Expected) -> Case {
    Case {
        name,
        frame,
        expected,
    }
}

fn equal(key: u16, kind: ResponseKind) -> Expected {
    Expected::Equal(Response::new(Header::new(key, 1), kind))
}

/// A chunk's worth of messages of the kinds partlog and native clients
/// write: strings in AMQP properties, application properties and bodies.
fn messages() -> Vec<Message> {
    vec![
        Message::builder()
            .body(b"first record".to_vec())
            .properties()
            .message_id("id-1".to_string())
            .subject("a subject")
            .content_type("text/plain")
            .message_builder()
            .application_properties()
            .insert("partlog-key", "customer-1001")
            .insert("count", 42i32)
            .message_builder()
            .build(),
        Message::builder().body(Vec::new()).build(),
        Message::builder()
            .body("ключ ✓".as_bytes().to_vec())
            .application_properties()
            .insert("trace-id", "abc")
            .message_builder()
            .build(),
    ]
}

/// Every response command `Response::decode` knows, as a broker sends it.
fn cases() -> Vec<Case> {
    let peer_properties = PeerPropertiesResponse::new(
        1,
        ResponseCode::Ok,
        HashMap::from([
            ("product".to_string(), "RabbitMQ".to_string()),
            ("version".to_string(), "4.0.5".to_string()),
        ]),
    );
    let deliver = DeliverCommand::new(
        3,    // subscription id
        0x50, // chunk magic and version
        0,    // chunk type: user
        3,    // entries
        1_700_000_000_000,
        2, // epoch
        1000,
        0x1234_5678, // crc
        0,           // trailer length
        0,           // reserved
        messages(),
    );
    let publish_error = PublishErrorResponse::new(
        5,
        vec![
            PublishingError::new(10, ResponseCode::PublisherDoesNotExist),
            PublishingError::new(11, ResponseCode::StreamNotAvailable),
        ],
    );
    let versions = ExchangeCommandVersionsResponse::new(
        9,
        ResponseCode::Ok,
        vec![
            ExchangeCommandVersion::new(0x0002, 1, 2), // publish
            ExchangeCommandVersion::new(DELIVER, 1, 2),
        ],
    );
    let partitions = SuperStreamPartitionsResponse::new(
        10,
        vec!["orders-0".into(), "orders-1".into(), "orders-2".into()],
        ResponseCode::Ok,
    );
    let route = SuperStreamRouteResponse::new(11, vec!["orders-2".into()], ResponseCode::Ok);
    let consumer_update_request =
        ConsumerUpdateRequestCommand::new(12, 0x0001, OffsetSpecification::Offset(77));

    vec![
        case(
            "open",
            frame(
                OPEN | RESPONSE,
                1,
                &Wire::default()
                    .u32(2)
                    .u16(1)
                    .map(&[("advertised_host", "rabbit-1.example")])
                    .bytes,
            ),
            Expected::Debug(
                r#"Response { header: Header { key: 21, version: 1 }, kind: Open(OpenResponse { correlation_id: 2, code: Ok, connection_properties: {"advertised_host": "rabbit-1.example"} }) }"#,
            ),
        ),
        case(
            "close answered",
            frame(
                CLOSE | RESPONSE,
                1,
                &encoded(&CloseResponse::new(3, ResponseCode::Ok)),
            ),
            equal(
                CLOSE,
                ResponseKind::Close(CloseResponse::new(3, ResponseCode::Ok)),
            ),
        ),
        // A close the broker starts carries a reason the decoder does not
        // read: it must be skipped with its frame, not read as the next one.
        case(
            "close from the broker",
            frame(
                CLOSE,
                1,
                &Wire::default()
                    .u32(4)
                    .u16(15)
                    .str("node shutting down")
                    .bytes,
            ),
            equal(
                CLOSE,
                ResponseKind::Close(CloseResponse::new(4, ResponseCode::InternalError)),
            ),
        ),
        case(
            "peer properties",
            frame(
                PEER_PROPERTIES | RESPONSE,
                1,
                &Wire::default()
                    .u32(1)
                    .u16(1)
                    .map(&[("product", "RabbitMQ"), ("version", "4.0.5")])
                    .bytes,
            ),
            equal(
                PEER_PROPERTIES,
                ResponseKind::PeerProperties(peer_properties),
            ),
        ),
        case(
            "sasl handshake",
            frame(
                SASL_HANDSHAKE | RESPONSE,
                1,
                &Wire::default()
                    .u32(5)
                    .u16(1)
                    .strs(&["PLAIN", "AMQPLAIN"])
                    .bytes,
            ),
            Expected::Debug(
                r#"Response { header: Header { key: 18, version: 1 }, kind: SaslHandshake(SaslHandshakeResponse { correlation_id: 5, code: Ok, mechanisms: ["PLAIN", "AMQPLAIN"] }) }"#,
            ),
        ),
        case(
            "generic (create stream)",
            frame(
                CREATE_STREAM | RESPONSE,
                1,
                &Wire::default().u32(6).u16(5).bytes,
            ),
            Expected::Debug(
                r#"Response { header: Header { key: 13, version: 1 }, kind: Generic(GenericResponse { correlation_id: 6, code: StreamAlreadyExists }) }"#,
            ),
        ),
        case(
            "tune",
            frame(TUNE, 1, &encoded(&TunesCommand::new(1_048_576, 60))),
            equal(TUNE, ResponseKind::Tunes(TunesCommand::new(1_048_576, 60))),
        ),
        case(
            "deliver",
            frame(DELIVER, 1, &encoded(&deliver)),
            equal(DELIVER, ResponseKind::Deliver(deliver)),
        ),
        case(
            "heartbeat",
            frame(HEARTBEAT, 1, &[]),
            equal(HEARTBEAT, ResponseKind::Heartbeat(HeartbeatResponse {})),
        ),
        case(
            "metadata",
            frame(
                METADATA | RESPONSE,
                1,
                &Wire::default()
                    .u32(7)
                    .i32(2)
                    .u16(0)
                    .str("rabbit-1")
                    .u32(5552)
                    .u16(1)
                    .str("rabbit-2")
                    .u32(5553)
                    .i32(1)
                    .str("orders-0")
                    .u16(1)
                    .u16(0)
                    .i32(1)
                    .u16(1)
                    .bytes,
            ),
            Expected::Debug(
                r#"Response { header: Header { key: 15, version: 1 }, kind: Metadata(MetadataResponse { correlation_id: 7, brokers: [Broker { reference: 0, host: "rabbit-1", port: 5552 }, Broker { reference: 1, host: "rabbit-2", port: 5553 }], stream_metadata: [StreamMetadata { stream_name: "orders-0", code: Ok, leader_reference: 0, replicas_references: [1] }] }) }"#,
            ),
        ),
        // The frame seen panicking in partlog (decoder.rs:148).
        case(
            "metadata update",
            frame(
                METADATA_UPDATE,
                1,
                &Wire::default().u16(6).str("orders-2").bytes,
            ),
            Expected::Debug(
                r#"Response { header: Header { key: 16, version: 1 }, kind: MetadataUpdate(MetadataUpdateCommand { code: StreamNotAvailable, stream: "orders-2" }) }"#,
            ),
        ),
        case(
            "publish confirm",
            frame(
                PUBLISH_CONFIRM,
                1,
                &encoded(&PublishConfirm::new(4, vec![1, 2, 3])),
            ),
            equal(
                PUBLISH_CONFIRM,
                ResponseKind::PublishConfirm(PublishConfirm::new(4, vec![1, 2, 3])),
            ),
        ),
        case(
            "publish error",
            frame(PUBLISH_ERROR, 1, &encoded(&publish_error)),
            equal(PUBLISH_ERROR, ResponseKind::PublishError(publish_error)),
        ),
        case(
            "query offset",
            frame(
                QUERY_OFFSET | RESPONSE,
                1,
                &encoded(&QueryOffsetResponse::new(7, ResponseCode::Ok, 12_345)),
            ),
            equal(
                QUERY_OFFSET,
                ResponseKind::QueryOffset(QueryOffsetResponse::new(7, ResponseCode::Ok, 12_345)),
            ),
        ),
        case(
            "query publisher sequence",
            frame(
                QUERY_PUBLISHER_SEQUENCE | RESPONSE,
                1,
                &encoded(&QueryPublisherResponse::new(8, ResponseCode::Ok, 500)),
            ),
            equal(
                QUERY_PUBLISHER_SEQUENCE,
                ResponseKind::QueryPublisherSequence(QueryPublisherResponse::new(
                    8,
                    ResponseCode::Ok,
                    500,
                )),
            ),
        ),
        case(
            "credit",
            frame(
                CREDIT | RESPONSE,
                1,
                &Wire::default().u16(4).raw(&[3]).bytes,
            ),
            Expected::Debug(
                r#"Response { header: Header { key: 9, version: 1 }, kind: Credit(CreditResponse { code: SubscriptionIdDoesNotExist, subscription_id: 3 }) }"#,
            ),
        ),
        case(
            "exchange command versions",
            frame(EXCHANGE_COMMAND_VERSIONS | RESPONSE, 1, &encoded(&versions)),
            equal(
                EXCHANGE_COMMAND_VERSIONS,
                ResponseKind::ExchangeCommandVersions(versions),
            ),
        ),
        case(
            "partitions",
            frame(PARTITIONS | RESPONSE, 1, &encoded(&partitions)),
            equal(PARTITIONS, ResponseKind::SuperStreamPartitions(partitions)),
        ),
        case(
            "route",
            frame(ROUTE | RESPONSE, 1, &encoded(&route)),
            equal(ROUTE, ResponseKind::SuperStreamRoute(route)),
        ),
        case(
            "consumer update",
            frame(
                CONSUMER_UPDATE,
                1,
                &encoded(&ConsumerUpdateCommand::new(11, 3, 1)),
            ),
            equal(
                CONSUMER_UPDATE,
                ResponseKind::ConsumerUpdate(ConsumerUpdateCommand::new(11, 3, 1)),
            ),
        ),
        // The decoder lists 0x801a (the client's answer to a consumer update)
        // among the generic responses, but it clears the top bit before
        // matching, so the frame decodes as a consumer update: the correlation
        // id, then the response code's two bytes as subscription id and
        // active flag. Its offset specification is not read and must be
        // skipped with the frame.
        case(
            "consumer update request",
            frame(
                CONSUMER_UPDATE | RESPONSE,
                1,
                &encoded(&consumer_update_request),
            ),
            equal(
                CONSUMER_UPDATE,
                ResponseKind::ConsumerUpdate(ConsumerUpdateCommand::new(12, 0, 1)),
            ),
        ),
    ]
}

fn assert_expected(case: &Case, decoded: &Response) {
    match &case.expected {
        Expected::Equal(expected) => assert_eq!(decoded, expected, "{}", case.name),
        Expected::Debug(expected) => assert_eq!(&format!("{decoded:?}"), expected, "{}", case.name),
    }
}

#[test]
fn every_response_cut_anywhere_is_incomplete_until_whole() {
    for case in cases() {
        for cut in 0..case.frame.len() {
            match Response::decode(&case.frame[..cut]) {
                Err(DecodeError::Incomplete(_)) => {}
                other => panic!(
                    "{}: the first {cut} of {} bytes decoded as {other:?}, not Incomplete",
                    case.name,
                    case.frame.len()
                ),
            }
        }
        let (rest, decoded) = Response::decode(&case.frame)
            .unwrap_or_else(|e| panic!("{}: the whole frame failed: {e:?}", case.name));
        assert!(rest.is_empty(), "{}: {} bytes left", case.name, rest.len());
        assert_expected(&case, &decoded);
    }
}

#[test]
fn every_response_leaves_the_next_frame_untouched() {
    let next = frame(HEARTBEAT, 1, &[]);
    for case in cases() {
        // The next frame in full and cut short: decoding resumes exactly
        // where the first frame ends either way.
        for next_part in [&next[..], &next[..5]] {
            let mut bytes = case.frame.clone();
            bytes.extend_from_slice(next_part);
            let (rest, decoded) =
                Response::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            assert_eq!(rest, next_part, "{}", case.name);
            assert_expected(&case, &decoded);
        }
    }
}

/// A deliver frame whose chunk holds one entry: these bytes, header included.
fn deliver_with_entry(entry: &[u8]) -> Vec<u8> {
    let body = Wire::default()
        .raw(&[3, 0x50, 0]) // subscription, magic and version, chunk type
        .u16(1) // entries
        .u32(1) // records
        .raw(&[0; 8 + 8 + 8]) // timestamp, epoch, first offset
        .u32(0) // crc
        .u32(entry.len() as u32) // data length
        .u32(0) // trailer length
        .u32(0) // reserved
        .raw(entry)
        .bytes;
    frame(DELIVER, 1, &body)
}

/// A deliver frame carrying one record (a simple entry) with these AMQP
/// bytes.
fn deliver_with_record(record: &[u8]) -> Vec<u8> {
    deliver_with_entry(&Wire::default().u32(record.len() as u32).raw(record).bytes)
}

/// An AMQP message whose body (an amqp-value section) is `value`.
fn amqp_value(value: &[u8]) -> Vec<u8> {
    let mut message = vec![0x00, 0x53, 0x77];
    message.extend_from_slice(value);
    message
}

/// `depth` lists, each the only element of the one around it.
fn nested_lists(depth: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(depth * 9 + 1);
    for level in 0..depth {
        let inner = 9 * (depth - level - 1) + 1;
        value.push(0xd0); // list32: size, count, elements
        value.extend_from_slice(&(4 + inner as u32).to_be_bytes());
        value.extend_from_slice(&1u32.to_be_bytes());
    }
    value.push(0x45); // the empty list
    value
}

fn decode_error(bytes: &[u8]) -> DecodeError {
    match Response::decode(bytes) {
        Ok((_, decoded)) => panic!("decoded as {decoded:?}"),
        Err(e) => e,
    }
}

/// A complete frame that cannot be decoded must fail: `Incomplete` would
/// make the connection wait for bytes that never come.
fn assert_fails_for_good(what: &str, bytes: &[u8]) {
    let error = decode_error(bytes);
    assert!(
        !matches!(error, DecodeError::Incomplete(_)),
        "{what}: Incomplete although the frame is whole"
    );
}

#[test]
fn null_and_empty_strings_decode_without_panicking() {
    // -1 is the protocol's null string; upstream read it as a length of
    // usize::MAX. An empty string decodes as "no string", which upstream
    // then unwrapped. Both name no stream.
    for stream in [Wire::default().i16(-1), Wire::default().str("")] {
        let update = frame(
            METADATA_UPDATE,
            1,
            &Wire::default().u16(6).raw(&stream.bytes).bytes,
        );
        let (rest, decoded) = Response::decode(&update).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            format!("{decoded:?}"),
            r#"Response { header: Header { key: 16, version: 1 }, kind: MetadataUpdate(MetadataUpdateCommand { code: StreamNotAvailable, stream: "" }) }"#
        );
    }
    let metadata = Wire::default()
        .u32(7)
        .i32(1)
        .u16(0)
        .i16(-1) // host
        .u32(5552)
        .i32(1)
        .str("") // stream
        .u16(2)
        .u16(0)
        .i32(0);
    let (_, decoded) = Response::decode(&frame(METADATA | RESPONSE, 1, &metadata.bytes)).unwrap();
    assert_eq!(
        format!("{decoded:?}"),
        r#"Response { header: Header { key: 15, version: 1 }, kind: Metadata(MetadataResponse { correlation_id: 7, brokers: [Broker { reference: 0, host: "", port: 5552 }], stream_metadata: [StreamMetadata { stream_name: "", code: StreamDoesNotExist, leader_reference: 0, replicas_references: [] }] }) }"#
    );
}

#[test]
fn frames_that_used_to_panic_or_desynchronise_fail_cleanly() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a string length below -1",
            frame(METADATA_UPDATE, 1, &Wire::default().u16(6).i16(-2).bytes),
        ),
        // A frame whose size is too small for its command: upstream read
        // on into whatever followed.
        (
            "a publish confirm cut short by its frame size",
            frame(PUBLISH_CONFIRM, 1, &Wire::default().raw(&[4]).u32(3).bytes),
        ),
        (
            "a frame too short for its header",
            vec![0, 0, 0, 2, 0x00, 0x10],
        ),
        // Upstream reserved capacity for whatever count a frame claimed:
        // negative ones overflowed, huge ones exhausted memory.
        (
            "an array with a negative count",
            frame(PUBLISH_CONFIRM, 1, &Wire::default().raw(&[4]).i32(-1).bytes),
        ),
        (
            "peer properties claiming u32::MAX entries",
            frame(
                PEER_PROPERTIES | RESPONSE,
                1,
                &Wire::default().u32(1).u16(1).u32(u32::MAX).bytes,
            ),
        ),
        (
            "a chunk claiming u32::MAX records",
            frame(
                DELIVER,
                1,
                &Wire::default()
                    .raw(&[3, 0x50, 0])
                    .u16(1)
                    .u32(u32::MAX)
                    .raw(&[0; 24])
                    .u32(0)
                    .u32(0)
                    .u32(0)
                    .u32(0)
                    .bytes,
            ),
        ),
        // A sub-entry batch (compressed or not) starts with its top bit set,
        // which the decoder reads as a negative record length: it does not
        // support them, and now says so instead of panicking.
        (
            "a chunk entry that is a sub-entry batch",
            deliver_with_entry(
                &Wire::default()
                    .raw(&[0x80]) // sub-entry batch, uncompressed
                    .u16(1) // records
                    .u32(8) // uncompressed length
                    .u32(8) // length
                    .u32(4) // the record's size, then the record: a null body
                    .raw(&amqp_value(&[0x40]))
                    .bytes,
            ),
        ),
        // AMQP maps hold pairs: an odd count underflowed a counter.
        (
            "an AMQP map with an odd element count",
            deliver_with_record(&amqp_value(&[0xc1, 0x02, 0x01, 0x40])),
        ),
        // Every level of nesting recursed on the stack: 100 000 levels
        // (900 KB, under the broker's default 1 MiB frame) overflowed it,
        // which aborts the process. Any publisher can write such a message.
        (
            "AMQP lists nested 100 000 deep",
            deliver_with_record(&amqp_value(&nested_lists(100_000))),
        ),
        // A header section (five fields) claiming u32::MAX fields: upstream
        // spun through the unknown ones without reading anything.
        (
            "an AMQP header claiming u32::MAX fields",
            deliver_with_record(
                &[
                    &[0x00, 0x53, 0x70, 0xd0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff][..],
                    &[0x40; 5],
                ]
                .concat(),
            ),
        ),
    ];
    for (what, bytes) in cases {
        assert_fails_for_good(what, &bytes);
    }
}

#[test]
fn an_amqp_map_keyed_by_a_map_decodes() {
    // A map whose key is an empty map; hashing it hit unimplemented!().
    let record = amqp_value(&[0xc1, 0x05, 0x02, 0xc1, 0x01, 0x00, 0x40]);
    let deliver = deliver_with_record(&record);
    let (rest, decoded) = Response::decode(&deliver).unwrap();
    assert!(rest.is_empty());
    match decoded.kind() {
        ResponseKind::Deliver(deliver) => assert_eq!(deliver.messages.len(), 1),
        other => panic!("decoded as {other:?}"),
    }
}

/// Keys `Response::decode` dispatches on, as a broker sends them.
const KNOWN_KEYS: &[u16] = &[
    OPEN | RESPONSE,
    CLOSE,
    CLOSE | RESPONSE,
    PEER_PROPERTIES | RESPONSE,
    SASL_HANDSHAKE | RESPONSE,
    SASL_AUTHENTICATE | RESPONSE,
    CREATE_STREAM | RESPONSE,
    TUNE,
    DELIVER,
    HEARTBEAT,
    METADATA | RESPONSE,
    METADATA_UPDATE,
    PUBLISH_CONFIRM,
    PUBLISH_ERROR,
    QUERY_OFFSET | RESPONSE,
    QUERY_PUBLISHER_SEQUENCE | RESPONSE,
    CREDIT | RESPONSE,
    EXCHANGE_COMMAND_VERSIONS | RESPONSE,
    PARTITIONS | RESPONSE,
    ROUTE | RESPONSE,
    CONSUMER_UPDATE,
    CONSUMER_UPDATE | RESPONSE,
];

/// What holds for any input: no panic; a response consumes exactly the
/// frame its size announces; `Incomplete` only while that frame is not all
/// there.
fn decode_obeys_the_framing(input: &[u8]) -> std::result::Result<(), TestCaseError> {
    let frame_end = input
        .get(..4)
        .map(|size| 4 + u32::from_be_bytes(size.try_into().unwrap()) as usize);
    match Response::decode(input) {
        Ok((rest, _)) => prop_assert_eq!(Some(input.len() - rest.len()), frame_end),
        Err(DecodeError::Incomplete(_)) => {
            prop_assert!(frame_end.is_none_or(|end| input.len() < end))
        }
        Err(_) => prop_assert!(frame_end.is_some_and(|end| input.len() >= end)),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_obeys_the_framing(&input)?;
    }

    #[test]
    fn known_commands_with_arbitrary_bodies_never_panic(
        key in prop::sample::select(KNOWN_KEYS),
        version in 1u16..=2,
        body in prop::collection::vec(any::<u8>(), 0..300),
        next in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut input = frame(key, version, &body);
        input.extend_from_slice(&next);
        decode_obeys_the_framing(&input)?;
    }

    #[test]
    fn corrupted_responses_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let cases = cases();
        let mut input = cases[which.index(cases.len())].frame.clone();
        for (at, byte) in edits {
            let at = at.index(input.len());
            input[at] = byte;
        }
        decode_obeys_the_framing(&input)?;
        decode_obeys_the_framing(&input[..cut.index(input.len())])?;
    }
}

/// A broker that speaks just enough of the protocol for `Client::connect`,
/// and writes every frame in two parts with a pause between, cut inside its
/// last string (or in its middle when it has none), so that the client reads
/// each frame in two.
struct SplittingBroker {
    writer: Arc<Mutex<OwnedWriteHalf>>,
}

impl SplittingBroker {
    async fn send(writer: &Mutex<OwnedWriteHalf>, key: u16, wire: Wire) {
        let bytes = frame(key, 1, &wire.bytes);
        // Body offsets start after size, key and version.
        let cut = wire
            .last_string
            .map_or(bytes.len() / 2, |(start, end)| 8 + (start + end) / 2);
        let mut writer = writer.lock().await;
        writer.write_all(&bytes[..cut]).await.unwrap();
        writer.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.write_all(&bytes[cut..]).await.unwrap();
        writer.flush().await.unwrap();
    }

    /// Listens on a free port and answers the one client that connects.
    async fn start() -> (u16, tokio::sync::oneshot::Receiver<SplittingBroker>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connected, broker) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let (mut reader, writer) = socket.into_split();
            let writer = Arc::new(Mutex::new(writer));
            let _ = connected.send(SplittingBroker {
                writer: writer.clone(),
            });
            loop {
                let mut size = [0; 4];
                if reader.read_exact(&mut size).await.is_err() {
                    return;
                }
                let mut request = vec![0; u32::from_be_bytes(size) as usize];
                reader.read_exact(&mut request).await.unwrap();
                let key = u16::from_be_bytes([request[0], request[1]]);
                let correlation = request
                    .get(4..8)
                    .map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap()));
                let ok = Wire::default().u32(correlation).u16(1);
                let answer = match key {
                    PEER_PROPERTIES => ok.map(&[("product", "RabbitMQ")]),
                    SASL_HANDSHAKE => ok.strs(&["PLAIN"]),
                    SASL_AUTHENTICATE => {
                        Self::send(&writer, key | RESPONSE, ok).await;
                        // No heartbeats: the client's would need answers.
                        Self::send(&writer, TUNE, Wire::default().u32(1_048_576).u32(0)).await;
                        continue;
                    }
                    OPEN => ok.map(&[("advertised_host", "localhost")]),
                    EXCHANGE_COMMAND_VERSIONS => ok.i32(1).u16(DELIVER).u16(1).u16(2),
                    METADATA => Wire::default()
                        .u32(correlation)
                        .i32(1)
                        .u16(0)
                        .str("rabbit-1")
                        .u32(5552)
                        .i32(1)
                        .str("orders-2")
                        .u16(1)
                        .u16(0)
                        .i32(0),
                    CLOSE => ok,
                    // The client's answer to the tune.
                    _ => continue,
                };
                Self::send(&writer, key | RESPONSE, answer).await;
            }
        });
        (port, broker)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_reads_frames_split_inside_strings() {
    let within = Duration::from_secs(10);
    let (port, broker) = SplittingBroker::start().await;
    let options = ClientOptions::builder()
        .host("127.0.0.1")
        .port(port)
        .heartbeat(0)
        .build();
    // Every handshake answer arrives in two reads; a decoder panic would kill
    // the connection task and leave the handshake waiting for ever.
    let client = tokio::time::timeout(within, Client::connect(options))
        .await
        .expect("the handshake never completed: the connection task died")
        .expect("the handshake failed");
    let broker = broker.await.unwrap();

    let (events, mut received) = mpsc::unbounded_channel::<String>();
    client
        .set_handler(move |item: MessageResult| {
            let events = events.clone();
            async move {
                let event = match item {
                    Some(Ok(response)) => format!("{:?}", response.kind()),
                    Some(Err(e)) => format!("error: {e}"),
                    None => "closed".to_string(),
                };
                let _ = events.send(event);
                Ok(())
            }
        })
        .await;

    // The unsolicited frame seen killing partlog's connections.
    SplittingBroker::send(
        &broker.writer,
        METADATA_UPDATE,
        Wire::default().u16(6).str("orders-2"),
    )
    .await;
    let event = tokio::time::timeout(within, received.recv())
        .await
        .expect("the metadata update never reached the handler: the connection task died");
    assert_eq!(
        event.as_deref(),
        Some(
            r#"MetadataUpdate(MetadataUpdateCommand { code: StreamNotAvailable, stream: "orders-2" })"#
        )
    );

    // And the connection still answers calls.
    let metadata = tokio::time::timeout(within, client.metadata(vec!["orders-2".into()]))
        .await
        .expect("the metadata call hung")
        .expect("the metadata call failed");
    let orders = &metadata["orders-2"];
    assert_eq!(orders.response_code, ResponseCode::Ok);
    assert_eq!(
        (orders.leader.host.as_str(), orders.leader.port),
        ("rabbit-1", 5552)
    );
    tokio::time::timeout(within, client.close())
        .await
        .expect("closing hung")
        .expect("closing failed");
}
