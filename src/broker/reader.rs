//! Reading partition streams chunk by chunk, on connections shared per
//! node.
//!
//! A [`ChunkReader`] is one subscription. Subscriptions to a node share its
//! reader connections, up to 256 per connection (the protocol numbers a
//! connection's subscriptions with one byte): a node's readers need a
//! connection per 256 of them, not one each. The connection's handler
//! routes each frame to its subscription's own queue by subscription id and
//! never waits, so a subscriber that stops reading stops only its own
//! subscription. Ids are not reused on a connection: a delivery still on
//! its way for a subscription that ended can never reach another. A
//! connection whose ids are used up takes no new subscription and closes
//! when its last one ends.
//!
//! The broker sends a chunk per credit, and a reader keeps at most one
//! credit outstanding, which bounds what it buffers to a single chunk.
//! (Frames reach the handler in the order they arrived: partlog builds with
//! a patched rabbitmq-stream-client, see `patches/`.) The credit for the
//! next chunk goes out when the caller asks for it, not when a chunk
//! arrives: a caller that stops asking stops the broker too, and a reader
//! done after one chunk never sends a credit that would hold its next
//! request back (the client library's sockets keep Nagle's algorithm on, so
//! a write that follows an unanswered one waits for the broker's delayed
//! acknowledgement, tens of milliseconds).
//!
//! [`super::bounds`] and the log's `Read` build on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use rabbitmq_stream_client::types::{
    Message, MessageResult, OffsetSpecification, ResponseCode, ResponseKind,
};
use rabbitmq_stream_client::Client;
use rabbitmq_stream_protocol::commands::deliver::DeliverCommand;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::connect::{unavailable, Connector};
use super::node::Node;
use crate::error::{Error, Result};
use crate::record::StoredRecord;
use crate::sync::lock;

/// One chunk as delivered: consecutive records from `first_offset`.
pub struct Chunk {
    pub first_offset: u64,
    /// When the broker wrote the chunk, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub messages: Vec<Message>,
}

impl Chunk {
    fn from_deliver(deliver: DeliverCommand) -> Chunk {
        Chunk {
            first_offset: deliver.chunk_first_offset,
            timestamp_ms: deliver.timestamp() as i64,
            messages: deliver.messages,
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
/// Longest wait for the broker to answer a connection's close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens readers on the reader connections of each node; one per broker
/// handle. Opening a connection costs the handshake plus, through the
/// client library's Nagle-enabled socket, a delayed acknowledgement before
/// the first request (about 90 ms on loopback); subscribing on an open one
/// takes about a millisecond.
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

/// One broker connection for readers and the routes of its subscriptions.
struct ReaderConnection {
    client: Client,
    routes: Arc<Routes>,
}

/// A connection's subscriptions by id, shared with its handler.
#[derive(Default)]
struct Routes {
    state: Mutex<RouteState>,
}

#[derive(Default)]
struct RouteState {
    by_id: HashMap<u8, Route>,
    /// Ids given so far; each is given once.
    given: u16,
    /// The connection failed or closed.
    failed: bool,
}

/// Where one subscription's frames go.
struct Route {
    stream: String,
    events: mpsc::UnboundedSender<Result<ReaderEvent>>,
}

impl RouteState {
    /// A fresh id for a subscription to `stream`; `None` when the ids are
    /// used up or the connection failed.
    fn add(&mut self, stream: &str) -> Option<(u8, mpsc::UnboundedReceiver<Result<ReaderEvent>>)> {
        if self.failed || self.given >= IDS_PER_CONNECTION {
            return None;
        }
        let id = self.given as u8;
        self.given += 1;
        let (events, receiver) = mpsc::unbounded_channel();
        let stream = stream.to_owned();
        self.by_id.insert(id, Route { stream, events });
        Some((id, receiver))
    }

    /// Takes no new subscription and holds none: to be closed.
    fn spent(&self) -> bool {
        self.by_id.is_empty() && (self.failed || self.given >= IDS_PER_CONNECTION)
    }

    fn fail_all(&mut self, error: &Error) {
        self.failed = true;
        for route in self.by_id.values() {
            let _ = route.events.send(Err(error.clone()));
        }
    }
}

impl Routes {
    fn state(&self) -> std::sync::MutexGuard<'_, RouteState> {
        lock(&self.state)
    }

    /// Hands a frame of the connection to the subscription it concerns.
    fn dispatch(&self, item: MessageResult) {
        let (id, event) = match item {
            Some(Ok(response)) => match response.kind() {
                ResponseKind::Deliver(deliver) => (
                    deliver.subscription_id,
                    ReaderEvent::Chunk(Chunk::from_deliver(deliver)),
                ),
                ResponseKind::ConsumerUpdate(update) => (
                    update.subscription_id(),
                    ReaderEvent::ConsumerUpdate {
                        active: update.is_active() == 1,
                        correlation_id: update.get_correlation_id(),
                    },
                ),
                ResponseKind::MetadataUpdate(update) => {
                    // The stream moved or was deleted: the broker dropped
                    // its subscriptions (all of them when it named none).
                    let gone = Error::Unavailable(
                        "the partition's leader changed or it was deleted".into(),
                    );
                    let stream = update.stream();
                    let state = self.state();
                    for route in state.by_id.values() {
                        if stream.is_empty() || route.stream == stream {
                            let _ = route.events.send(Err(gone.clone()));
                        }
                    }
                    return;
                }
                _ => return,
            },
            Some(Err(e)) => {
                self.state()
                    .fail_all(&unavailable("the reading connection failed", e));
                return;
            }
            None => {
                let closed = Error::Unavailable("the reading connection closed".into());
                self.state().fail_all(&closed);
                return;
            }
        };
        // A subscription that ended meanwhile hears nothing more.
        if let Some(route) = self.state().by_id.get(&id) {
            let _ = route.events.send(Ok(event));
        }
    }
}

impl ReaderConnection {
    async fn open(connector: &Connector, node: &Node) -> Result<ReaderConnection> {
        let client = connector.open_client(node, "partlog-reader").await?;
        let routes = Arc::new(Routes::default());
        client
            .set_handler({
                let routes = routes.clone();
                move |item: MessageResult| {
                    let routes = routes.clone();
                    async move {
                        routes.dispatch(item);
                        Ok(())
                    }
                }
            })
            .await;
        Ok(ReaderConnection { client, routes })
    }

    fn takes_subscriptions(&self) -> bool {
        let state = self.routes.state();
        !state.failed && state.given < IDS_PER_CONNECTION && !self.client.is_closed()
    }

    /// Closes the connection, waiting at most [`CLOSE_TIMEOUT`].
    async fn close(&self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.client.close()).await;
    }
}

impl ReaderPool {
    pub fn new(connector: Connector) -> ReaderPool {
        ReaderPool {
            connector,
            by_node: tokio::sync::Mutex::default(),
        }
    }

    /// How long one broker request may take.
    pub fn timeout(&self) -> Duration {
        self.connector.timeout()
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
            timeout: self.timeout(),
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
        connections.retain(|c| c.takes_subscriptions() || !c.routes.state().by_id.is_empty());
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

    /// Removes a subscription's route; closes its connection when it has
    /// no other and takes no new one, or when the node has idle
    /// connections enough.
    async fn detach(&self, node: &Node, connection: &Arc<ReaderConnection>, id: u8) {
        let close = {
            let mut pool = self.by_node.lock().await;
            let closed = pool.closed;
            connection.routes.state().by_id.remove(&id);
            let connections = pool.connections.entry(node.clone()).or_default();
            let idle = connections
                .iter()
                .filter(|c| c.routes.state().by_id.is_empty())
                .count();
            let state = connection.routes.state();
            let close =
                state.by_id.is_empty() && (closed || state.spent() || idle > MAX_IDLE_PER_NODE);
            drop(state);
            if close {
                connections.retain(|c| !Arc::ptr_eq(c, connection));
            }
            close
        };
        if close {
            connection.close().await;
        }
    }

    /// Closes every connection; later readers fail with UNAVAILABLE.
    pub async fn close(&self) {
        let connections: Vec<Arc<ReaderConnection>> = {
            let mut pool = self.by_node.lock().await;
            pool.closed = true;
            pool.connections.drain().flat_map(|(_, c)| c).collect()
        };
        join_all(connections.iter().map(|c| c.close())).await;
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
    timeout: Duration,
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
        let response = tokio::time::timeout(
            self.timeout,
            self.connection
                .client
                .subscribe(self.id, stream, start, 1, properties),
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
            self.connection
                .client
                .credit(self.id, 1)
                .await
                .map_err(|e| unavailable("granting credit failed", e))?;
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
        self.connection
            .client
            .consumer_update(correlation_id, start)
            .await
            .map_err(|e| unavailable("answering a consumer update failed", e))
    }

    /// True once the connection closed, which the client library may do
    /// (after missed heartbeats) without telling the handler.
    pub fn is_closed(&self) -> bool {
        self.connection.client.is_closed() || self.connection.routes.state().failed
    }

    /// Unsubscribes in the background and gives the id's route up: the
    /// caller has what it needs and should not wait for the broker.
    pub fn close(self) {
        tokio::spawn(async move {
            let unsubscribe = self.connection.client.unsubscribe(self.id);
            let _ = tokio::time::timeout(self.timeout, unsubscribe).await;
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
    async fn a_failed_connection_tells_every_subscription_and_takes_no_more() {
        let mut state = RouteState::default();
        let (_, mut a) = state.add("s-0").unwrap();
        let (_, mut b) = state.add("s-1").unwrap();
        state.fail_all(&Error::Unavailable("gone".into()));
        assert!(matches!(a.recv().await, Some(Err(Error::Unavailable(_)))));
        assert!(matches!(b.recv().await, Some(Err(Error::Unavailable(_)))));
        assert!(state.add("s-2").is_none());
    }
}
