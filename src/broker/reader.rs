//! Reading partition streams chunk by chunk, on partlog's own connections,
//! shared per node.
//!
//! A [`ChunkReader`] is one subscription. Subscriptions to a node share its
//! reader connections, up to 256 per connection (the protocol numbers a
//! connection's subscriptions with one byte): a node's readers need a
//! connection per 256 of them, not one each. The connection's reading task
//! routes each frame, in the order frames arrive, to its subscription's own
//! queue by subscription id and never waits, so a subscriber that stops
//! reading stops only its own subscription. Ids are not reused on a
//! connection: a delivery still on its way for a subscription that ended
//! can never reach another. A connection whose ids are used up takes no new
//! subscription and closes when its last one ends.
//!
//! These connections speak the protocol themselves ([`super::wire`])
//! rather than through the client library: a delivered chunk stays the
//! bytes it came in, and its records are read from them without building
//! AMQP messages ([`Chunk::records`]) — the value of each record is a slice
//! of the chunk, and reading costs a fraction of what decoding the
//! library's messages did.
//!
//! The broker sends a chunk per credit, and a reader keeps at most one
//! credit outstanding, which bounds what it buffers to a single chunk. The
//! credit for the next chunk goes out when the caller asks for it, not when
//! a chunk arrives: a caller that stops asking stops the broker too.
//!
//! [`super::bounds`] and the log's `Read` build on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use rabbitmq_stream_client::types::OffsetSpecification;
use rabbitmq_stream_protocol::codec::Encoder;
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::connect::Connector;
use super::node::Node;
use super::tls::{self, BrokerStream};
use super::wire::{
    self, broken, handshake, read_frame, Body, Reader, CLOSE, CODE_OK, CODE_STREAM_DOES_NOT_EXIST,
    CONSUMER_UPDATE, CREDIT, DELIVER, HEARTBEAT, METADATA_UPDATE, RESPONSE, SUBSCRIBE, UNSUBSCRIBE,
};
use crate::error::{Error, Result};
use crate::record::StoredRecord;
use crate::sync::lock;
use crate::telemetry::{ConnectionKind, OpenConnection};

/// One chunk as delivered: consecutive records from `first_offset`, each
/// still the bytes of its message.
pub struct Chunk {
    pub first_offset: u64,
    /// When the broker wrote the chunk, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Each record's message, in offset order (slices of the delivery).
    entries: Vec<Bytes>,
}

impl Chunk {
    /// Offset of the chunk's last record.
    pub fn last_offset(&self) -> u64 {
        self.first_offset + (self.entries.len() as u64).saturating_sub(1)
    }

    /// The chunk's records from offset `from` on, as records of `partition`.
    pub fn records(&self, partition: u32, from: u64) -> impl Iterator<Item = StoredRecord> + '_ {
        let skip = from.saturating_sub(self.first_offset);
        self.entries
            .iter()
            .enumerate()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .map(move |(i, message)| {
                let offset = self.first_offset + i as u64;
                StoredRecord::decode(message.clone(), partition, offset, self.timestamp_ms)
            })
    }

    /// Parses a chunk as a delivery carries it (after the subscription id):
    /// the osiris chunk header, the bloom filter to skip, then the entries
    /// — simple ones, or uncompressed sub-entry batches.
    fn parse(mut data: Bytes) -> Result<Chunk> {
        let bad =
            |why: &str| Error::Internal(format!("the broker delivered a malformed chunk: {why}"));
        if data.len() < CHUNK_HEADER {
            return Err(bad("shorter than its header"));
        }
        let _magic_version = data.get_u8();
        let _chunk_type = data.get_u8();
        let _entries = data.get_u16();
        let records = data.get_u32();
        let timestamp_ms = data.get_i64();
        let _epoch = data.get_u64();
        let first_offset = data.get_u64();
        let _crc = data.get_u32();
        let data_length = data.get_u32() as usize;
        let _trailer_length = data.get_u32();
        let bloom_size = usize::from(data.get_u8());
        data.advance(3);
        if data.len() < bloom_size + data_length {
            return Err(bad("its data runs past the delivery"));
        }
        data.advance(bloom_size);
        let mut data = data.split_to(data_length);
        let mut entries = Vec::with_capacity((records as usize).min(data.len() / 4));
        while data.has_remaining() {
            if data.len() < 4 {
                return Err(bad("a truncated entry"));
            }
            let head = data.get_u32();
            if head & SUB_BATCH == 0 {
                entries.push(
                    take(&mut data, head as usize)
                        .ok_or_else(|| bad("an entry runs past its data"))?,
                );
                continue;
            }
            // Sub-entry batch: compression (3 bits) and reserved in the top
            // byte, the record count, uncompressed and stored lengths.
            let compression = (head >> 28) & 0b111;
            if data.len() < 6 {
                return Err(bad("a truncated sub-entry batch"));
            }
            let in_batch = ((head >> 8) & 0xffff) as usize;
            let _uncompressed =
                ((head & 0xff) << 24) | u32::from(data.get_u8()) << 16 | u32::from(data.get_u16());
            let stored = data.get_u32() as usize;
            let mut batch = take(&mut data, stored)
                .ok_or_else(|| bad("a sub-entry batch runs past its data"))?;
            if compression != 0 {
                return Err(Error::Internal(format!(
                    "a producer wrote a compressed sub-entry batch (compression {compression}), \
                     which partlog cannot read"
                )));
            }
            for _ in 0..in_batch {
                if batch.len() < 4 {
                    return Err(bad("a truncated record in a sub-entry batch"));
                }
                let size = batch.get_u32() as usize;
                entries.push(
                    take(&mut batch, size).ok_or_else(|| bad("a record runs past its batch"))?,
                );
            }
        }
        Ok(Chunk {
            first_offset,
            timestamp_ms,
            entries,
        })
    }
}

/// The first `n` bytes of `data`, taken off it; `None` when shorter.
fn take(data: &mut Bytes, n: usize) -> Option<Bytes> {
    (data.len() >= n).then(|| data.split_to(n))
}

/// Bytes of an osiris chunk header.
const CHUNK_HEADER: usize = 1 + 1 + 2 + 4 + 8 + 8 + 8 + 4 + 4 + 4 + 4;
/// The top bit of an entry's first word marks a sub-entry batch.
const SUB_BATCH: u32 = 0x8000_0000;

/// What a subscription hears from the broker.
pub enum ReaderEvent {
    Chunk(Chunk),
    /// Single active consumer: this subscription became active (it must
    /// answer with [`ChunkReader::answer_update`]) or inactive.
    ConsumerUpdate {
        active: bool,
        correlation_id: u32,
    },
}

/// Subscriptions one connection carries over its life (ids 0..=255).
const IDS_PER_CONNECTION: u16 = 256;
/// Connections without subscriptions kept per node for the next readers.
const MAX_IDLE_PER_NODE: usize = 2;
/// Largest frame a reader connection reads. A delivery carries a whole
/// chunk, and the broker writes chunks larger than the frame size it
/// negotiates (it puts what its writer has in hand into one chunk).
const MAX_DELIVERY: u32 = 256 * 1024 * 1024;

/// Opens readers on the reader connections of each node; one per broker
/// handle. Opening a connection costs a handshake; subscribing on an open
/// one takes about a millisecond.
pub struct ReaderPool {
    connector: Connector,
    /// A tokio mutex: held while a connection opens, so that readers
    /// arriving together share it instead of opening one each.
    by_node: tokio::sync::Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    connections: HashMap<Node, Vec<Arc<ReaderConnection>>>,
    /// Set by [`ReaderPool::close`]: no new subscription.
    closed: bool,
}

/// One broker connection for readers: the writing half, the requests
/// awaiting answers, and the routes of its subscriptions, which its
/// reading task feeds.
struct ReaderConnection {
    writer: Arc<Writer>,
    routes: Arc<Routes>,
    timeout: Duration,
    /// The reading and heartbeat tasks, ended with the connection.
    tasks: [JoinHandle<()>; 2],
}

/// The writing half, one frame at a time (a tokio mutex: held while a
/// frame is written).
type Writer = tokio::sync::Mutex<WriteHalf<BufReader<BrokerStream>>>;

/// A connection's subscriptions by id and its requests awaiting answers,
/// shared with its reading task.
#[derive(Default)]
struct Routes {
    state: Mutex<RouteState>,
    next_correlation: AtomicU32,
    /// The connection failed or closed.
    failed: AtomicBool,
}

#[derive(Default)]
struct RouteState {
    by_id: HashMap<u8, Route>,
    /// Ids given so far; each is given once.
    given: u16,
    /// Requests awaiting their answer: correlation id → response code.
    pending: HashMap<u32, oneshot::Sender<u16>>,
}

/// Where one subscription's frames go.
struct Route {
    stream: String,
    events: mpsc::UnboundedSender<Result<ReaderEvent>>,
}

impl RouteState {
    /// A fresh id for a subscription to `stream`; `None` when the ids are
    /// used up.
    fn add(&mut self, stream: &str) -> Option<(u8, mpsc::UnboundedReceiver<Result<ReaderEvent>>)> {
        if self.given >= IDS_PER_CONNECTION {
            return None;
        }
        let id = self.given as u8;
        self.given += 1;
        let (events, receiver) = mpsc::unbounded_channel();
        let stream = stream.to_owned();
        self.by_id.insert(id, Route { stream, events });
        Some((id, receiver))
    }

    /// Takes no new subscription and holds none.
    fn spent(&self) -> bool {
        self.by_id.is_empty() && self.given >= IDS_PER_CONNECTION
    }
}

impl Routes {
    fn state(&self) -> std::sync::MutexGuard<'_, RouteState> {
        lock(&self.state)
    }

    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Tells every subscription the connection is gone; requests awaiting
    /// answers fail.
    fn fail(&self, error: &Error) {
        self.failed.store(true, Ordering::Release);
        let mut state = self.state();
        for route in state.by_id.values() {
            let _ = route.events.send(Err(error.clone()));
        }
        state.pending.clear();
    }

    /// Hands a frame of the connection to the subscription or request it
    /// concerns. An error ends the connection.
    fn dispatch(&self, frame: wire::Frame) -> Result<Option<Vec<u8>>> {
        let mut body = Reader(&frame.body);
        match frame.key {
            DELIVER => {
                let id = body.u8()?;
                if frame.version >= 2 {
                    body.u64()?; // the committed chunk id
                }
                let at = frame.body.len() - body.0.len();
                let chunk = Chunk::parse(frame.body.slice(at..))?;
                self.route(id, ReaderEvent::Chunk(chunk));
            }
            CONSUMER_UPDATE => {
                let correlation_id = body.u32()?;
                let id = body.u8()?;
                let active = body.u8()? == 1;
                let update = ReaderEvent::ConsumerUpdate {
                    active,
                    correlation_id,
                };
                self.route(id, update);
            }
            METADATA_UPDATE => {
                // The stream moved or was deleted: the broker dropped its
                // subscriptions (all of them when it named none).
                body.u16()?;
                let stream = body.string()?;
                let gone =
                    Error::Unavailable("the partition's leader changed or it was deleted".into());
                let state = self.state();
                for route in state.by_id.values() {
                    if stream.is_empty() || route.stream == stream {
                        let _ = route.events.send(Err(gone.clone()));
                    }
                }
            }
            HEARTBEAT => {}
            CLOSE => {
                let correlation = body.u32()?;
                let answer = Body::default().u32(correlation).u16(CODE_OK);
                self.fail(&Error::Unavailable(
                    "the broker closed the reading connection".into(),
                ));
                return Ok(Some(wire::frame(CLOSE | RESPONSE, &answer.0)));
            }
            // A credit is answered only when it failed: for a subscription
            // that ended meanwhile, nothing to do.
            key if key == CREDIT | RESPONSE => {}
            key if key & RESPONSE != 0 => {
                let correlation = body.u32()?;
                let code = body.u16()?;
                if let Some(waiting) = self.state().pending.remove(&correlation) {
                    let _ = waiting.send(code);
                }
            }
            key => {
                tracing::debug!("reader connection ignores frame {key:#06x}");
            }
        }
        Ok(None)
    }

    fn route(&self, id: u8, event: ReaderEvent) {
        // A subscription that ended meanwhile hears nothing more.
        if let Some(route) = self.state().by_id.get(&id) {
            let _ = route.events.send(Ok(event));
        }
    }
}

impl ReaderConnection {
    async fn open(connector: &Connector, node: &Node) -> Result<ReaderConnection> {
        let credentials = connector.credentials(node);
        let heartbeat = connector.config().heartbeat_secs;
        let what = format!("connecting to {node}");
        let opened = async {
            let stream = tls::connect(&node.host, node.port, credentials.tls.as_deref()).await?;
            let mut io = BufReader::new(stream);
            let tuned = handshake(&mut io, &credentials, "partlog-reader", heartbeat).await?;
            Ok::<_, Error>((io, tuned))
        };
        let (io, _tuned) = connector.within(&what, opened).await??;
        let (reading, writing) = tokio::io::split(io);
        let routes = Arc::new(Routes::default());
        let writer = Arc::new(tokio::sync::Mutex::new(writing));
        let received = Arc::new(Mutex::new(Instant::now()));
        let tasks = [
            tokio::spawn(read_loop(
                reading,
                MAX_DELIVERY,
                routes.clone(),
                writer.clone(),
                received.clone(),
            )),
            tokio::spawn(heartbeats(
                Duration::from_secs(u64::from(heartbeat)),
                routes.clone(),
                writer.clone(),
                received,
            )),
        ];
        Ok(ReaderConnection {
            writer,
            routes,
            timeout: connector.timeout(),
            tasks,
        })
    }

    fn takes_subscriptions(&self) -> bool {
        !self.routes.has_failed() && self.routes.state().given < IDS_PER_CONNECTION
    }

    /// Writes a frame.
    async fn send(&self, frame: &[u8]) -> Result<()> {
        if self.routes.has_failed() {
            return Err(Error::Unavailable("the reading connection closed".into()));
        }
        let mut writer = self.writer.lock().await;
        writer.write_all(frame).await.map_err(broken)?;
        writer.flush().await.map_err(broken)
    }

    /// Sends a request (its body after the correlation id) and returns the
    /// code of its answer, within the timeout.
    async fn request(&self, key: u16, body: &[u8], what: &str) -> Result<u16> {
        let correlation = self.routes.next_correlation.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.routes.state().pending.insert(correlation, answer);
        let mut request = Body::default().u32(correlation);
        request.0.extend_from_slice(body);
        let asked = async {
            self.send(&wire::frame(key, &request.0)).await?;
            answered
                .await
                .map_err(|_| Error::Unavailable("the reading connection closed".into()))
        };
        let code = tokio::time::timeout(self.timeout, asked).await;
        self.routes.state().pending.remove(&correlation);
        code.map_err(|_| {
            Error::Unavailable(format!(
                "the broker did not answer within {:?} while {what}",
                self.timeout
            ))
        })?
    }

    /// Closes the connection: the broker sees the socket end.
    fn close(&self) {
        self.routes
            .fail(&Error::Unavailable("the reading connection closed".into()));
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for ReaderConnection {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads the connection's frames in order and dispatches them, until the
/// connection fails; then every subscription hears why.
async fn read_loop(
    mut reading: ReadHalf<BufReader<BrokerStream>>,
    max_frame: u32,
    routes: Arc<Routes>,
    writer: Arc<Writer>,
    received: Arc<Mutex<Instant>>,
) {
    // Counted open while its frames are read: the loop ends (or is
    // aborted) when the socket does or when the connection is closed.
    let _counted = OpenConnection::new(ConnectionKind::Reader);
    let failure = loop {
        let frame = match read_frame(&mut reading, max_frame).await {
            Ok(frame) => frame,
            Err(e) => break e,
        };
        *lock(&received) = Instant::now();
        match routes.dispatch(frame) {
            Ok(None) => {}
            Ok(Some(answer)) => {
                let _ = writer.lock().await.write_all(&answer).await;
                break Error::Unavailable("the broker closed the reading connection".into());
            }
            Err(e) => break e,
        }
    };
    tracing::debug!(%failure, "reader connection ends");
    routes.fail(&failure);
}

/// Sends a heartbeat every `interval`, and ends the connection when the
/// broker sent nothing for two (0: heartbeats off).
async fn heartbeats(
    interval: Duration,
    routes: Arc<Routes>,
    writer: Arc<Writer>,
    received: Arc<Mutex<Instant>>,
) {
    if interval.is_zero() {
        return;
    }
    let beat = wire::frame(HEARTBEAT, &[]);
    loop {
        tokio::time::sleep(interval).await;
        if routes.has_failed() {
            return;
        }
        if lock(&received).elapsed() > interval * 2 {
            routes.fail(&Error::Unavailable(format!(
                "the broker sent nothing for {:?} (heartbeats missed)",
                interval * 2
            )));
            return;
        }
        let mut writer = writer.lock().await;
        let sent = async {
            writer.write_all(&beat).await?;
            writer.flush().await
        };
        if let Err(e) = sent.await {
            routes.fail(&broken(e));
            return;
        }
    }
}

impl ReaderPool {
    pub fn new(connector: Connector) -> ReaderPool {
        ReaderPool {
            connector,
            by_node: tokio::sync::Mutex::default(),
        }
    }

    /// A reader subscribed to `stream` on `node` from `start`. `properties`
    /// are the subscription's properties (consumer name, single active
    /// consumer, ...).
    pub async fn open(
        self: &Arc<Self>,
        stream: &str,
        node: &Node,
        start: OffsetSpecification,
        properties: HashMap<String, String>,
    ) -> Result<ChunkReader> {
        let (connection, id, events) = self.attach(node, stream).await?;
        let mut reader = ChunkReader {
            connection,
            id,
            events,
            node: node.clone(),
            pool: self.clone(),
            stream: stream.to_owned(),
            credit_owed: false,
        };
        if let Err(e) = reader.subscribe(start, properties).await {
            reader.close();
            return Err(e);
        }
        Ok(reader)
    }

    /// A route on a connection to `node` with a free id, opening a
    /// connection when none has one.
    async fn attach(
        &self,
        node: &Node,
        stream: &str,
    ) -> Result<(
        Arc<ReaderConnection>,
        u8,
        mpsc::UnboundedReceiver<Result<ReaderEvent>>,
    )> {
        let mut pool = self.by_node.lock().await;
        if pool.closed {
            return Err(Error::Unavailable("partlog is shutting down".into()));
        }
        let connections = pool.connections.entry(node.clone()).or_default();
        connections.retain(|c| !c.routes.has_failed());
        for connection in connections.iter().filter(|c| c.takes_subscriptions()) {
            if let Some((id, events)) = connection.routes.state().add(stream) {
                return Ok((connection.clone(), id, events));
            }
        }
        let connection = Arc::new(ReaderConnection::open(&self.connector, node).await?);
        let (id, events) = connection.routes.state().add(stream).ok_or_else(|| {
            Error::Internal("a new reader connection refused a subscription".into())
        })?;
        connections.push(connection.clone());
        Ok((connection, id, events))
    }

    /// Removes a subscription's route; closes its connection when it holds
    /// no other and takes no new one, or when the node has idle connections
    /// enough.
    async fn detach(&self, node: &Node, connection: &Arc<ReaderConnection>, id: u8) {
        let mut pool = self.by_node.lock().await;
        let closed = pool.closed;
        connection.routes.state().by_id.remove(&id);
        let connections = pool.connections.entry(node.clone()).or_default();
        let idle = connections
            .iter()
            .filter(|c| c.routes.state().by_id.is_empty())
            .count();
        let state = connection.routes.state();
        let close = state.by_id.is_empty()
            && (closed
                || state.spent()
                || connection.routes.has_failed()
                || idle > MAX_IDLE_PER_NODE);
        drop(state);
        if close {
            connections.retain(|c| !Arc::ptr_eq(c, connection));
            connection.close();
        }
    }

    /// Closes every connection; later readers fail with UNAVAILABLE.
    pub async fn close(&self) {
        let mut pool = self.by_node.lock().await;
        pool.closed = true;
        for connection in pool.connections.drain().flat_map(|(_, c)| c) {
            connection.close();
        }
    }
}

/// A subscription to one partition stream on a shared connection.
pub struct ChunkReader {
    connection: Arc<ReaderConnection>,
    id: u8,
    events: mpsc::UnboundedReceiver<Result<ReaderEvent>>,
    node: Node,
    pool: Arc<ReaderPool>,
    stream: String,
    /// A chunk arrived and its credit has not been given back yet.
    credit_owed: bool,
}

impl ChunkReader {
    async fn subscribe(
        &mut self,
        start: OffsetSpecification,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        // A new subscription starts with one credit of its own.
        self.credit_owed = false;
        let stream = &self.stream;
        let mut body = Body::default().u8(self.id).string(stream)?;
        start
            .encode(&mut body.0)
            .map_err(|e| Error::Internal(format!("encoding an offset failed: {e:?}")))?;
        body = body.u16(1).u32(properties.len() as u32);
        for (name, value) in &properties {
            body = body.string(name)?.string(value)?;
        }
        let what = format!("subscribing to {stream:?}");
        match self.connection.request(SUBSCRIBE, &body.0, &what).await? {
            CODE_OK => Ok(()),
            CODE_STREAM_DOES_NOT_EXIST => Err(Error::NotFound(format!(
                "partition stream {stream:?} does not exist"
            ))),
            code => Err(Error::Unavailable(format!(
                "cannot subscribe to {stream:?}: the broker answered {code:#04x}"
            ))),
        }
    }

    /// Moves the reader to `start`: a new subscription to the same stream
    /// on the same node, this one ended.
    pub async fn resubscribe(&mut self, start: OffsetSpecification) -> Result<()> {
        let moved = self
            .pool
            .open(&self.stream, &self.node, start, HashMap::new())
            .await?;
        std::mem::replace(self, moved).close();
        Ok(())
    }

    /// The next event, or `None` when none arrived before `deadline`.
    /// Asking for it after a chunk asks the broker for the next chunk.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<ReaderEvent>> {
        if self.credit_owed {
            let credit = Body::default().u8(self.id).u16(1);
            self.connection
                .send(&wire::frame(CREDIT, &credit.0))
                .await?;
            self.credit_owed = false;
        }
        let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Err(_) => return Ok(None),
            Ok(Some(event)) => event?,
            Ok(None) => return Err(Error::Unavailable("the reading connection closed".into())),
        };
        if let ReaderEvent::Chunk(_) = event {
            self.credit_owed = true;
        }
        Ok(Some(event))
    }

    /// The next chunk, or `None` when none arrived before `deadline`.
    /// For subscriptions without single active consumer.
    pub async fn next_chunk(&mut self, deadline: Instant) -> Result<Option<Chunk>> {
        loop {
            match self.next_event(deadline).await? {
                None => return Ok(None),
                Some(ReaderEvent::Chunk(chunk)) => return Ok(Some(chunk)),
                Some(ReaderEvent::ConsumerUpdate { .. }) => continue,
            }
        }
    }

    /// Answers a consumer update: where this now active (or, ignored by the
    /// broker, inactive) consumer starts. The broker sends nothing back.
    pub async fn answer_update(
        &self,
        correlation_id: u32,
        start: OffsetSpecification,
    ) -> Result<()> {
        let mut body = Body::default().u32(correlation_id).u16(CODE_OK);
        start
            .encode(&mut body.0)
            .map_err(|e| Error::Internal(format!("encoding an offset failed: {e:?}")))?;
        self.connection
            .send(&wire::frame(CONSUMER_UPDATE | RESPONSE, &body.0))
            .await
    }

    /// True once the connection failed or closed.
    pub fn is_closed(&self) -> bool {
        self.connection.routes.has_failed()
    }

    /// Unsubscribes in the background and gives the id's route up: the
    /// caller has what it needs and should not wait for the broker.
    pub fn close(self) {
        tokio::spawn(async move {
            let body = Body::default().u8(self.id);
            let _ = self
                .connection
                .request(UNSUBSCRIBE, &body.0, "unsubscribing")
                .await;
            self.pool
                .detach(&self.node, &self.connection, self.id)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_given_once_and_a_spent_connection_is_closed() {
        let mut state = RouteState::default();
        let (first, _a) = state.add("s-0").unwrap();
        let (second, _b) = state.add("s-1").unwrap();
        assert_eq!((first, second), (0, 1));
        state.by_id.remove(&first);
        let (third, _c) = state.add("s-0").unwrap();
        assert_eq!(third, 2, "a freed id is not given again");
        let mut receivers = Vec::new();
        while let Some((_, receiver)) = state.add("s-2") {
            receivers.push(receiver);
        }
        assert_eq!(state.given, IDS_PER_CONNECTION);
        assert!(!state.spent(), "still carries subscriptions");
        state.by_id.clear();
        assert!(state.spent());
    }

    #[tokio::test]
    async fn a_failed_connection_tells_every_subscription() {
        let routes = Routes::default();
        let (_, mut a) = routes.state().add("s-0").unwrap();
        let (_, mut b) = routes.state().add("s-1").unwrap();
        routes.fail(&Error::Unavailable("gone".into()));
        assert!(routes.has_failed());
        assert!(matches!(a.recv().await, Some(Err(Error::Unavailable(_)))));
        assert!(matches!(b.recv().await, Some(Err(Error::Unavailable(_)))));
    }

    /// A chunk as osiris writes it: header, bloom filter, entries.
    fn chunk(first_offset: u64, timestamp: i64, bloom: &[u8], entries: &[Vec<u8>]) -> Bytes {
        let mut data = Vec::new();
        let mut records = 0u32;
        for entry in entries {
            data.extend_from_slice(entry);
            records += 1;
        }
        let u64 = |body: Body, value: u64| body.u32((value >> 32) as u32).u32(value as u32);
        let mut chunk = Body::default()
            .u8(0x50)
            .u8(0)
            .u16(entries.len() as u16)
            .u32(records);
        chunk = u64(chunk, timestamp as u64);
        chunk = u64(chunk, 1);
        chunk = u64(chunk, first_offset)
            .u32(0)
            .u32(data.len() as u32)
            .u32(0)
            .u8(bloom.len() as u8)
            .u8(0)
            .u16(0);
        chunk.0.extend_from_slice(bloom);
        chunk.0.extend_from_slice(&data);
        chunk.0.into()
    }

    fn simple(record: &[u8]) -> Vec<u8> {
        let mut entry = (record.len() as u32).to_be_bytes().to_vec();
        entry.extend_from_slice(record);
        entry
    }

    #[test]
    fn a_chunk_yields_its_records_with_their_offsets() {
        let bytes = chunk(
            40,
            1234,
            &[9; 16],
            &[simple(b"a"), simple(b"bb"), simple(b"ccc")],
        );
        let chunk = Chunk::parse(bytes).unwrap();
        assert_eq!(
            (chunk.first_offset, chunk.last_offset(), chunk.timestamp_ms),
            (40, 42, 1234)
        );
        let records: Vec<_> = chunk.records(3, 41).collect();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].offset, records[0].partition), (41, 3));
        // Not AMQP: the bytes are the value.
        assert_eq!(records[1].value, b"ccc".as_slice());
    }

    #[test]
    fn uncompressed_sub_entry_batches_are_read_and_compressed_ones_refused() {
        let batch = |compression: u32| {
            let records = [simple(b"x"), simple(b"yy")].concat();
            let mut entry = Vec::new();
            // flag, compression, 2 records, uncompressed length, length
            let head = SUB_BATCH | compression << 28 | 2 << 8;
            entry.extend_from_slice(&head.to_be_bytes());
            entry.extend_from_slice(&[0, 0, records.len() as u8]);
            entry.extend_from_slice(&(records.len() as u32).to_be_bytes());
            entry.extend_from_slice(&records);
            entry
        };
        let parsed = Chunk::parse(chunk(0, 0, &[], &[batch(0), simple(b"z")])).unwrap();
        let values: Vec<_> = parsed.records(0, 0).map(|r| r.value).collect();
        assert_eq!(values, [&b"x"[..], b"yy", b"z"]);
        assert!(Chunk::parse(chunk(0, 0, &[], &[batch(1)])).is_err());
    }

    #[test]
    fn malformed_chunks_are_errors_not_panics() {
        let good = chunk(0, 0, &[], &[simple(b"abc")]);
        for cut in 0..good.len() {
            let _ = Chunk::parse(good.slice(..cut));
        }
        let mut lying = good.to_vec();
        let at = lying.len() - 7;
        lying[at..at + 4].copy_from_slice(&100u32.to_be_bytes());
        assert!(Chunk::parse(lying.into()).is_err());
    }
}
