//! A minimal stream-protocol connection for partlog's metadata queries.
//!
//! A [`RawConnection`] speaks just enough of the protocol (peer properties,
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

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::node::{Node, PartitionPlacement};
use super::tls::{self, BrokerStream, BrokerTls};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::telemetry::{ConnectionKind, OpenConnection};

const PEER_PROPERTIES: u16 = 0x0011;
const SASL_HANDSHAKE: u16 = 0x0012;
const SASL_AUTHENTICATE: u16 = 0x0013;
const TUNE: u16 = 0x0014;
const OPEN: u16 = 0x0015;
const CLOSE: u16 = 0x0016;
const HEARTBEAT: u16 = 0x0017;
const METADATA: u16 = 0x000f;
const PARTITIONS: u16 = 0x0019;
const STREAM_STATS: u16 = 0x001c;
const RESPONSE: u16 = 0x8000;

const CODE_OK: u16 = 0x01;
const CODE_STREAM_DOES_NOT_EXIST: u16 = 0x02;
const CODE_STREAM_NOT_AVAILABLE: u16 = 0x06;
const CODE_AUTHENTICATION_FAILURE: u16 = 0x08;
const CODE_VIRTUAL_HOST_ACCESS_FAILURE: u16 = 0x0c;

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

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub vhost: String,
    /// `None`: plain TCP.
    pub tls: Option<std::sync::Arc<BrokerTls>>,
}

pub struct RawConnection {
    io: BufReader<BrokerStream>,
    next_correlation: u32,
    broker_frame_max: u32,
    /// Counted while it lives: the socket closes when it is dropped.
    _counted: OpenConnection,
}

impl RawConnection {
    pub async fn open(credentials: &Credentials, timeout: Duration) -> Result<Self> {
        tokio::time::timeout(timeout, Self::handshake(credentials))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "broker {}:{} did not complete the stream protocol handshake within {:?}",
                    credentials.host, credentials.port, timeout
                ))
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
        let mut conn = RawConnection {
            io: BufReader::new(stream),
            next_correlation: 1,
            broker_frame_max: 0,
            _counted: OpenConnection::new(ConnectionKind::Query),
        };

        let mut body = Vec::new();
        put_u32(&mut body, 1);
        put_string(&mut body, "connection_name")?;
        put_string(&mut body, "partlog-queries")?;
        conn.call(PEER_PROPERTIES, &body, |code| {
            unexpected(PEER_PROPERTIES, code)
        })
        .await?;
        conn.call(SASL_HANDSHAKE, &[], |code| unexpected(SASL_HANDSHAKE, code))
            .await?;

        let mut body = Vec::new();
        put_string(&mut body, "PLAIN")?;
        let plain = format!("\0{}\0{}", credentials.user, credentials.password.expose());
        put_u32(&mut body, plain.len() as u32);
        body.extend_from_slice(plain.as_bytes());
        let user = &credentials.user;
        conn.call(SASL_AUTHENTICATE, &body, |code| match code {
            CODE_AUTHENTICATION_FAILURE => Error::FailedPrecondition(format!(
                "the broker refused user {user:?}: check broker.user and broker.password"
            )),
            code => unexpected(SASL_AUTHENTICATE, code),
        })
        .await?;

        // The server tunes right after authentication; answer with its frame
        // size and heartbeats off.
        let (key, payload) = conn.read_frame().await?;
        if key != TUNE || payload.len() < 8 {
            return Err(Error::Internal(format!(
                "expected the broker's tune frame, got key {key:#06x}"
            )));
        }
        conn.broker_frame_max = u32::from_be_bytes(payload[0..4].try_into().expect("4 bytes"));
        let mut tune = Vec::new();
        put_u32(&mut tune, conn.broker_frame_max);
        put_u32(&mut tune, 0);
        conn.write_frame(TUNE, &tune).await?;

        let mut body = Vec::new();
        put_string(&mut body, &credentials.vhost)?;
        conn.call(OPEN, &body, |code| match code {
            CODE_VIRTUAL_HOST_ACCESS_FAILURE => Error::FailedPrecondition(format!(
                "user {user:?} cannot access virtual host {:?}: check broker.vhost",
                credentials.vhost
            )),
            code => unexpected(OPEN, code),
        })
        .await?;
        Ok(conn)
    }

    pub async fn stream_stats(&mut self, stream: &str) -> Result<StreamStats> {
        let mut body = Vec::new();
        put_string(&mut body, stream)?;
        let payload = self
            .call(STREAM_STATS, &body, |code| match code {
                CODE_STREAM_DOES_NOT_EXIST => {
                    Error::NotFound(format!("stream {stream:?} does not exist"))
                }
                CODE_STREAM_NOT_AVAILABLE => Error::Unavailable(format!(
                    "stream {stream:?} is not available on the broker (no leader elected yet?)"
                )),
                code => unexpected(STREAM_STATS, code),
            })
            .await?;
        let mut reader = Reader(&payload);
        let count = reader.u32()?;
        let mut stats = HashMap::new();
        for _ in 0..count {
            let key = reader.string()?;
            let value = reader.i64()?;
            stats.insert(key, value);
        }
        tracing::debug!(stream, ?stats, "stream stats");
        let chunk = |name: &str| stats.get(name).and_then(|v| u64::try_from(*v).ok());
        Ok(StreamStats {
            first_chunk_id: chunk("first_chunk_id"),
            committed_chunk_id: chunk("committed_chunk_id"),
        })
    }

    /// The partition streams of a super stream in the broker's order.
    pub async fn partitions(&mut self, super_stream: &str) -> Result<Vec<String>> {
        let mut body = Vec::new();
        put_string(&mut body, super_stream)?;
        let payload = self
            .call(PARTITIONS, &body, |code| match code {
                CODE_STREAM_DOES_NOT_EXIST => {
                    Error::NotFound(format!("stream {super_stream:?} does not exist"))
                }
                code => unexpected(PARTITIONS, code),
            })
            .await?;
        let mut reader = Reader(&payload);
        let count = reader.u32()?;
        let partitions = (0..count)
            .map(|_| reader.string())
            .collect::<Result<Vec<_>>>()?;
        if partitions.is_empty() {
            return Err(Error::NotFound(format!(
                "stream {super_stream:?} does not exist"
            )));
        }
        Ok(partitions)
    }

    /// A round trip that proves the connection works: metadata of no
    /// stream.
    pub async fn ping(&mut self) -> Result<()> {
        self.placements(&[]).await.map(drop)
    }

    /// Leader and replicas of each stream, in the order given.
    pub async fn placements(&mut self, streams: &[String]) -> Result<Vec<PartitionPlacement>> {
        let mut body = Vec::new();
        put_u32(&mut body, streams.len() as u32);
        for stream in streams {
            put_string(&mut body, stream)?;
        }
        let payload = self.request(METADATA, &body).await?;
        decode_placements(&payload, streams)
    }

    /// Sends a request and returns the response body after its code, or the
    /// error `on_code` makes of a code other than OK.
    async fn call(
        &mut self,
        key: u16,
        body: &[u8],
        on_code: impl FnOnce(u16) -> Error,
    ) -> Result<Vec<u8>> {
        let payload = self.request(key, body).await?;
        let mut reader = Reader(&payload);
        match reader.u16()? {
            CODE_OK => Ok(reader.0.to_vec()),
            code => Err(on_code(code)),
        }
    }

    /// Sends a request and returns the response body after its correlation
    /// id.
    async fn request(&mut self, key: u16, body: &[u8]) -> Result<Vec<u8>> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut payload = Vec::with_capacity(body.len() + 4);
        put_u32(&mut payload, correlation);
        payload.extend_from_slice(body);
        self.write_frame(key, &payload).await?;
        loop {
            let (response_key, payload) = self.read_frame().await?;
            match response_key {
                HEARTBEAT => continue,
                CLOSE => {
                    return Err(Error::Unavailable(
                        "the broker closed the connection (shutting down?)".into(),
                    ))
                }
                // Out of step with the broker: the owner reconnects.
                _ if response_key != key | RESPONSE => {
                    return Err(Error::Unavailable(format!(
                        "expected a response to {key:#06x}, got frame {response_key:#06x}"
                    )))
                }
                _ => {}
            }
            let mut reader = Reader(&payload);
            if reader.u32()? != correlation {
                return Err(Error::Internal("response correlation id mismatch".into()));
            }
            return Ok(reader.0.to_vec());
        }
    }

    async fn write_frame(&mut self, key: u16, body: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(body.len() + 8);
        put_u32(&mut frame, (body.len() + 4) as u32);
        frame.extend_from_slice(&key.to_be_bytes());
        frame.extend_from_slice(&1u16.to_be_bytes());
        frame.extend_from_slice(body);
        let io = self.io.get_mut();
        io.write_all(&frame).await.map_err(broken)?;
        io.flush().await.map_err(broken)
    }

    async fn read_frame(&mut self) -> Result<(u16, Vec<u8>)> {
        let size = self.io.read_u32().await.map_err(broken)?;
        if !(4..=MAX_RESPONSE_FRAME).contains(&size) {
            return Err(Error::Internal(format!("unexpected frame size {size}")));
        }
        let mut frame = vec![0; size as usize];
        self.io.read_exact(&mut frame).await.map_err(broken)?;
        let key = u16::from_be_bytes([frame[0], frame[1]]);
        Ok((key, frame.split_off(4)))
    }
}

/// A metadata response body (after the correlation id): brokers, then each
/// stream's code, leader and replicas by broker reference.
fn decode_placements(payload: &[u8], streams: &[String]) -> Result<Vec<PartitionPlacement>> {
    let mut reader = Reader(payload);
    let mut nodes = HashMap::new();
    for _ in 0..reader.u32()? {
        let reference = reader.u16()?;
        let host = reader.string()?;
        let port = u16::try_from(reader.u32()?)
            .map_err(|_| Error::Internal("the broker advertised a port above 65535".into()))?;
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
            (CODE_STREAM_DOES_NOT_EXIST, _) => Err(Error::NotFound(format!(
                "partition stream {stream:?} does not exist"
            ))),
            (CODE_OK | CODE_STREAM_NOT_AVAILABLE, _) => Err(Error::Unavailable(format!(
                "partition stream {stream:?} has no leader at the moment"
            ))),
            (code, _) => Err(Error::Unavailable(format!(
                "partition stream {stream:?} is not available (code {code:#04x})"
            ))),
        };
        answers.insert(stream, placement);
    }
    streams
        .iter()
        .map(|stream| {
            answers.remove(stream).unwrap_or_else(|| {
                Err(Error::Internal(format!(
                    "the broker's metadata answer left out stream {stream:?}"
                )))
            })
        })
        .collect()
}

fn unexpected(key: u16, code: u16) -> Error {
    Error::Internal(format!(
        "the broker answered command {key:#06x} with code {code:#04x}"
    ))
}

fn broken(e: std::io::Error) -> Error {
    Error::Unavailable(format!("broker connection lost: {e}"))
}

fn put_u32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_be_bytes());
}

fn put_string(buf: &mut Vec<u8>, value: &str) -> Result<()> {
    let len = i16::try_from(value.len())
        .map_err(|_| Error::InvalidArgument(format!("{value:?} is too long for the protocol")))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Big-endian reader over a response body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Error::Internal("truncated broker response".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u16()? as i16;
        if len < 0 {
            return Ok(String::new());
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Internal("broker sent a non-UTF-8 string".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_decodes_a_stats_body() {
        let mut body = Vec::new();
        put_u32(&mut body, 2);
        put_string(&mut body, "first_chunk_id").unwrap();
        body.extend_from_slice(&0i64.to_be_bytes());
        put_string(&mut body, "committed_chunk_id").unwrap();
        body.extend_from_slice(&(-1i64).to_be_bytes());
        let mut r = Reader(&body);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(r.string().unwrap(), "first_chunk_id");
        assert_eq!(r.i64().unwrap(), 0);
        assert_eq!(r.string().unwrap(), "committed_chunk_id");
        assert_eq!(r.i64().unwrap(), -1);
        assert!(
            r.u16().is_err(),
            "reading past the end is an error, not a panic"
        );
    }

    #[test]
    fn metadata_names_leader_and_replicas_by_reference_and_keeps_the_asked_order() {
        let mut body = Vec::new();
        put_u32(&mut body, 2);
        for (reference, port) in [(0u16, 5552u32), (1, 5553)] {
            body.extend_from_slice(&reference.to_be_bytes());
            put_string(&mut body, "rabbit").unwrap();
            put_u32(&mut body, port);
        }
        put_u32(&mut body, 3);
        for (stream, code, leader, replicas) in [
            ("s-1", CODE_OK, 1u16, vec![0u16]),
            ("s-0", CODE_OK, 0, vec![1]),
            ("gone", CODE_STREAM_DOES_NOT_EXIST, u16::MAX, vec![]),
        ] {
            put_string(&mut body, stream).unwrap();
            body.extend_from_slice(&code.to_be_bytes());
            body.extend_from_slice(&leader.to_be_bytes());
            put_u32(&mut body, replicas.len() as u32);
            for r in replicas {
                body.extend_from_slice(&r.to_be_bytes());
            }
        }
        let at = |port| Node {
            host: "rabbit".into(),
            port,
        };
        let streams = ["s-0".to_string(), "s-1".to_string()];
        let placements = decode_placements(&body, &streams).unwrap();
        assert_eq!(placements[0].leader, at(5552));
        assert_eq!(placements[0].replicas, [at(5553)]);
        assert_eq!(placements[1].leader, at(5553));

        let err = decode_placements(&body, &["gone".to_string()]).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        let err = decode_placements(&body[..body.len() - 3], &streams).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "truncated: {err:?}");
    }
}
