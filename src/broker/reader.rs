//! Reading a partition stream chunk by chunk.
//!
//! A [`ChunkReader`] is one subscription on a connection of its own while it
//! lives; a [`ReaderPool`] keeps finished readers' connections for the next
//! reader of the same node.
//!
//! The broker sends a chunk per credit, and the reader keeps at most one
//! credit outstanding, which bounds what it buffers to a single chunk.
//! (Frames reach the handler in the order they arrived: partlog builds with
//! a patched rabbitmq-stream-client, see `patches/`.) The
//! credit for the next chunk goes out when the caller asks for it, not when
//! a chunk arrives: a caller that stops asking stops the broker too, and a
//! reader done after one chunk never sends a credit that would hold its next
//! request back (the client library's sockets keep Nagle's algorithm on, so
//! a write that follows an unanswered one waits for the broker's delayed
//! acknowledgement, tens of milliseconds).
//!
//! [`super::bounds`] and the log's `Read` build on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rabbitmq_stream_client::types::{
    Message, MessageResult, OffsetSpecification, ResponseCode, ResponseKind,
};
use rabbitmq_stream_client::Client;
use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::commands::deliver::DeliverCommand;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::connect::{unavailable, Connector};
use super::node::Node;
use crate::error::{Error, Result};
use crate::record::StoredRecord;
use crate::sync::lock;
use crate::telemetry::{self, ConnectionKind};

/// One chunk as delivered: consecutive records from `first_offset`.
pub struct Chunk {
    pub first_offset: u64,
    /// When the broker wrote the chunk, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub messages: Vec<Message>,
}

impl Chunk {
    fn from_deliver(deliver: &DeliverCommand) -> Chunk {
        Chunk {
            first_offset: deliver.chunk_first_offset,
            timestamp_ms: chunk_timestamp(deliver),
            messages: deliver.messages.clone(),
        }
    }

    /// Offset of the chunk's last record.
    pub fn last_offset(&self) -> u64 {
        self.first_offset + (self.messages.len() as u64).saturating_sub(1)
    }

    /// The chunk's records from offset `from` on, as records of `partition`.
    pub fn records(&self, partition: u32, from: u64) -> impl Iterator<Item = StoredRecord> + '_ {
        let skip = from.saturating_sub(self.first_offset);
        self.messages
            .iter()
            .enumerate()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .map(move |(i, message)| {
                let offset = self.first_offset + i as u64;
                StoredRecord::from_message(message, partition, offset, self.timestamp_ms)
            })
    }
}

/// The chunk timestamp of a delivery. The protocol crate keeps the field
/// private; its encoder writes the frame fields in wire order, so encoding
/// just the fixed header (subscription id, magic, chunk type, entries,
/// records, timestamp) recovers it without copying the records.
fn chunk_timestamp(deliver: &DeliverCommand) -> i64 {
    /// Accepts the first `N` bytes, then refuses, which stops the encoder.
    struct Prefix<const N: usize> {
        bytes: [u8; N],
        len: usize,
    }
    impl<const N: usize> std::io::Write for Prefix<N> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(N - self.len);
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.bytes[self.len..self.len + n].copy_from_slice(&buf[..n]);
            self.len += n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const TIMESTAMP_AT: usize = 1 + 1 + 1 + 2 + 4;
    let mut prefix = Prefix::<{ TIMESTAMP_AT + 8 }> {
        bytes: [0; TIMESTAMP_AT + 8],
        len: 0,
    };
    let _ = deliver.encode(&mut prefix);
    let bytes: [u8; 8] = prefix.bytes[TIMESTAMP_AT..].try_into().expect("8 bytes");
    i64::from_be_bytes(bytes)
}

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

/// Events as the connection handler forwards them, tagged with the
/// subscription id of deliveries (0 for events of the connection).
type Tagged = (u8, Result<ReaderEvent>);

/// Most idle reader connections kept per node.
const MAX_IDLE_PER_NODE: usize = 8;
/// Longest wait for the broker to answer a connection's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens readers, and keeps the connections no reader uses at the moment,
/// per node; one per broker handle. Opening a connection costs the
/// handshake plus, through the client library's Nagle-enabled socket, a
/// delayed acknowledgement before the first request (about 90 ms on
/// loopback); subscribing on an idle one takes about a millisecond. Readers
/// of single active consumer groups never come back here: a group
/// consumer's connection leaves with it.
pub struct ReaderPool {
    connector: Connector,
    idle: std::sync::Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    connections: HashMap<Node, Vec<ReaderConnection>>,
    /// Set by [`ReaderPool::close`]: connections handed back are closed.
    closed: bool,
}

impl ReaderPool {
    pub fn new(connector: Connector) -> ReaderPool {
        ReaderPool {
            connector,
            idle: std::sync::Mutex::default(),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        lock(&self.idle)
    }

    /// How long one broker request may take.
    pub fn timeout(&self) -> Duration {
        self.connector.timeout()
    }

    /// An idle connection to `node` that heard nothing bad meanwhile.
    fn take(&self, node: &Node) -> Option<ReaderConnection> {
        loop {
            let mut connection = self.idle().connections.get_mut(node)?.pop()?;
            if connection.is_healthy() {
                return Some(connection);
            }
            connection.close();
        }
    }

    fn put(&self, node: Node, mut connection: ReaderConnection) {
        if connection.is_healthy() {
            let mut idle = self.idle();
            if !idle.closed {
                let connections = idle.connections.entry(node).or_default();
                if connections.len() < MAX_IDLE_PER_NODE {
                    connections.push(connection);
                    return;
                }
            }
        }
        connection.close();
    }

    /// Closes the idle connections; connections handed back later are
    /// closed too.
    pub async fn close(&self) {
        let connections: Vec<ReaderConnection> = {
            let mut idle = self.idle();
            idle.closed = true;
            idle.connections.drain().flat_map(|(_, c)| c).collect()
        };
        join_all(connections.into_iter().map(|c| c.close_within())).await;
    }
}

/// One broker connection for readers and the events its handler forwards.
struct ReaderConnection {
    client: Client,
    events: mpsc::UnboundedReceiver<Tagged>,
    /// Id of the latest subscription made on it; ids are not reused soon,
    /// so deliveries still in flight for an earlier one are recognised.
    subscription: u8,
}

impl ReaderConnection {
    async fn open(connector: &Connector, node: &Node) -> Result<ReaderConnection> {
        let client = connector.open_client(node, "partlog-reader").await?;
        let (tx, events) = mpsc::unbounded_channel::<Tagged>();
        client
            .set_handler(move |item: MessageResult| {
                let tx = tx.clone();
                async move {
                    telemetry::count_end(ConnectionKind::Reader, &item);
                    let tagged = match item {
                        Some(Ok(response)) => match response.kind_ref() {
                            ResponseKind::Deliver(deliver) => (
                                deliver.subscription_id,
                                Ok(ReaderEvent::Chunk(Chunk::from_deliver(deliver))),
                            ),
                            ResponseKind::ConsumerUpdate(update) => (
                                0,
                                Ok(ReaderEvent::ConsumerUpdate {
                                    active: update.is_active() == 1,
                                    correlation_id: update.get_correlation_id(),
                                }),
                            ),
                            ResponseKind::MetadataUpdate(_) => (
                                0,
                                Err(Error::Unavailable(
                                    "the partition's leader changed or it was deleted".into(),
                                )),
                            ),
                            _ => return Ok(()),
                        },
                        Some(Err(e)) => (0, Err(unavailable("the reading connection failed", e))),
                        None => (
                            0,
                            Err(Error::Unavailable("the reading connection closed".into())),
                        ),
                    };
                    let _ = tx.send(tagged);
                    Ok(())
                }
            })
            .await;
        Ok(ReaderConnection {
            client,
            events,
            subscription: 0,
        })
    }

    /// Open, and nothing but stale deliveries arrived since its last use
    /// (those are dropped).
    fn is_healthy(&mut self) -> bool {
        while let Ok((tag, event)) = self.events.try_recv() {
            if tag == 0 || event.is_err() {
                return false;
            }
        }
        !self.client.is_closed()
    }

    /// Closes the connection in the background.
    fn close(self) {
        tokio::spawn(self.close_within());
    }

    /// Closes the connection, waiting at most [`CLOSE_TIMEOUT`] for the
    /// broker's answer.
    async fn close_within(self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.client.close()).await;
    }
}

/// A subscription to one partition stream on a connection of its own while
/// it lives. It can be moved ([`ChunkReader::resubscribe`]); deliveries
/// still in flight for an earlier subscription are dropped.
pub struct ChunkReader {
    connection: ReaderConnection,
    node: Node,
    pool: Arc<ReaderPool>,
    /// False for group consumers, whose connection is not reused.
    reusable: bool,
    stream: String,
    /// A chunk of the current subscription arrived and its credit has not
    /// been given back yet.
    credit_owed: bool,
    timeout: Duration,
}

impl ReaderPool {
    /// A reader subscribed to `stream` on `node` from `start`. `properties`
    /// are the subscription's properties (consumer name, single active
    /// consumer, ...); a reader without any reuses an idle connection to the
    /// node.
    pub async fn open(
        self: &Arc<Self>,
        stream: &str,
        node: &Node,
        start: OffsetSpecification,
        properties: HashMap<String, String>,
    ) -> Result<ChunkReader> {
        let reusable = properties.is_empty();
        let reader = |connection| ChunkReader {
            connection,
            node: node.clone(),
            pool: self.clone(),
            reusable,
            stream: stream.to_owned(),
            credit_owed: false,
            timeout: self.timeout(),
        };
        let idle = if reusable { self.take(node) } else { None };
        if let Some(idle) = idle {
            let mut reader = reader(idle);
            match reader.subscribe(start.clone(), HashMap::new()).await {
                Ok(()) => return Ok(reader),
                // The idle connection died unnoticed: try a fresh one.
                Err(Error::Unavailable(why)) => {
                    tracing::debug!(%why, "idle reader connection failed");
                    reader.connection.close();
                }
                Err(e) => {
                    reader.close();
                    return Err(e);
                }
            }
        }
        let connection = ReaderConnection::open(&self.connector, node).await?;
        let mut reader = reader(connection);
        if let Err(e) = reader.subscribe(start, properties).await {
            reader.close();
            return Err(e);
        }
        Ok(reader)
    }
}

impl ChunkReader {
    async fn subscribe(
        &mut self,
        start: OffsetSpecification,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        let connection = &mut self.connection;
        connection.subscription = connection.subscription.wrapping_add(1).max(1);
        // A new subscription starts with one credit of its own.
        self.credit_owed = false;
        let stream = &self.stream;
        let response = tokio::time::timeout(
            self.timeout,
            connection
                .client
                .subscribe(connection.subscription, stream, start, 1, properties),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("subscribing to {stream:?} timed out")))?
        .map_err(|e| unavailable(&format!("cannot subscribe to {stream:?}"), e))?;
        match response.code() {
            ResponseCode::Ok => Ok(()),
            ResponseCode::StreamDoesNotExist => Err(Error::NotFound(format!(
                "partition stream {stream:?} does not exist"
            ))),
            code => Err(Error::Unavailable(format!(
                "cannot subscribe to {stream:?}: {code:?}"
            ))),
        }
    }

    /// Moves the reader to `start` on the same connection.
    pub async fn resubscribe(&mut self, start: OffsetSpecification) -> Result<()> {
        let previous = self.connection.subscription;
        let client = &self.connection.client;
        let _ = tokio::time::timeout(self.timeout, client.unsubscribe(previous)).await;
        self.subscribe(start, HashMap::new()).await
    }

    /// The next event, or `None` when none arrived before `deadline`.
    /// Asking for it after a chunk asks the broker for the next chunk.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<ReaderEvent>> {
        if self.credit_owed {
            self.connection
                .client
                .credit(self.connection.subscription, 1)
                .await
                .map_err(|e| unavailable("granting credit failed", e))?;
            self.credit_owed = false;
        }
        loop {
            let next = tokio::time::timeout_at(deadline, self.connection.events.recv());
            let (tag, event) = match next.await {
                Err(_) => return Ok(None),
                Ok(Some(tagged)) => tagged,
                Ok(None) => return Err(Error::Unavailable("the reading connection closed".into())),
            };
            let event = event?;
            if let ReaderEvent::Chunk(_) = event {
                if tag != self.connection.subscription {
                    continue; // In flight for a subscription since replaced.
                }
                self.credit_owed = true;
            }
            return Ok(Some(event));
        }
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
        self.connection
            .client
            .consumer_update(correlation_id, start)
            .await
            .map_err(|e| unavailable("answering a consumer update failed", e))
    }

    /// True once the client library closed the connection, which it may
    /// do (after missed heartbeats) without telling the handler.
    pub fn is_closed(&self) -> bool {
        self.connection.client.is_closed()
    }

    /// Unsubscribes in the background, then hands the connection to the
    /// pool or closes it: the caller has what it needs and should not wait
    /// for the broker.
    pub fn close(self) {
        tokio::spawn(async move {
            let unsubscribe = self
                .connection
                .client
                .unsubscribe(self.connection.subscription);
            let unsubscribed = tokio::time::timeout(self.timeout, unsubscribe)
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.code() == &ResponseCode::Ok));
            if self.reusable && unsubscribed {
                self.pool.put(self.node, self.connection);
            } else {
                self.connection.close_within().await;
            }
        });
    }
}
