//! A minimal stream-protocol connection for partlog's metadata queries.
//!
//! A [`MetadataConnection`] speaks just enough of the protocol (peer properties,
//! SASL PLAIN, tune, open) to send, one at a time:
//! - `StreamStats`, which rabbitmq-stream-client 0.11 does not offer;
//! - `PartitionsQuery` and `Metadata`, the queries behind every stream
//!   lookup. (They came here when the client library's decoder panicked on
//!   strings split across reads, which the patched copy in `patches/` no
//!   longer does; they stay, since one plain request/response connection
//!   answers every metadata query without the library's dispatcher tasks.)
//!
//! It also learns the broker's `frame_max` from the tune exchange, which the
//! client library keeps to itself. Heartbeats are tuned off: the connection
//! is idle between requests and is reopened by its owner after any error.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::BufReader;

use bytes::Bytes;

use super::wire::{
    handshake, read_frame, unexpected, write_frame, Body, Credentials, Reader, CLOSE, CODE_OK,
    CODE_STREAM_DOES_NOT_EXIST, CODE_STREAM_NOT_AVAILABLE, HEARTBEAT, METADATA, PARTITIONS,
    RESPONSE, STREAM_STATS,
};
use crate::broker::node::{Node, PartitionPlacement};
use crate::broker::tls::{self, BrokerStream};
use crate::error::{Error, Reason, Result};
use crate::telemetry::{ConnectionKind, OpenConnection};

/// Largest response frame accepted; stats answers are a few hundred bytes.
const MAX_RESPONSE_FRAME: u32 = 1024 * 1024;

/// Chunk ids of one stream as the broker reports them. A chunk id is the
/// offset of the chunk's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// First chunk still retained; `None` for an empty stream.
    pub first_chunk_id: Option<u64>,
    /// Last chunk committed (replicated to a quorum and readable);
    /// `None` for an empty stream.
    pub committed_chunk_id: Option<u64>,
}

pub struct MetadataConnection {
    io: BufReader<BrokerStream>,
    next_correlation: u32,
    broker_frame_max: u32,
    /// Counted while it lives: the socket closes when it is dropped.
    _counted: OpenConnection,
}

impl MetadataConnection {
    pub async fn open(credentials: &Credentials, timeout: Duration) -> Result<Self> {
        tokio::time::timeout(timeout, Self::handshake(credentials))
            .await
            .map_err(|_| {
                Error::new(
                    Reason::BrokerUnavailable,
                    format!(
                        "broker {}:{} did not complete the stream protocol handshake within {:?}",
                        credentials.host, credentials.port, timeout
                    ),
                )
            })?
    }

    /// The broker's `frame_max` (0 = unlimited).
    pub fn broker_frame_max(&self) -> u32 {
        self.broker_frame_max
    }

    async fn handshake(credentials: &Credentials) -> Result<Self> {
        let stream = tls::connect(
            &credentials.host,
            credentials.port,
            credentials.tls.as_deref(),
        )
        .await?;
        let mut io = BufReader::new(stream);
        // Heartbeats off: the connection is idle between requests and is
        // reopened by its owner after any error.
        let tuned = handshake(&mut io, credentials, "partlog-queries", 0).await?;
        Ok(MetadataConnection {
            io,
            next_correlation: 1,
            broker_frame_max: tuned.frame_max,
            _counted: OpenConnection::new(ConnectionKind::Query),
        })
    }

    pub async fn stream_stats(&mut self, stream: &str) -> Result<StreamStats> {
        let body = Body::default().string(stream)?;
        let payload = self
            .call(STREAM_STATS, &body.0, |code| match code {
                CODE_STREAM_DOES_NOT_EXIST => Error::new(
                    Reason::StreamNotFound,
                    format!("stream {stream:?} does not exist"),
                ),
                CODE_STREAM_NOT_AVAILABLE => Error::new(
                    Reason::BrokerBusy,
                    format!(
                        "stream {stream:?} is not available on the broker (no leader elected yet?)"
                    ),
                ),
                code => unexpected(STREAM_STATS, code),
            })
            .await?;
        let stats = decode_stats(payload)?;
        tracing::debug!(stream, ?stats, "stream stats");
        Ok(stats)
    }

    /// The partition streams of a super stream in the broker's order.
    pub async fn partitions(&mut self, super_stream: &str) -> Result<Vec<String>> {
        let body = Body::default().string(super_stream)?;
        let payload = self
            .call(PARTITIONS, &body.0, |code| match code {
                CODE_STREAM_DOES_NOT_EXIST => Error::new(
                    Reason::StreamNotFound,
                    format!("stream {super_stream:?} does not exist"),
                ),
                code => unexpected(PARTITIONS, code),
            })
            .await?;
        decode_partitions(payload, super_stream)
    }

    /// A round trip that proves the connection works: metadata of no
    /// stream.
    pub async fn ping(&mut self) -> Result<()> {
        self.placements(&[]).await.map(drop)
    }

    /// Leader and replicas of each stream, in the order given.
    pub async fn placements(&mut self, streams: &[String]) -> Result<Vec<PartitionPlacement>> {
        let mut body = Body::default().u32(streams.len() as u32);
        for stream in streams {
            body = body.string(stream)?;
        }
        let payload = self.request(METADATA, &body.0).await?;
        decode_placements(payload, streams)
    }

    /// Sends a request and returns the response body after its code, or the
    /// error `on_code` makes of a code other than OK.
    async fn call(
        &mut self,
        key: u16,
        body: &[u8],
        on_code: impl FnOnce(u16) -> Error,
    ) -> Result<Bytes> {
        let mut reader = Reader::new(self.request(key, body).await?);
        match reader.u16()? {
            CODE_OK => Ok(reader.rest()),
            code => Err(on_code(code)),
        }
    }

    /// Sends a request and returns the response body after its correlation
    /// id.
    async fn request(&mut self, key: u16, body: &[u8]) -> Result<Bytes> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut payload = Body::default().u32(correlation);
        payload.0.extend_from_slice(body);
        write_frame(self.io.get_mut(), key, &payload.0).await?;
        loop {
            let response = read_frame(&mut self.io, MAX_RESPONSE_FRAME).await?;
            match response.key {
                HEARTBEAT => continue,
                CLOSE => {
                    return Err(Error::new(
                        Reason::BrokerUnavailable,
                        "the broker closed the connection (shutting down?)",
                    ))
                }
                // Out of step with the broker: the owner reconnects.
                key_seen if key_seen != key | RESPONSE => {
                    return Err(Error::new(
                        Reason::BrokerUnavailable,
                        format!("expected a response to {key:#06x}, got frame {key_seen:#06x}"),
                    ))
                }
                _ => {}
            }
            let mut reader = Reader::new(response.body);
            if reader.u32()? != correlation {
                return Err(Error::new(
                    Reason::BrokerProtocolError,
                    "response correlation id mismatch",
                ));
            }
            return Ok(reader.rest());
        }
    }
}

/// A stream statistics answer (after its code): named counters, of which
/// partlog keeps the first and the last committed chunk id.
fn decode_stats(payload: Bytes) -> Result<StreamStats> {
    let mut reader = Reader::new(payload);
    let mut stats = HashMap::new();
    for _ in 0..reader.u32()? {
        let key = reader.string()?;
        let value = reader.i64()?;
        stats.insert(key, value);
    }
    let chunk = |name: &str| stats.get(name).and_then(|v| u64::try_from(*v).ok());
    Ok(StreamStats {
        first_chunk_id: chunk("first_chunk_id"),
        committed_chunk_id: chunk("committed_chunk_id"),
    })
}

/// A partitions answer (after its code): the partition streams in the
/// broker's order; none means the super stream does not exist.
fn decode_partitions(payload: Bytes, super_stream: &str) -> Result<Vec<String>> {
    let mut reader = Reader::new(payload);
    let partitions = (0..reader.u32()?)
        .map(|_| reader.string())
        .collect::<Result<Vec<_>>>()?;
    if partitions.is_empty() {
        return Err(Error::new(
            Reason::StreamNotFound,
            format!("stream {super_stream:?} does not exist"),
        ));
    }
    Ok(partitions)
}

/// A metadata response body (after the correlation id): brokers, then each
/// stream's code, leader and replicas by broker reference.
fn decode_placements(payload: Bytes, streams: &[String]) -> Result<Vec<PartitionPlacement>> {
    let mut reader = Reader::new(payload);
    let mut nodes = HashMap::new();
    for _ in 0..reader.u32()? {
        let reference = reader.u16()?;
        let host = reader.string()?;
        let port = u16::try_from(reader.u32()?).map_err(|_| {
            Error::new(
                Reason::BrokerProtocolError,
                "the broker advertised a port above 65535",
            )
        })?;
        nodes.insert(reference, Node { host, port });
    }
    let mut answers = HashMap::new();
    for _ in 0..reader.u32()? {
        let stream = reader.string()?;
        let code = reader.u16()?;
        let leader = reader.u16()?;
        let replicas = (0..reader.u32()?)
            .map(|_| reader.u16())
            .collect::<Result<Vec<_>>>()?;
        let placement = match (code, nodes.get(&leader)) {
            (CODE_OK, Some(leader)) => Ok(PartitionPlacement {
                leader: leader.clone(),
                replicas: replicas
                    .iter()
                    .filter_map(|r| nodes.get(r).cloned())
                    .collect(),
            }),
            (CODE_STREAM_DOES_NOT_EXIST, _) => Err(Error::new(
                Reason::PartitionNotFound,
                format!("partition stream {stream:?} does not exist"),
            )),
            (CODE_OK | CODE_STREAM_NOT_AVAILABLE, _) => Err(Error::new(
                Reason::BrokerBusy,
                format!("partition stream {stream:?} has no leader at the moment"),
            )),
            (code, _) => Err(Error::new(
                Reason::BrokerUnavailable,
                format!("partition stream {stream:?} is not available (code {code:#04x})"),
            )),
        };
        answers.insert(stream, placement);
    }
    // A stream asked for twice is answered twice, from its one answer.
    streams
        .iter()
        .map(|stream| {
            answers.get(stream).cloned().unwrap_or_else(|| {
                Err(Error::new(
                    Reason::BrokerProtocolError,
                    format!("the broker's metadata answer left out stream {stream:?}"),
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn metadata_names_leader_and_replicas_by_reference_and_keeps_the_asked_order() {
        let mut body = Body::default().u32(2);
        for (reference, port) in [(0u16, 5552u32), (1, 5553)] {
            body = body.u16(reference).string("rabbit").unwrap().u32(port);
        }
        body = body.u32(3);
        for (stream, code, leader, replicas) in [
            ("s-1", CODE_OK, 1u16, vec![0u16]),
            ("s-0", CODE_OK, 0, vec![1]),
            ("gone", CODE_STREAM_DOES_NOT_EXIST, u16::MAX, vec![]),
        ] {
            body = body.string(stream).unwrap().u16(code).u16(leader);
            body = body.u32(replicas.len() as u32);
            for r in replicas {
                body = body.u16(r);
            }
        }
        let body = body.0;
        let at = |port| Node {
            host: "rabbit".into(),
            port,
        };
        let streams = ["s-0".to_string(), "s-1".to_string()];
        let placements = decode_placements(body.clone().into(), &streams).unwrap();
        assert_eq!(placements[0].leader, at(5552));
        assert_eq!(placements[0].replicas, [at(5553)]);
        assert_eq!(placements[1].leader, at(5553));

        let err = decode_placements(body.clone().into(), &["gone".to_string()]).unwrap_err();
        assert!(err.kind() == Kind::NotFound, "{err:?}");
        let err = decode_placements(body[..body.len() - 3].to_vec().into(), &streams).unwrap_err();
        assert!(err.kind() == Kind::Internal, "truncated: {err:?}");
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::generative::{check, damaged};

        fn name() -> impl Strategy<Value = String> {
            "[a-z0-9.-]{0,20}"
        }

        fn stats() -> impl Strategy<Value = Vec<(String, i64)>> {
            prop::collection::vec((name(), any::<i64>()), 0..6)
        }

        fn encode_stats(stats: &[(String, i64)]) -> Vec<u8> {
            let mut body = Body::default().u32(stats.len() as u32);
            for (key, value) in stats {
                body = body.string(key).unwrap().u64(*value as u64);
            }
            body.0
        }

        type Metadata = (Vec<(u16, String, u16)>, Vec<(String, u16, u16, Vec<u16>)>);

        fn metadata() -> impl Strategy<Value = Metadata> {
            let brokers = prop::collection::vec((0u16..4, name(), any::<u16>()), 0..4);
            let code = prop_oneof![Just(CODE_OK), Just(CODE_STREAM_DOES_NOT_EXIST), 0u16..20];
            let replicas = prop::collection::vec(0u16..4, 0..3);
            let streams = prop::collection::vec((name(), code, 0u16..4, replicas), 0..4);
            (brokers, streams)
        }

        fn encode_metadata((brokers, streams): &Metadata) -> Vec<u8> {
            let mut body = Body::default().u32(brokers.len() as u32);
            for (reference, host, port) in brokers {
                body = body
                    .u16(*reference)
                    .string(host)
                    .unwrap()
                    .u32(u32::from(*port));
            }
            body = body.u32(streams.len() as u32);
            for (stream, code, leader, replicas) in streams {
                body = body.string(stream).unwrap().u16(*code).u16(*leader);
                body = body.u32(replicas.len() as u32);
                for replica in replicas {
                    body = body.u16(*replica);
                }
            }
            body.0
        }

        #[test]
        fn stats_and_partitions_read_back_as_written() {
            check(stats(), |stats| {
                let read = decode_stats(encode_stats(&stats).into()).unwrap();
                // The last value of a name counts, as in a map.
                let value = |name: &str| {
                    stats
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| u64::try_from(*v).ok())
                };
                prop_assert_eq!(read.first_chunk_id, value("first_chunk_id"));
                prop_assert_eq!(read.committed_chunk_id, value("committed_chunk_id"));
                let names: Vec<String> = stats.iter().map(|(k, _)| k.clone()).collect();
                let mut body = Body::default().u32(names.len() as u32);
                for name in &names {
                    body = body.string(name).unwrap();
                }
                match decode_partitions(body.0.into(), "s") {
                    Ok(read) => prop_assert_eq!(read, names),
                    Err(e) => prop_assert!(names.is_empty() && e.kind() == Kind::NotFound),
                }
                Ok(())
            });
        }

        #[test]
        fn metadata_reads_back_as_written() {
            check(metadata(), |metadata| {
                let (brokers, answers) = &metadata;
                let streams: Vec<String> = answers.iter().map(|s| s.0.clone()).collect();
                let read = decode_placements(encode_metadata(&metadata).into(), &streams);
                // References and names may repeat: the last one counts.
                let nodes: HashMap<u16, Node> = brokers
                    .iter()
                    .map(|(r, host, port)| {
                        (
                            *r,
                            Node {
                                host: host.clone(),
                                port: *port,
                            },
                        )
                    })
                    .collect();
                let last: HashMap<&String, _> = answers.iter().map(|a| (&a.0, a)).collect();
                let expected: Result<Vec<PartitionPlacement>> = streams
                    .iter()
                    .map(|stream| {
                        let (_, code, leader, replicas) = last[stream];
                        match (*code, nodes.get(leader)) {
                            (CODE_OK, Some(leader)) => Ok(PartitionPlacement {
                                leader: leader.clone(),
                                replicas: replicas
                                    .iter()
                                    .filter_map(|r| nodes.get(r).cloned())
                                    .collect(),
                            }),
                            (CODE_STREAM_DOES_NOT_EXIST, _) => {
                                Err(Error::new(Reason::PartitionNotFound, String::new()))
                            }
                            _ => Err(Error::new(Reason::BrokerUnavailable, String::new())),
                        }
                    })
                    .collect();
                match (read, expected) {
                    (Ok(read), Ok(expected)) => prop_assert_eq!(read, expected),
                    (Err(read), Err(expected)) => prop_assert_eq!(read.kind(), expected.kind()),
                    (read, expected) => prop_assert!(false, "read {read:?}, expected {expected:?}"),
                }
                Ok(())
            });
        }

        #[test]
        fn damaged_answers_are_errors_never_panics() {
            check(damaged(stats().prop_map(|s| encode_stats(&s))), |bytes| {
                let _ = decode_stats(bytes.clone().into());
                let _ = decode_partitions(bytes.into(), "s");
                Ok(())
            });
            check(
                damaged(metadata().prop_map(|m| encode_metadata(&m))),
                |bytes| {
                    let _ = decode_placements(bytes.into(), &["s".to_string()]);
                    Ok(())
                },
            );
        }
    }
}
