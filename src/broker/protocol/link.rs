//! A stream protocol connection as partlog's own connections share it —
//! readers ([`super::reader`]) and publishers ([`super::publisher`]): the
//! handshake; a reading task that takes frames in the order they arrive,
//! answers the broker's close, hands each response to the request awaiting
//! it and every other frame to the connection's [`Frames`] handler;
//! heartbeats both ways; requests with correlation ids, bounded in time;
//! frames written one at a time.
//!
//! Lifetime: the connection lives until [`Link::close`] (or its drop), the
//! broker's close, a broken socket or missed heartbeats. However its
//! reading task ends — an error, the broker's close, a panic, an abort —
//! the handler hears [`Frames::ended`] at once (UNAVAILABLE: its users
//! reconnect), and requests still waiting fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::wire::{
    self, broken, handshake, read_frame, Body, Frame, Reader, CLOSE, CODE_OK, CREDIT, HEARTBEAT,
    RESPONSE,
};
use crate::broker::connect::Connector;
use crate::broker::node::Node;
use crate::broker::tls::{self, BrokerStream};
use crate::error::{Error, Kind, Reason, Result};
use crate::sync::lock;
use crate::telemetry::{ConnectionKind, OpenConnection};

/// What a connection does with the frames that are its own.
pub trait Frames: Send + Sync + 'static {
    /// A frame that is no heartbeat, close or answer to a request, in the
    /// order it arrived. An error ends the connection.
    fn frame(&self, frame: Frame) -> Result<()>;
    /// The connection ended (UNAVAILABLE, saying why); called once.
    fn ended(&self, why: &Error);
}

/// One connection; see the module docs.
pub struct Link {
    writer: Arc<Writer>,
    state: Arc<LinkState>,
    timeout: Duration,
    /// The largest frame the broker takes (0: no limit).
    frame_max: u32,
    /// The reading and heartbeat tasks, ended with the connection.
    tasks: [JoinHandle<()>; 2],
}

/// The writing half, one frame at a time (a tokio mutex: held while a
/// frame is written).
type Writer = tokio::sync::Mutex<WriteHalf<BufReader<BrokerStream>>>;

struct LinkState {
    frames: Arc<dyn Frames>,
    /// Requests awaiting their answer: correlation id → the answer's body
    /// after its correlation id.
    pending: Mutex<HashMap<u32, oneshot::Sender<Bytes>>>,
    next_correlation: AtomicU32,
    failed: AtomicBool,
    /// When the broker last sent anything.
    received: Mutex<Instant>,
}

impl LinkState {
    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Ends the connection for its users, once: requests waiting fail and
    /// the handler hears why.
    fn fail(&self, why: &Error) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.pending).clear();
        let why = match why {
            why if why.kind() == Kind::Unavailable => why.clone(),
            other => Error::new(
                Reason::BrokerUnavailable,
                format!("the broker connection failed: {other}"),
            ),
        };
        self.frames.ended(&why);
    }

    /// Handles one frame; `Some` is an answer to write before the
    /// connection ends (the broker closed it).
    fn dispatch(&self, frame: Frame) -> Result<Option<Vec<u8>>> {
        match frame.key {
            HEARTBEAT => {}
            CLOSE => {
                let correlation = Reader::new(frame.body).u32()?;
                let answer = Body::default().u32(correlation).u16(CODE_OK);
                self.fail(&Error::new(
                    Reason::BrokerUnavailable,
                    "the broker closed the connection",
                ));
                return Ok(Some(wire::frame(CLOSE | RESPONSE, &answer.0)));
            }
            // The one response without a correlation id (a credit is
            // answered only when it failed): the handler's.
            key if key == CREDIT | RESPONSE => self.frames.frame(frame)?,
            key if key & RESPONSE != 0 => {
                let mut body = Reader::new(frame.body);
                let correlation = body.u32()?;
                if let Some(waiting) = lock(&self.pending).remove(&correlation) {
                    let _ = waiting.send(body.rest());
                }
            }
            _ => self.frames.frame(frame)?,
        }
        Ok(None)
    }
}

/// Fails the connection's users when its reading task ends, however it
/// ends: nothing else would tell them until a heartbeat was missed (never
/// with heartbeats off).
struct FailOnExit(Arc<LinkState>);

impl Drop for FailOnExit {
    fn drop(&mut self) {
        self.0.fail(&Error::new(
            Reason::BrokerUnavailable,
            "the broker connection's reading task ended",
        ));
    }
}

impl Link {
    /// Connects to `node` as `name` (the connection name the broker
    /// shows), reading frames of up to `max_frame` bytes, counted as
    /// `kind`; `frames` handles what arrives.
    pub async fn open(
        connector: &Connector,
        node: &Node,
        name: &str,
        kind: ConnectionKind,
        max_frame: u32,
        frames: Arc<dyn Frames>,
    ) -> Result<Link> {
        let credentials = connector.credentials(node)?;
        let heartbeat = connector.config().heartbeat_secs;
        let what = format!("connecting to {node}");
        let opened = async {
            let stream = tls::connect(&node.host, node.port, credentials.tls.as_deref()).await?;
            let mut io = BufReader::new(stream);
            let tuned = handshake(&mut io, &credentials, name, heartbeat).await?;
            Ok::<_, Error>((io, tuned))
        };
        let (io, tuned) = connector.within(&what, opened).await??;
        let (reading, writing) = tokio::io::split(io);
        let state = Arc::new(LinkState {
            frames,
            pending: Mutex::default(),
            next_correlation: AtomicU32::new(1),
            failed: AtomicBool::new(false),
            received: Mutex::new(Instant::now()),
        });
        let writer = Arc::new(tokio::sync::Mutex::new(writing));
        let tasks = [
            tokio::spawn(read_loop(
                reading,
                max_frame,
                kind,
                state.clone(),
                writer.clone(),
            )),
            tokio::spawn(heartbeats(
                Duration::from_secs(u64::from(heartbeat)),
                state.clone(),
                writer.clone(),
            )),
        ];
        Ok(Link {
            writer,
            state,
            timeout: connector.timeout(),
            frame_max: tuned.frame_max,
            tasks,
        })
    }

    /// The largest frame the broker takes, in bytes (0: no limit).
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// True once the connection failed or closed.
    pub fn has_failed(&self) -> bool {
        self.state.has_failed()
    }

    /// Writes a whole frame.
    pub async fn send(&self, frame: &[u8]) -> Result<()> {
        self.send_buf(frame).await
    }

    /// Writes a frame held in pieces (vectored where the socket takes it).
    pub async fn send_buf(&self, mut frame: impl Buf) -> Result<()> {
        if self.has_failed() {
            return Err(Error::new(
                Reason::BrokerUnavailable,
                "the broker connection closed",
            ));
        }
        let mut writer = self.writer.lock().await;
        let written = async {
            writer.write_all_buf(&mut frame).await?;
            writer.flush().await
        };
        written.await.map_err(|e| {
            let e = broken(e);
            self.state.fail(&e);
            e
        })
    }

    /// Sends request `key` (its body after the correlation id) and returns
    /// its answer's body after the correlation id (the response code
    /// first), within the request timeout; `what` names it in errors.
    pub async fn request(&self, key: u16, body: &[u8], what: &str) -> Result<Reader> {
        self.ask(key, body, what).await?.answer().await
    }

    /// Sends request `key` and returns once it is written: frames sent
    /// after this reach the broker after it, and [`Asked::answer`] waits
    /// for its answer.
    pub async fn ask<'a>(&'a self, key: u16, body: &[u8], what: &str) -> Result<Asked<'a>> {
        let correlation = self.state.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        lock(&self.state.pending).insert(correlation, answer);
        let asked = Asked {
            link: self,
            correlation,
            answered,
            what: what.to_owned(),
        };
        let mut request = Body::default().u32(correlation);
        request.0.extend_from_slice(body);
        match tokio::time::timeout(self.timeout, self.send(&wire::frame(key, &request.0))).await {
            Ok(sent) => sent.map(|()| asked),
            Err(_) => Err(asked.timed_out()),
        }
    }

    /// Closes the connection: the broker sees the socket end.
    pub fn close(&self) {
        self.state.fail(&Error::new(
            Reason::BrokerUnavailable,
            "the broker connection closed",
        ));
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A request written to the broker, its answer still to come. Dropping it
/// forgets the request.
pub struct Asked<'a> {
    link: &'a Link,
    correlation: u32,
    answered: oneshot::Receiver<Bytes>,
    what: String,
}

impl Asked<'_> {
    /// The answer's body after the correlation id (the response code
    /// first), within the request timeout.
    pub async fn answer(mut self) -> Result<Reader> {
        match tokio::time::timeout(self.link.timeout, &mut self.answered).await {
            Ok(Ok(answer)) => Ok(Reader::new(answer)),
            Ok(Err(_)) => Err(Error::new(
                Reason::BrokerUnavailable,
                "the broker connection closed",
            )),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Error {
        Error::new(
            Reason::BrokerUnavailable,
            format!(
                "the broker did not answer within {:?} while {}",
                self.link.timeout, self.what
            ),
        )
    }
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        lock(&self.link.state.pending).remove(&self.correlation);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads the connection's frames in order and dispatches them, until the
/// connection fails.
async fn read_loop(
    mut reading: ReadHalf<BufReader<BrokerStream>>,
    max_frame: u32,
    kind: ConnectionKind,
    state: Arc<LinkState>,
    writer: Arc<Writer>,
) {
    // Counted open while its frames are read: the loop ends (or is
    // aborted) when the socket does or when the connection is closed.
    let _counted = OpenConnection::new(kind);
    let _fail_on_exit = FailOnExit(state.clone());
    let failure = loop {
        let frame = match read_frame(&mut reading, max_frame).await {
            Ok(frame) => frame,
            Err(e) => break e,
        };
        *lock(&state.received) = Instant::now();
        match state.dispatch(frame) {
            Ok(None) => {}
            Ok(Some(answer)) => {
                let _ = writer.lock().await.write_all(&answer).await;
                break Error::new(
                    Reason::BrokerUnavailable,
                    "the broker closed the connection",
                );
            }
            Err(e) => break e,
        }
    };
    tracing::debug!(%failure, "broker connection ends");
    state.fail(&failure);
}

/// Sends a heartbeat every `interval`, and ends the connection when the
/// broker sent nothing for two (0: heartbeats off).
async fn heartbeats(interval: Duration, state: Arc<LinkState>, writer: Arc<Writer>) {
    if interval.is_zero() {
        return;
    }
    let beat = wire::frame(HEARTBEAT, &[]);
    loop {
        tokio::time::sleep(interval).await;
        if state.has_failed() {
            return;
        }
        let silence = interval.saturating_mul(2);
        if lock(&state.received).elapsed() > silence {
            state.fail(&Error::new(
                Reason::BrokerUnavailable,
                format!("the broker sent nothing for {silence:?} (heartbeats missed)"),
            ));
            return;
        }
        let mut writer = writer.lock().await;
        let sent = async {
            writer.write_all(&beat).await?;
            writer.flush().await
        };
        if let Err(e) = sent.await {
            state.fail(&broken(e));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a handler heard.
    #[derive(Default)]
    struct Heard {
        frames: Mutex<Vec<u16>>,
        ended: Mutex<Vec<String>>,
    }

    impl Frames for Heard {
        fn frame(&self, frame: Frame) -> Result<()> {
            lock(&self.frames).push(frame.key);
            Ok(())
        }
        fn ended(&self, why: &Error) {
            lock(&self.ended).push(why.to_string());
        }
    }

    fn state(heard: Arc<Heard>) -> Arc<LinkState> {
        Arc::new(LinkState {
            frames: heard,
            pending: Mutex::default(),
            next_correlation: AtomicU32::new(1),
            failed: AtomicBool::new(false),
            received: Mutex::new(Instant::now()),
        })
    }

    fn frame(key: u16, body: Vec<u8>) -> Frame {
        Frame {
            key,
            version: 1,
            body: body.into(),
        }
    }

    #[tokio::test]
    async fn answers_go_to_their_requests_and_other_frames_to_the_handler() {
        let heard = Arc::new(Heard::default());
        let state = state(heard.clone());
        let (answer, answered) = oneshot::channel();
        lock(&state.pending).insert(7, answer);
        let response = Body::default().u32(7).u16(CODE_OK).u8(9);
        state
            .dispatch(frame(0x0001 | RESPONSE, response.0))
            .unwrap();
        let mut body = Reader::new(answered.await.unwrap());
        assert_eq!((body.u16().unwrap(), body.u8().unwrap()), (CODE_OK, 9));
        state.dispatch(frame(0x0003, vec![1, 0, 0, 0, 0])).unwrap();
        state
            .dispatch(frame(CREDIT | RESPONSE, vec![0, 4, 1]))
            .unwrap();
        state.dispatch(frame(HEARTBEAT, Vec::new())).unwrap();
        assert_eq!(*lock(&heard.frames), [0x0003, CREDIT | RESPONSE]);
    }

    /// The reading task that panics (or is aborted, or ends) fails the
    /// connection's users at once, once.
    #[tokio::test]
    async fn a_reading_task_that_panics_tells_the_handler_once() {
        let heard = Arc::new(Heard::default());
        let state = state(heard.clone());
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                let _fail_on_exit = FailOnExit(state);
                panic!("a bug in a decoder");
            }
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(state.has_failed());
        state.fail(&Error::new(Reason::BrokerUnavailable, "again"));
        let ended = lock(&heard.ended).clone();
        assert_eq!(ended.len(), 1, "{ended:?}");
    }

    #[test]
    fn the_brokers_close_is_answered_and_ends_the_connection() {
        let heard = Arc::new(Heard::default());
        let state = state(heard.clone());
        let close = Body::default().u32(5).u16(CODE_OK).string("bye").unwrap();
        let answer = state.dispatch(frame(CLOSE, close.0)).unwrap().unwrap();
        assert_eq!(&answer[4..6], (CLOSE | RESPONSE).to_be_bytes());
        assert!(state.has_failed());
        assert_eq!(lock(&heard.ended).len(), 1);
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::generative::{check, damaged};

        /// A frame the connection itself handles: key and a valid body.
        fn frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
            let answer = (
                0u32..4,
                any::<u16>(),
                prop::collection::vec(any::<u8>(), 0..8),
            )
                .prop_map(|(correlation, code, rest)| {
                    let body = Body::default().u32(correlation).u16(code).bytes(&rest);
                    (0x0001 | RESPONSE, body.0)
                });
            let close = any::<u32>().prop_map(|correlation| {
                let body = Body::default()
                    .u32(correlation)
                    .u16(1)
                    .string("bye")
                    .unwrap();
                (CLOSE, body.0)
            });
            let beat = Just((HEARTBEAT, Vec::new()));
            prop_oneof![answer, close, beat]
        }

        #[test]
        fn damaged_frames_are_handled_or_refused_never_a_panic() {
            let frames = frame()
                .prop_flat_map(|(key, body)| damaged(Just(body)).prop_map(move |b| (key, b)));
            check(frames, |(key, body)| {
                let state = state(Arc::new(Heard::default()));
                let (answer, _answered) = oneshot::channel();
                lock(&state.pending).insert(1, answer);
                let _ = state.dispatch(Frame {
                    key,
                    version: 1,
                    body: body.into(),
                });
                Ok(())
            });
        }
    }
}
