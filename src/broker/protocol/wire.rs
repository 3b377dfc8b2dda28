//! The stream protocol as partlog's own connections speak it: frame keys
//! and codes, building and parsing frame bodies, reading frames, and the
//! connection handshake (peer properties, SASL PLAIN, tune, open).
//!
//! Used by [`super::metadata`] (metadata queries) and [`super::reader`] (reading
//! partitions); producers and administration use the client library.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::broker::tls::BrokerTls;
use crate::config::Secret;
use crate::error::{Error, Reason, Result};

pub const METADATA: u16 = 0x000f;
pub const SUBSCRIBE: u16 = 0x0007;
pub const DELIVER: u16 = 0x0008;
pub const CREDIT: u16 = 0x0009;
pub const UNSUBSCRIBE: u16 = 0x000c;
pub const METADATA_UPDATE: u16 = 0x0010;
pub const PEER_PROPERTIES: u16 = 0x0011;
pub const SASL_HANDSHAKE: u16 = 0x0012;
pub const SASL_AUTHENTICATE: u16 = 0x0013;
pub const TUNE: u16 = 0x0014;
pub const OPEN: u16 = 0x0015;
pub const CLOSE: u16 = 0x0016;
pub const HEARTBEAT: u16 = 0x0017;
pub const PARTITIONS: u16 = 0x0019;
pub const CONSUMER_UPDATE: u16 = 0x001a;
pub const STREAM_STATS: u16 = 0x001c;
/// Set in the key of a response.
pub const RESPONSE: u16 = 0x8000;

pub const CODE_OK: u16 = 0x01;
pub const CODE_STREAM_DOES_NOT_EXIST: u16 = 0x02;
pub const CODE_STREAM_NOT_AVAILABLE: u16 = 0x06;
pub const CODE_AUTHENTICATION_FAILURE: u16 = 0x08;
pub const CODE_VIRTUAL_HOST_ACCESS_FAILURE: u16 = 0x0c;
pub const CODE_ACCESS_REFUSED: u16 = 0x10;
pub const CODE_PRECONDITION_FAILED: u16 = 0x11;

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

/// A frame body being built, big endian.
#[derive(Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }
    pub fn u16(mut self, value: u16) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    /// A protocol string: i16 length and UTF-8 bytes.
    pub fn string(mut self, value: &str) -> Result<Self> {
        let len = i16::try_from(value.len()).map_err(|_| {
            Error::new(
                Reason::BrokerProtocolError,
                format!("{value:?} is too long for the protocol"),
            )
        })?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(value.as_bytes());
        Ok(self)
    }
    /// Protocol bytes: i32 length and the bytes.
    pub fn bytes(mut self, value: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.0.extend_from_slice(value);
        self
    }
}

/// A whole frame: size, key, version 1, body.
pub fn frame(key: u16, body: &[u8]) -> Vec<u8> {
    // partlog's own frames are small requests: their sizes fit.
    let size = body.len().saturating_add(4);
    let mut frame = Vec::with_capacity(size.saturating_add(4));
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Reads broker bytes, big endian: running past their end is an error,
/// never a panic. Taking bytes gives a slice of the same buffer, not a
/// copy.
pub struct Reader(Bytes);

impl Reader {
    pub fn new(bytes: impl Into<Bytes>) -> Reader {
        Reader(bytes.into())
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }

    /// What is left, taken.
    pub fn rest(self) -> Bytes {
        self.0
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.0.len() < n {
            return Err(Error::new(
                Reason::BrokerProtocolError,
                format!(
                    "truncated broker frame: {n} more bytes expected, {} left",
                    self.0.len()
                ),
            ));
        }
        Ok(())
    }

    pub fn take(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    /// The next byte, not taken.
    pub fn peek_u8(&self) -> Option<u8> {
        self.0.first().copied()
    }

    pub fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    pub fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    pub fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    pub fn u64(&mut self) -> Result<u64> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    pub fn i64(&mut self) -> Result<i64> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    /// A protocol string; null (-1) reads as empty.
    pub fn string(&mut self) -> Result<String> {
        let Ok(len) = usize::try_from(self.u16()? as i16) else {
            return Ok(String::new());
        };
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::new(
                Reason::BrokerProtocolError,
                "the broker sent a non-UTF-8 string",
            )
        })
    }
}

/// A frame as read: its key (response bit included), version and body.
pub struct Frame {
    pub key: u16,
    pub version: u16,
    pub body: Bytes,
}

/// Bytes of a frame allocated before they arrive; a larger frame's buffer
/// grows with what arrives, so a peer that claims a large frame and sends
/// nothing costs no more than this.
const EAGER_FRAME_BYTES: u32 = 1024 * 1024;

/// Reads one frame; a size outside 4..=`max` is an error.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, max: u32) -> Result<Frame> {
    let size = io.read_u32().await.map_err(broken)?;
    if !(4..=max).contains(&size) {
        return Err(Error::new(
            Reason::BrokerProtocolError,
            format!("the broker sent a frame of {size} bytes (at most {max} expected)"),
        ));
    }
    let size = size as usize;
    let mut frame = BytesMut::with_capacity(size.min(EAGER_FRAME_BYTES as usize));
    while frame.len() < size {
        let missing = size.saturating_sub(frame.len());
        if frame.len() == frame.capacity() {
            // Doubles what arrived so far, up to the frame's size.
            frame.reserve(frame.len().min(missing));
        }
        let read = (&mut *io)
            .take(missing as u64)
            .read_buf(&mut frame)
            .await
            .map_err(broken)?;
        if read == 0 {
            return Err(broken(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    let mut frame = frame.freeze();
    let key = frame.get_u16();
    let version = frame.get_u16();
    Ok(Frame {
        key,
        version,
        body: frame,
    })
}

pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, key: u16, body: &[u8]) -> Result<()> {
    io.write_all(&frame(key, body)).await.map_err(broken)?;
    io.flush().await.map_err(broken)
}

pub fn broken(e: std::io::Error) -> Error {
    Error::new(
        Reason::BrokerUnavailable,
        format!("broker connection lost: {e}"),
    )
}

pub fn unexpected(key: u16, code: u16) -> Error {
    Error::new(
        Reason::BrokerProtocolError,
        format!("the broker answered command {key:#06x} with code {code:#04x}"),
    )
}

/// What the handshake settled.
pub struct Tuned {
    /// The broker's largest frame (0: unlimited).
    pub frame_max: u32,
}

/// Opens the connection on `io`: peer properties naming it `name`, SASL
/// PLAIN with the credentials, tune (the broker's frame size, heartbeats
/// every `heartbeat_secs` or off with 0), open the virtual host.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    credentials: &Credentials,
    name: &str,
    heartbeat_secs: u32,
) -> Result<Tuned> {
    let mut calls = Calls { io, correlation: 0 };
    let body = Body::default()
        .u32(1)
        .string("connection_name")?
        .string(name)?;
    calls
        .call(PEER_PROPERTIES, body, |code| {
            unexpected(PEER_PROPERTIES, code)
        })
        .await?;
    calls
        .call(SASL_HANDSHAKE, Body::default(), |code| {
            unexpected(SASL_HANDSHAKE, code)
        })
        .await?;
    let plain = format!("\0{}\0{}", credentials.user, credentials.password.expose());
    let body = Body::default().string("PLAIN")?.bytes(plain.as_bytes());
    let user = &credentials.user;
    calls
        .call(SASL_AUTHENTICATE, body, |code| match code {
            CODE_AUTHENTICATION_FAILURE => Error::new(
                Reason::BrokerAccessRefused,
                format!("the broker refused user {user:?}: check broker.user and broker.password"),
            ),
            code => unexpected(SASL_AUTHENTICATE, code),
        })
        .await?;
    // The broker tunes right after authentication; the answer takes its
    // frame size.
    let tune = read_frame(calls.io, HANDSHAKE_FRAME_MAX).await?;
    if tune.key != TUNE {
        return Err(Error::new(
            Reason::BrokerProtocolError,
            format!(
                "expected the broker's tune frame, got key {:#06x}",
                tune.key
            ),
        ));
    }
    let frame_max = Reader::new(tune.body).u32()?;
    let body = Body::default().u32(frame_max).u32(heartbeat_secs);
    write_frame(calls.io, TUNE, &body.0).await?;
    let body = Body::default().string(&credentials.vhost)?;
    calls
        .call(OPEN, body, |code| match code {
            CODE_VIRTUAL_HOST_ACCESS_FAILURE => Error::new(
                Reason::BrokerAccessRefused,
                format!(
                    "user {user:?} cannot access virtual host {:?}: check broker.vhost",
                    credentials.vhost
                ),
            ),
            code => unexpected(OPEN, code),
        })
        .await?;
    Ok(Tuned { frame_max })
}

/// Largest frame read during the handshake.
const HANDSHAKE_FRAME_MAX: u32 = 1024 * 1024;

/// Requests answered one at a time, as the handshake makes them.
struct Calls<'a, S> {
    io: &'a mut S,
    correlation: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Calls<'_, S> {
    /// Sends a request and checks its response's code.
    async fn call(
        &mut self,
        key: u16,
        body: Body,
        on_code: impl FnOnce(u16) -> Error,
    ) -> Result<()> {
        self.correlation = self.correlation.wrapping_add(1);
        let mut request = Body::default().u32(self.correlation);
        request.0.extend_from_slice(&body.0);
        write_frame(self.io, key, &request.0).await?;
        loop {
            let response = read_frame(self.io, HANDSHAKE_FRAME_MAX).await?;
            if response.key == HEARTBEAT {
                continue;
            }
            if response.key != key | RESPONSE {
                return Err(Error::new(
                    Reason::BrokerProtocolError,
                    format!(
                        "expected a response to {key:#06x}, got frame {:#06x}",
                        response.key
                    ),
                ));
            }
            let mut reader = Reader::new(response.body);
            reader.u32()?; // the correlation id
            return match reader.u16()? {
                CODE_OK => Ok(()),
                code => Err(on_code(code)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn bodies_read_back_and_stop_at_their_end() {
        let body = Body::default()
            .u8(7)
            .u16(0x1234)
            .u32(2)
            .string("first_chunk_id")
            .unwrap()
            .u32(u32::MAX)
            .u32(u32::MAX)
            .u32(0)
            .u32(9);
        let mut r = Reader::new(body.0);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(r.string().unwrap(), "first_chunk_id");
        assert_eq!(r.i64().unwrap(), -1);
        assert_eq!(r.u64().unwrap(), 9);
        assert!(
            r.u8().is_err(),
            "reading past the end is an error, not a panic"
        );
        assert_eq!(
            Reader::new((-1i16).to_be_bytes().to_vec())
                .string()
                .unwrap(),
            ""
        );
        assert!(Body::default().string(&"x".repeat(40_000)).is_err());
    }

    #[tokio::test]
    async fn frames_carry_size_key_and_version() {
        let bytes = frame(CREDIT, &[1, 0, 1]);
        assert_eq!(bytes, [0, 0, 0, 7, 0, 9, 0, 1, 1, 0, 1]);
        let mut io = &bytes[..];
        let read = read_frame(&mut io, 100).await.unwrap();
        assert_eq!((read.key, read.version), (CREDIT, 1));
        assert_eq!(&read.body[..], [1, 0, 1]);
        let mut too_big = &bytes[..];
        assert!(read_frame(&mut too_big, 6).await.is_err());
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::generative::{check, damaged};

        type Frames = Vec<(u16, u16, Vec<u8>)>;

        fn frames() -> impl Strategy<Value = Frames> {
            let body = prop::collection::vec(any::<u8>(), 0..300);
            prop::collection::vec((any::<u16>(), any::<u16>(), body), 1..5)
        }

        fn encode(frames: &Frames) -> Vec<u8> {
            let mut bytes = Vec::new();
            for (key, version, body) in frames {
                bytes.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                bytes.extend_from_slice(&key.to_be_bytes());
                bytes.extend_from_slice(&version.to_be_bytes());
                bytes.extend_from_slice(body);
            }
            bytes
        }

        /// Every frame in `bytes`, then the error that ended them.
        fn read_all(bytes: &[u8], max: u32) -> (Vec<Frame>, Error) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut io = bytes;
                let mut frames = Vec::new();
                loop {
                    match read_frame(&mut io, max).await {
                        Ok(frame) => frames.push(frame),
                        Err(e) => return (frames, e),
                    }
                }
            })
        }

        #[test]
        fn frames_read_back_as_written() {
            check(frames(), |frames| {
                let (read, end) = read_all(&encode(&frames), 1024);
                prop_assert!(end.kind() == Kind::Unavailable, "{end:?}");
                let read: Frames = read
                    .into_iter()
                    .map(|f| (f.key, f.version, f.body.to_vec()))
                    .collect();
                prop_assert_eq!(read, frames);
                Ok(())
            });
        }

        #[test]
        fn damaged_frames_end_in_an_error_never_a_panic() {
            check(damaged(frames().prop_map(|f| encode(&f))), |bytes| {
                let (read, end) = read_all(&bytes, 1024);
                prop_assert!(read.len() <= bytes.len() / 8);
                prop_assert!(!end.message().is_empty());
                Ok(())
            });
        }
    }
}
