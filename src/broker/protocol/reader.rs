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
//! The broker sends a chunk per credit. A reader keeps a window of credits
//! sized by the chunks it receives: one for chunks of [`WINDOW_BYTES`] or
//! more, up to [`MAX_CREDITS`] for small ones (a partition written a few
//! records at a time, or with `max_chunk_records`), so that small chunks
//! do not cost a round trip each, and what a reader buffers stays near
//! [`WINDOW_BYTES`] (or one chunk). Credits go back when the caller asks
//! for the next chunk, not when a chunk arrives: a caller that stops asking
//! stops the broker too.
//!
//! [`super::bounds`] and the log's `Read` build on it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::chunk::{data_loss, Chunk};
use super::link::{Frames, Link};
use super::wire::{
    self, Body, Frame, Reader, CODE_OK, CODE_STREAM_DOES_NOT_EXIST, CONSUMER_UPDATE, CREDIT,
    DELIVER, METADATA_UPDATE, RESPONSE, STREAM_STATS, SUBSCRIBE, UNSUBSCRIBE,
};
use crate::broker::connect::Connector;
use crate::broker::node::Node;
use crate::broker::super_stream::Partition;
use crate::error::{Error, Reason, Result};
use crate::record::RecordFilter;
use crate::sync::lock;
use crate::telemetry::{ConnectionKind, StreamMetrics};

/// Where in a partition stream a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    First,
    /// The last chunk.
    Last,
    /// Only chunks written from now on.
    Next,
    Offset(u64),
    /// The first chunk stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl ReadFrom {
    /// The protocol's offset specification: its type, then its value.
    fn encode(self, body: Body) -> Body {
        match self {
            ReadFrom::First => body.u16(1),
            ReadFrom::Last => body.u16(2),
            ReadFrom::Next => body.u16(3),
            ReadFrom::Offset(offset) => body.u16(4).u64(offset),
            ReadFrom::Timestamp(ms) => body.u16(5).u64(ms as u64),
        }
    }
}

/// Who a subscription reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer<'a> {
    /// On its own: the broker delivers from the start position.
    Alone,
    /// A single active consumer of `group` in super stream mode: the broker
    /// activates one member per partition (with a consumer update, answered
    /// with where to start) and spreads a group's partitions over its
    /// members. `member` is partlog's name of it (`host:port#n`), which
    /// the broker keeps with the subscription (property `partlog.member`)
    /// so that any instance can tell whose it is (`DescribeGroup`).
    Member { group: &'a str, member: &'a str },
}

/// What a subscription hears from the broker.
#[derive(Debug)]
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
/// Bytes of chunks a reader lets the broker send ahead of its caller.
const WINDOW_BYTES: usize = 1024 * 1024;
/// Most credits a reader keeps with the broker.
const MAX_CREDITS: u16 = 64;

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

/// One broker connection for readers ([`Link`]) and the routes of its
/// subscriptions, which its reading task feeds.
struct ReaderConnection {
    link: Link,
    routes: Arc<Routes>,
}

/// A connection's subscriptions by id, shared with its reading task.
#[derive(Default)]
struct Routes {
    state: Mutex<RouteState>,
}

#[derive(Default)]
struct RouteState {
    by_id: HashMap<u8, Route>,
    /// Ids given so far; each is given once.
    given: u16,
}

/// What the reading task hands a subscription: a chunk still as its bytes
/// (the subscription reads it, off the connection's task), or a consumer
/// update.
enum Delivered {
    Chunk(Bytes),
    ConsumerUpdate { active: bool, correlation_id: u32 },
}

type Deliveries = mpsc::UnboundedReceiver<Result<Delivered>>;

/// Where one subscription's frames go.
struct Route {
    stream: String,
    /// The consumer group of a single active consumer.
    group: Option<String>,
    events: mpsc::UnboundedSender<Result<Delivered>>,
}

impl RouteState {
    /// A fresh id for a subscription to `stream` as `consumer`; `None` when
    /// the ids are used up, or when the connection carries a member of the
    /// same group on the same stream: RabbitMQ before 4.0.8 could activate
    /// a consumer of a dead connection when several consumers of one group
    /// shared it (rabbitmq-server #13657), leaving the partition without an
    /// active member, so a group's members never share a connection.
    fn add(&mut self, stream: &str, consumer: Consumer<'_>) -> Option<(u8, Deliveries)> {
        let group = match consumer {
            Consumer::Alone => None,
            Consumer::Member { group, .. } => Some(group),
        };
        let same_group = |route: &Route| route.stream == stream && route.group.as_deref() == group;
        if self.given >= IDS_PER_CONNECTION
            || (group.is_some() && self.by_id.values().any(same_group))
        {
            return None;
        }
        let id = u8::try_from(self.given).ok()?;
        self.given = self.given.saturating_add(1);
        let (events, receiver) = mpsc::unbounded_channel();
        let route = Route {
            stream: stream.to_owned(),
            group: group.map(str::to_owned),
            events,
        };
        self.by_id.insert(id, route);
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

    fn route(&self, id: u8, event: Delivered) {
        // A subscription that ended meanwhile hears nothing more.
        if let Some(route) = self.state().by_id.get(&id) {
            let _ = route.events.send(Ok(event));
        }
    }
}

impl Frames for Routes {
    /// Hands a frame to the subscription it concerns.
    fn frame(&self, frame: Frame) -> Result<()> {
        let mut body = Reader::new(frame.body);
        match frame.key {
            DELIVER => {
                let id = body.u8()?;
                if frame.version >= 2 {
                    body.u64()?; // the committed chunk id
                }
                self.route(id, Delivered::Chunk(body.rest()));
            }
            CONSUMER_UPDATE => {
                let correlation_id = body.u32()?;
                let id = body.u8()?;
                let active = body.u8()? == 1;
                let update = Delivered::ConsumerUpdate {
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
                let gone = Error::new(
                    Reason::PartitionMoved,
                    "the partition's leader changed or it was deleted",
                );
                let state = self.state();
                for route in state.by_id.values() {
                    if stream.is_empty() || route.stream == stream {
                        let _ = route.events.send(Err(gone.clone()));
                    }
                }
            }
            // A credit is answered only when it failed: for a subscription
            // that ended meanwhile, nothing to do.
            key if key == CREDIT | RESPONSE => {}
            key => {
                tracing::debug!("reader connection ignores frame {key:#06x}");
            }
        }
        Ok(())
    }

    /// Tells every subscription the connection is gone: its subscriber
    /// reconnects.
    fn ended(&self, why: &Error) {
        for route in self.state().by_id.values() {
            let _ = route.events.send(Err(why.clone()));
        }
    }
}

impl ReaderConnection {
    async fn open(connector: &Connector, node: &Node) -> Result<ReaderConnection> {
        let routes = Arc::new(Routes::default());
        let link = Link::open(
            connector,
            node,
            "partlog-reader",
            ConnectionKind::Reader,
            MAX_DELIVERY,
            routes.clone(),
        )
        .await?;
        Ok(ReaderConnection { link, routes })
    }

    fn has_failed(&self) -> bool {
        self.link.has_failed()
    }

    fn takes_subscriptions(&self) -> bool {
        !self.has_failed() && self.routes.state().given < IDS_PER_CONNECTION
    }

    /// Sends a request (its body after the correlation id) and returns the
    /// code of its answer.
    async fn request(&self, key: u16, body: &[u8], what: &str) -> Result<u16> {
        self.link.request(key, body, what).await?.u16()
    }
}

impl ReaderPool {
    pub fn new(connector: Connector) -> ReaderPool {
        ReaderPool {
            connector,
            by_node: tokio::sync::Mutex::default(),
        }
    }

    /// A reader of `partition` on `node` from `start`, as `consumer`; with
    /// a `filter`, the broker sends only the chunks that may hold records
    /// it keeps (the reader's caller keeps exactly those).
    pub async fn open(
        self: &Arc<Self>,
        partition: &Partition,
        node: &Node,
        start: ReadFrom,
        consumer: Consumer<'_>,
        filter: Option<Arc<RecordFilter>>,
    ) -> Result<ChunkReader> {
        self.subscribe(PartitionName::of(partition), node, start, consumer, filter)
            .await
    }

    async fn subscribe(
        self: &Arc<Self>,
        partition: PartitionName,
        node: &Node,
        start: ReadFrom,
        consumer: Consumer<'_>,
        filter: Option<Arc<RecordFilter>>,
    ) -> Result<ChunkReader> {
        let (connection, id, events) = self.attach(node, &partition.stream, consumer).await?;
        let mut reader = ChunkReader {
            connection,
            id,
            events,
            node: node.clone(),
            pool: self.clone(),
            metrics: crate::telemetry::stream(&partition.super_stream),
            partition,
            filter,
            credits: Credits::default(),
            stash: VecDeque::new(),
        };
        if let Err(e) = reader.subscribe(start, consumer).await {
            reader.close();
            return Err(e);
        }
        Ok(reader)
    }

    /// A route on a connection to `node` that takes the subscription,
    /// opening a connection when none does.
    async fn attach(
        &self,
        node: &Node,
        stream: &str,
        consumer: Consumer<'_>,
    ) -> Result<(Arc<ReaderConnection>, u8, Deliveries)> {
        let mut pool = self.by_node.lock().await;
        if pool.closed {
            return Err(Error::new(Reason::ShuttingDown, "partlog is shutting down"));
        }
        let connections = pool.connections.entry(node.clone()).or_default();
        connections.retain(|c| !c.has_failed());
        for connection in connections.iter().filter(|c| c.takes_subscriptions()) {
            if let Some((id, events)) = connection.routes.state().add(stream, consumer) {
                return Ok((connection.clone(), id, events));
            }
        }
        let connection = Arc::new(ReaderConnection::open(&self.connector, node).await?);
        let (id, events) = connection
            .routes
            .state()
            .add(stream, consumer)
            .ok_or_else(|| {
                Error::new(
                    Reason::BrokerProtocolError,
                    "a new reader connection refused a subscription",
                )
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
            && (closed || state.spent() || connection.has_failed() || idle > MAX_IDLE_PER_NODE);
        drop(state);
        if close {
            connections.retain(|c| !Arc::ptr_eq(c, connection));
            connection.link.close();
        }
    }

    /// Closes every connection; later readers fail with UNAVAILABLE.
    pub async fn close(&self) {
        let mut pool = self.by_node.lock().await;
        pool.closed = true;
        for connection in pool.connections.drain().flat_map(|(_, c)| c) {
            connection.link.close();
        }
    }
}

/// The properties of a subscription: single active consumer in super
/// stream mode for a group member, and the filter values
/// (`filter.0`, `filter.1`, …, with `match-unfiltered`; RabbitMQ 3.13+,
/// older brokers ignore them and send every chunk).
/// The subscription property that names a group member partlog made.
pub const MEMBER_PROPERTY: &str = "partlog.member";

fn subscription_properties(
    body: Body,
    consumer: Consumer<'_>,
    super_stream: &str,
    filter: Option<&RecordFilter>,
) -> Result<Body> {
    let mut properties: Vec<(String, &str)> = Vec::new();
    if let Consumer::Member { group, member } = consumer {
        properties.push(("single-active-consumer".into(), "true"));
        properties.push(("name".into(), group));
        properties.push(("super-stream".into(), super_stream));
        properties.push((MEMBER_PROPERTY.into(), member));
    }
    if let Some(filter) = filter {
        for (index, value) in filter.broker_values().enumerate() {
            properties.push((format!("filter.{index}"), value));
        }
        let unfiltered = if filter.include_unfiltered() {
            "true"
        } else {
            "false"
        };
        properties.push(("match-unfiltered".into(), unfiltered));
    }
    let count = u32::try_from(properties.len()).map_err(|_| {
        Error::new(
            Reason::BrokerProtocolError,
            "too many subscription properties",
        )
    })?;
    let mut body = body.u32(count);
    for (name, value) in properties {
        body = body.string(&name)?.string(value)?;
    }
    Ok(body)
}

/// A subscription to one partition stream on a shared connection.
pub struct ChunkReader {
    connection: Arc<ReaderConnection>,
    id: u8,
    events: Deliveries,
    node: Node,
    pool: Arc<ReaderPool>,
    partition: PartitionName,
    /// What the broker was asked to send of the partition; `None`: all.
    filter: Option<Arc<RecordFilter>>,
    /// The super stream's series, counting the chunks received.
    metrics: Arc<StreamMetrics>,
    credits: Credits,
    /// Chunks that arrived while the caller held one (see
    /// [`ChunkReader::next_held`]), next in line.
    stash: VecDeque<Chunk>,
}

/// A subscription's credit window: credits the broker holds plus chunks
/// arrived and not yet handed out plus `owed` make `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Credits {
    window: u16,
    /// Chunks handed to the caller whose credit was not given back yet.
    owed: u16,
    /// The window the chunks handed out last ask for.
    target: u16,
}

impl Default for Credits {
    /// A new subscription's: the one credit it subscribes with.
    fn default() -> Credits {
        Credits {
            window: 1,
            owed: 0,
            target: 1,
        }
    }
}

impl Credits {
    /// A chunk of `bytes` went to the caller.
    fn handed_out(&mut self, bytes: usize) {
        self.owed = self.owed.saturating_add(1);
        let fits = WINDOW_BYTES.checked_div(bytes).unwrap_or(WINDOW_BYTES);
        self.target = u16::try_from(fits)
            .unwrap_or(u16::MAX)
            .clamp(1, MAX_CREDITS);
    }

    /// The credits to give back now (0: none), the window moved to the
    /// target as far as what is owed allows.
    fn give_back(&mut self) -> u16 {
        if self.owed == 0 {
            return 0;
        }
        let give = if self.target >= self.window {
            let grow = self.target.saturating_sub(self.window);
            self.window = self.target;
            self.owed.saturating_add(grow)
        } else {
            let shrink = self.owed.min(self.window.saturating_sub(self.target));
            self.window = self.window.saturating_sub(shrink);
            self.owed.saturating_sub(shrink)
        };
        self.owed = 0;
        give
    }
}

/// What a reader knows of its partition: the names its subscription and
/// its errors use.
#[derive(Debug, Clone)]
struct PartitionName {
    super_stream: Arc<str>,
    index: u32,
    stream: String,
}

impl PartitionName {
    fn of(partition: &Partition) -> PartitionName {
        PartitionName {
            super_stream: partition.super_stream.clone(),
            index: partition.index,
            stream: partition.stream.clone(),
        }
    }
}

impl ChunkReader {
    async fn subscribe(&mut self, start: ReadFrom, consumer: Consumer<'_>) -> Result<()> {
        // A new subscription starts with one credit of its own.
        self.credits = Credits::default();
        let stream = &self.partition.stream;
        let body = Body::default().u8(self.id).string(stream)?;
        let body = start.encode(body).u16(1);
        let body = subscription_properties(
            body,
            consumer,
            &self.partition.super_stream,
            self.filter.as_deref(),
        )?;
        let what = format!("subscribing to {stream:?}");
        match self.connection.request(SUBSCRIBE, &body.0, &what).await? {
            CODE_OK => Ok(()),
            CODE_STREAM_DOES_NOT_EXIST => Err(Error::new(
                Reason::PartitionNotFound,
                format!("partition stream {stream:?} does not exist"),
            )),
            code => Err(Error::new(
                Reason::BrokerUnavailable,
                format!("cannot subscribe to {stream:?}: the broker answered {code:#04x}"),
            )),
        }
    }

    /// Moves the reader to `start`, reading what `filter` asks for: a new
    /// subscription to the same stream on the same node, this one ended.
    pub async fn resubscribe(
        &mut self,
        start: ReadFrom,
        filter: Option<Arc<RecordFilter>>,
    ) -> Result<()> {
        let moved = self
            .pool
            .subscribe(
                self.partition.clone(),
                &self.node,
                start,
                Consumer::Alone,
                filter,
            )
            .await?;
        std::mem::replace(self, moved).close();
        Ok(())
    }

    /// The next chunk the broker has for this subscription now, or `None`
    /// when it has none: it reached the end of what the node had
    /// committed (with a filter: having skipped every chunk after the last
    /// one it sent that cannot hold the filter's values). The broker's
    /// connection process sends the chunks a credit allows before it reads
    /// the next request, so the answer to a request sent after the credit
    /// comes after those chunks.
    pub async fn next_chunk_now(&mut self) -> Result<Option<Chunk>> {
        self.ask_next().await?;
        if let Some(chunk) = self.arrived_chunk()? {
            return Ok(Some(chunk));
        }
        let stream = &self.partition.stream;
        let body = Body::default().string(stream)?;
        let what = format!("asking the broker for the statistics of {stream:?}");
        match self
            .connection
            .request(STREAM_STATS, &body.0, &what)
            .await?
        {
            CODE_OK => self.arrived_chunk(),
            CODE_STREAM_DOES_NOT_EXIST => Err(Error::new(
                Reason::PartitionNotFound,
                format!("partition stream {stream:?} does not exist"),
            )),
            code => Err(Error::new(
                Reason::BrokerUnavailable,
                format!("the broker answered {code:#04x} asking for the statistics of {stream:?}"),
            )),
        }
    }

    /// The next event, or `None` when none arrived before `deadline`.
    /// Asking for it after a chunk asks the broker for the next chunk.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<ReaderEvent>> {
        self.ask_next().await?;
        match tokio::time::timeout_at(deadline, self.next_arrived()).await {
            Err(_) => Ok(None),
            Ok(event) => event.map(Some),
        }
    }

    /// Gives the credits of the chunks handed out back (the window grown
    /// or shrunk to what their size asks for): the broker sends the next
    /// chunks once it has them, to wait here until asked for.
    pub async fn ask_next(&mut self) -> Result<()> {
        let give = self.credits.give_back();
        if give > 0 {
            let credit = Body::default().u8(self.id).u16(give);
            self.connection
                .link
                .send(&wire::frame(CREDIT, &credit.0))
                .await?;
        }
        Ok(())
    }

    /// Hands a chunk to the caller: its credit is owed from now on.
    fn hand_out(&mut self, chunk: Chunk) -> Chunk {
        self.credits.handed_out(chunk.size());
        chunk
    }

    /// A chunk that arrived already, without waiting; `None` when none
    /// did. For subscriptions without single active consumer.
    pub fn arrived_chunk(&mut self) -> Result<Option<Chunk>> {
        if let Some(chunk) = self.stash.pop_front() {
            return Ok(Some(self.hand_out(chunk)));
        }
        loop {
            let delivered = match self.events.try_recv() {
                Ok(delivered) => delivered?,
                Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::new(
                        Reason::BrokerUnavailable,
                        "the reading connection closed",
                    ))
                }
            };
            if let ReaderEvent::Chunk(chunk) = self.event(delivered)? {
                return Ok(Some(self.hand_out(chunk)));
            }
        }
    }

    /// The next consumer update, without giving credits back: while a
    /// subscriber holds a chunk it cannot hand on, the broker sends at
    /// most the chunks of its window, which wait in line. An update drops
    /// the chunks waiting: they were sent before it, for an activation that
    /// ended (the next activation starts where its update says).
    /// Returns whether the update made it active, and its correlation id.
    pub async fn next_held(&mut self) -> Result<(bool, u32)> {
        loop {
            let delivered = match self.events.recv().await {
                Some(delivered) => delivered?,
                None => {
                    return Err(Error::new(
                        Reason::BrokerUnavailable,
                        "the reading connection closed",
                    ))
                }
            };
            match self.event(delivered)? {
                ReaderEvent::Chunk(chunk) => self.stash.push_back(chunk),
                ReaderEvent::ConsumerUpdate {
                    active,
                    correlation_id,
                } => {
                    self.drop_stash();
                    return Ok((active, correlation_id));
                }
            }
        }
    }

    /// Drops the chunks waiting in line; their credits count as owed.
    fn drop_stash(&mut self) {
        for chunk in std::mem::take(&mut self.stash) {
            self.hand_out(chunk);
        }
    }

    /// The next event: a chunk waiting in line, or what arrives.
    async fn next_arrived(&mut self) -> Result<ReaderEvent> {
        if let Some(chunk) = self.stash.pop_front() {
            return Ok(ReaderEvent::Chunk(self.hand_out(chunk)));
        }
        let delivered = match self.events.recv().await {
            Some(delivered) => delivered?,
            None => {
                return Err(Error::new(
                    Reason::BrokerUnavailable,
                    "the reading connection closed",
                ))
            }
        };
        Ok(match self.event(delivered)? {
            ReaderEvent::Chunk(chunk) => ReaderEvent::Chunk(self.hand_out(chunk)),
            update => update,
        })
    }

    /// What a delivery is to the subscriber.
    fn event(&mut self, delivered: Delivered) -> Result<ReaderEvent> {
        Ok(match delivered {
            Delivered::Chunk(bytes) => {
                self.metrics.chunk_received(bytes.len());
                let partition = &self.partition;
                ReaderEvent::Chunk(Chunk::parse(bytes).map_err(|why| {
                    data_loss(&partition.super_stream, partition.index, None, &why)
                })?)
            }
            Delivered::ConsumerUpdate {
                active,
                correlation_id,
            } => ReaderEvent::ConsumerUpdate {
                active,
                correlation_id,
            },
        })
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
    pub async fn answer_update(&self, correlation_id: u32, start: ReadFrom) -> Result<()> {
        let body = start.encode(Body::default().u32(correlation_id).u16(CODE_OK));
        self.connection
            .link
            .send(&wire::frame(CONSUMER_UPDATE | RESPONSE, &body.0))
            .await
    }

    /// True once the connection failed or closed.
    pub fn is_closed(&self) -> bool {
        self.connection.has_failed()
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
    use crate::error::Kind;

    const GROUP: Consumer<'static> = Consumer::Member {
        group: "billing",
        member: "localhost:50051#7",
    };

    #[test]
    fn ids_are_given_once_and_a_spent_connection_is_closed() {
        let mut state = RouteState::default();
        let (first, _a) = state.add("s-0", Consumer::Alone).unwrap();
        let (second, _b) = state.add("s-1", Consumer::Alone).unwrap();
        assert_eq!((first, second), (0, 1));
        state.by_id.remove(&first);
        let (third, _c) = state.add("s-0", Consumer::Alone).unwrap();
        assert_eq!(third, 2, "a freed id is not given again");
        let mut receivers = Vec::new();
        while let Some((_, receiver)) = state.add("s-2", Consumer::Alone) {
            receivers.push(receiver);
        }
        assert_eq!(state.given, IDS_PER_CONNECTION);
        assert!(!state.spent(), "still carries subscriptions");
        state.by_id.clear();
        assert!(state.spent());
    }

    #[test]
    fn members_of_one_group_on_one_stream_never_share_a_connection() {
        let mut state = RouteState::default();
        let (member, _a) = state.add("s-0", GROUP).unwrap();
        assert!(state.add("s-0", GROUP).is_none(), "the same group's member");
        let other = Consumer::Member {
            group: "audit",
            member: "localhost:50051#8",
        };
        let (_, _b) = state.add("s-0", other).unwrap();
        let (_, _c) = state.add("s-1", GROUP).unwrap();
        let (_, _d) = state.add("s-0", Consumer::Alone).unwrap();
        let (_, _e) = state.add("s-0", Consumer::Alone).unwrap();
        state.by_id.remove(&member);
        assert!(state.add("s-0", GROUP).is_some(), "once the first left");
    }

    #[tokio::test]
    async fn a_failed_connection_tells_every_subscription() {
        let routes = Routes::default();
        let (_, mut a) = routes.state().add("s-0", Consumer::Alone).unwrap();
        let (_, mut b) = routes.state().add("s-1", GROUP).unwrap();
        routes.ended(&Error::new(Reason::BrokerUnavailable, "gone"));
        assert!(matches!(a.recv().await, Some(Err(ref e)) if e.kind() == Kind::Unavailable));
        assert!(matches!(b.recv().await, Some(Err(ref e)) if e.kind() == Kind::Unavailable));
    }

    #[test]
    fn start_positions_encode_as_the_protocol_says() {
        let encoded = |start: ReadFrom| start.encode(Body::default()).0;
        assert_eq!(encoded(ReadFrom::First), [0, 1]);
        assert_eq!(encoded(ReadFrom::Last), [0, 2]);
        assert_eq!(encoded(ReadFrom::Next), [0, 3]);
        assert_eq!(
            encoded(ReadFrom::Offset(258)),
            [0, 4, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            encoded(ReadFrom::Timestamp(-1)),
            [0, 5, 255, 255, 255, 255, 255, 255, 255, 255]
        );
    }

    #[test]
    fn the_credit_window_follows_the_size_of_the_chunks_handed_out() {
        let mut credits = Credits::default();
        assert_eq!(credits.give_back(), 0, "nothing handed out");
        // Small chunks: the window grows to what a MiB of them holds, at
        // most MAX_CREDITS.
        credits.handed_out(100 * 1024);
        assert_eq!(credits.give_back(), 10, "the one owed and 9 more");
        assert_eq!(credits.window, 10);
        for _ in 0..3 {
            credits.handed_out(100);
        }
        assert_eq!(credits.give_back(), 3 + (MAX_CREDITS - 10));
        assert_eq!(credits.window, MAX_CREDITS);
        // Large chunks: the window shrinks as chunks are handed out, to
        // one credit.
        credits.handed_out(4 * WINDOW_BYTES);
        assert_eq!(credits.give_back(), 0, "shrinks by the one owed");
        assert_eq!(credits.window, MAX_CREDITS - 1);
        for _ in 0..MAX_CREDITS {
            credits.handed_out(4 * WINDOW_BYTES);
        }
        credits.give_back();
        assert_eq!(credits.window, 1);
        credits.handed_out(4 * WINDOW_BYTES);
        assert_eq!(credits.give_back(), 1, "one chunk at a time");
    }

    #[test]
    fn subscription_properties_name_the_group_and_the_filter_values() {
        let properties = |consumer, filter: Option<&RecordFilter>| {
            let body =
                subscription_properties(Body::default(), consumer, "orders", filter).unwrap();
            let mut reader = Reader::new(bytes::Bytes::from(body.0));
            let count = reader.u32().unwrap();
            (0..count)
                .map(|_| (reader.string().unwrap(), reader.string().unwrap()))
                .collect::<Vec<_>>()
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(properties(Consumer::Alone, None), []);
        let values = ["us".to_string(), "eu".to_string()].into();
        let filter = RecordFilter::new(values, true).with_epoch_markers(true);
        assert_eq!(
            properties(GROUP, Some(&filter)),
            [
                pair("single-active-consumer", "true"),
                pair("name", "billing"),
                pair("super-stream", "orders"),
                pair("partlog.member", "localhost:50051#7"),
                pair("filter.0", "eu"),
                pair("filter.1", "us"),
                pair("filter.2", "partlog.epoch"),
                pair("match-unfiltered", "true"),
            ]
        );
        let strict = RecordFilter::new(["eu".to_string()].into(), false);
        assert_eq!(
            properties(Consumer::Alone, Some(&strict)),
            [pair("filter.0", "eu"), pair("match-unfiltered", "false")]
        );
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::broker::protocol::chunk::tests::{chunk, simple};
        use crate::generative::{check, damaged};

        /// A frame the broker sends a reader's subscriptions: key, version
        /// and a valid body.
        fn frame() -> impl Strategy<Value = (u16, u16, Vec<u8>)> {
            let deliver = (0u8..3, 1u16..=2, prop::collection::vec(any::<u8>(), 0..20)).prop_map(
                |(id, version, record)| {
                    let mut body = Body::default().u8(id);
                    if version == 2 {
                        body = body.u64(7);
                    }
                    body.0
                        .extend_from_slice(&chunk(0, 1, 0, 1, &[simple(&record)]));
                    (DELIVER, version, body.0)
                },
            );
            let update = (any::<u32>(), 0u8..3, 0u8..2).prop_map(|(correlation, id, active)| {
                let body = Body::default().u32(correlation).u8(id).u8(active);
                (CONSUMER_UPDATE, 1, body.0)
            });
            let moved = "[a-z-]{0,10}".prop_map(|stream| {
                let body = Body::default().u16(6).string(&stream).unwrap();
                (METADATA_UPDATE, 1, body.0)
            });
            let refused_credit = (any::<u8>(), any::<u16>())
                .prop_map(|(id, code)| (CREDIT | RESPONSE, 1, Body::default().u16(code).u8(id).0));
            prop_oneof![deliver, update, moved, refused_credit]
        }

        #[test]
        fn damaged_frames_are_dispatched_or_refused_never_a_panic() {
            let frames = frame().prop_flat_map(|(key, version, body)| {
                damaged(Just(body)).prop_map(move |body| (key, version, body))
            });
            check(frames, |(key, version, body)| {
                let routes = Routes::default();
                let (_, mut events) = routes.state().add("s-0", Consumer::Alone).unwrap();
                let frame = Frame {
                    key,
                    version,
                    body: body.into(),
                };
                if routes.frame(frame).is_ok() {
                    while let Ok(delivered) = events.try_recv() {
                        if let Ok(Delivered::Chunk(bytes)) = delivered {
                            if let Ok(chunk) = Chunk::parse(bytes) {
                                prop_assert!(chunk.first_offset <= chunk.last_offset());
                            }
                        }
                    }
                }
                Ok(())
            });
        }
    }
}
