//! [`Broker`], the handle to the RabbitMQ cluster: administration, metadata
//! and offsets through any node, and the pools that producers and readers
//! take their connections from.
//!
//! It owns one long-lived administrative connection (super stream
//! create/delete, offsets) and one [`MetadataConnection`] (metadata, partitions,
//! statistics); both are reopened on the next call after a failure, on the
//! first node that answers: the configured nodes, then the ones the
//! cluster's metadata named, starting with the node that answered last.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::ResponseCode;
use rabbitmq_stream_client::Client;

use super::connect::{unavailable, Connector};
use super::node::{KnownNodes, Node, PartitionPlacement};
use super::protocol::metadata::{MetadataConnection, StreamStats};
use super::protocol::ReaderPool;
use super::publish_connection::SharedPublishConnections;
use super::super_stream::{Partition, SuperStream, SuperStreams};
use crate::config::BrokerConfig;
use crate::error::{Error, Kind, Reason, Result};
use crate::sync::lock;

/// Retention and placement of a new super stream's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSettings {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub max_segment_bytes: Option<u64>,
    pub replicas: Option<u32>,
    /// Bytes of each chunk's Bloom filter of filter values.
    pub filter_size_bytes: Option<u32>,
    /// At most this many records per publish frame, one frame at a time
    /// (see [`Broker::max_chunk_records`]); kept on the broker by partlog,
    /// not a stream argument.
    pub max_chunk_records: Option<u32>,
}

/// The offset tracking reference under which each partition stream keeps
/// partlog's `max_chunk_records` setting (as the reference's offset). The
/// stream protocol cannot read a stream's arguments back; tracking
/// references it can, on every node and from every instance, and they
/// live as long as the stream. Group names may not start with
/// [`RESERVED_REFERENCE_PREFIX`].
const MAX_CHUNK_RECORDS_REFERENCE: &str = "__partlog.max_chunk_records";

/// Offset tracking references partlog keeps for itself.
pub const RESERVED_REFERENCE_PREFIX: &str = "__partlog.";

impl StreamSettings {
    /// The stream protocol's create arguments.
    fn arguments(&self) -> HashMap<String, String> {
        let mut args = HashMap::new();
        args.insert("queue-leader-locator".into(), "balanced".into());
        if let Some(age) = self.max_age {
            args.insert("max-age".into(), format!("{}s", age.as_secs()));
        }
        if let Some(bytes) = self.max_bytes {
            args.insert("max-length-bytes".into(), bytes.to_string());
        }
        if let Some(bytes) = self.max_segment_bytes {
            args.insert("stream-max-segment-size-bytes".into(), bytes.to_string());
        }
        if let Some(replicas) = self.replicas {
            args.insert("initial-cluster-size".into(), replicas.to_string());
        }
        if let Some(bytes) = self.filter_size_bytes {
            args.insert("stream-filter-size-bytes".into(), bytes.to_string());
        }
        args
    }
}

/// Handle to the RabbitMQ cluster; one per process, shared by all calls.
pub struct Broker {
    connector: Connector,
    known: std::sync::Mutex<KnownNodes>,
    /// tokio mutexes: held while the connection opens, so that concurrent
    /// calls share one.
    admin: tokio::sync::Mutex<Option<Client>>,
    metadata: tokio::sync::Mutex<Option<MetadataConnection>>,
    readers: Arc<ReaderPool>,
    publishers: SharedPublishConnections,
    super_streams: SuperStreams,
}

impl Broker {
    /// A handle that connects on first use; every operation fails with
    /// UNAVAILABLE while no node of the cluster can be reached.
    pub fn new(config: BrokerConfig, timeout: Duration) -> Broker {
        let first = Node {
            host: config.host.clone(),
            port: config.port,
        };
        let others = config
            .nodes()
            .into_iter()
            .map(|(host, port)| Node { host, port });
        let known = KnownNodes::new(first, others);
        let connector = Connector::new(config, timeout);
        Broker {
            known: std::sync::Mutex::new(known),
            admin: tokio::sync::Mutex::new(None),
            metadata: tokio::sync::Mutex::new(None),
            readers: Arc::new(ReaderPool::new(connector.clone())),
            publishers: SharedPublishConnections::default(),
            super_streams: SuperStreams::default(),
            connector,
        }
    }

    /// Connects and checks what configuration alone cannot: the
    /// credentials, the virtual host and that the broker's frame size can
    /// carry partlog's largest frame (FAILED_PRECONDITION otherwise).
    pub async fn check(&self) -> Result<()> {
        self.check_frame_size().await?;
        self.admin().await.map(drop)
    }

    /// Opens readers; keeps idle reader connections for the next reader.
    pub fn readers(&self) -> &Arc<ReaderPool> {
        &self.readers
    }

    /// Connections producers share.
    pub fn publish_connections(&self) -> &SharedPublishConnections {
        &self.publishers
    }

    /// Settings and timeouts of every connection.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The node partlog administers through (the one that answered last).
    pub fn admin_node(&self) -> Node {
        self.known().preferred().clone()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, KnownNodes> {
        lock(&self.known)
    }

    /// Connects with `connect` to the first known node that answers. Only
    /// UNAVAILABLE moves on to the next node; other errors (credentials,
    /// virtual host) would be the same everywhere.
    async fn connect_any<T, Fut>(&self, connect: impl Fn(Node) -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let candidates = self.known().in_order();
        let mut failures = Vec::new();
        for node in candidates {
            match connect(node.clone()).await {
                Ok(connection) => {
                    self.known().prefer(&node);
                    return Ok(connection);
                }
                Err(e) if e.kind() == Kind::Unavailable => failures.push(e.message().to_owned()),
                Err(other) => return Err(other),
            }
        }
        Err(Error::new(Reason::BrokerUnavailable, failures.join("; ")))
    }

    /// True when a node answers a request now. (The client library's
    /// connection may look open long after the broker went away: it only
    /// notices missed heartbeats.)
    pub async fn is_reachable(&self) -> bool {
        let ping = self.metadata_query("checking the broker", MetadataConnection::ping);
        if ping.await.is_err() {
            // The admin connection is as dead, whether it noticed or not.
            self.admin.lock().await.take();
            return false;
        }
        self.admin().await.is_ok()
    }

    async fn check_frame_size(&self) -> Result<()> {
        let mut slot = self.metadata.lock().await;
        let conn = self.metadata_connection(&mut slot).await?;
        let broker_max = conn.broker_frame_max();
        let max_frame_bytes = self.connector.config().max_frame_bytes;
        if broker_max != 0 && broker_max < max_frame_bytes {
            return Err(Error::new(Reason::ConfigurationInvalid, format!(
                "the broker's stream.frame_max is {broker_max} bytes but broker.max_frame_bytes \
                 is {max_frame_bytes}; raise the broker's stream.frame_max or lower broker.max_frame_bytes \
                 and limits.max_value_bytes"
            )));
        }
        Ok(())
    }

    /// Runs a broker request with the request timeout.
    async fn within<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T> {
        self.connector.within(what, fut).await
    }

    async fn admin(&self) -> Result<Client> {
        let mut admin = self.admin.lock().await;
        if let Some(client) = admin.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = self
            .connect_any(async |node| self.connector.open_client(&node, "partlog-admin").await)
            .await?;
        super::connect::count_end_of(&client, crate::telemetry::ConnectionKind::Admin).await;
        *admin = Some(client.clone());
        Ok(client)
    }

    /// Runs `op` on the admin connection, dropping the connection when the
    /// request failed at the transport so the next call reconnects.
    pub(super) async fn with_admin<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let client = self.admin().await?;
        match self.within(what, op(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.admin.lock().await.take();
                Err(unavailable(
                    &format!("broker request failed while {what}"),
                    e,
                ))
            }
            Err(timeout) => {
                self.admin.lock().await.take();
                Err(timeout)
            }
        }
    }

    async fn metadata_connection<'a>(
        &self,
        slot: &'a mut Option<MetadataConnection>,
    ) -> Result<&'a mut MetadataConnection> {
        if slot.is_none() {
            let connection = self
                .connect_any(async |node| self.connector.open_metadata(&node).await)
                .await?;
            *slot = Some(connection);
        }
        slot.as_mut()
            .ok_or_else(|| Error::new(Reason::Internal, "the metadata connection is missing"))
    }

    /// Runs one query on the metadata connection, reopening it first if needed
    /// and dropping it after a transport failure.
    async fn metadata_query<T>(
        &self,
        what: &str,
        query: impl AsyncFnOnce(&mut MetadataConnection) -> Result<T>,
    ) -> Result<T> {
        let mut slot = self.metadata.lock().await;
        let conn = self.metadata_connection(&mut slot).await?;
        let result = self.within(what, query(conn)).await.and_then(|r| r);
        if matches!(&result, Err(e) if matches!(e.kind(), Kind::Unavailable | Kind::Internal)) {
            slot.take();
        }
        result
    }

    /// First and last committed chunk of a partition stream.
    pub async fn stream_stats(&self, stream: &str) -> Result<StreamStats> {
        self.metadata_query(&format!("reading statistics of {stream:?}"), async |c| {
            c.stream_stats(stream).await
        })
        .await
    }

    /// Creates a super stream with `partitions` partitions named
    /// `<name>-<index>`, bound with the keys "0".."N-1".
    pub async fn create_super_stream(
        &self,
        name: &str,
        partitions: u32,
        settings: &StreamSettings,
    ) -> Result<()> {
        let binding_keys: Vec<String> = (0..partitions).map(|i| i.to_string()).collect();
        let partition_names = binding_keys.iter().map(|k| format!("{name}-{k}")).collect();
        let args = settings.arguments();
        let response = self
            .with_admin(&format!("creating super stream {name:?}"), |c| async move {
                c.create_super_stream(name, partition_names, binding_keys, args)
                    .await
            })
            .await?;
        match response.code() {
            ResponseCode::Ok => Ok(()),
            ResponseCode::StreamAlreadyExists => Err(Error::new(
                Reason::StreamAlreadyExists,
                format!(
                    "stream {name:?} (or a stream named like one of its partitions) already exists"
                ),
            )),
            ResponseCode::PreconditionFailed => Err(Error::field(
                Reason::ValueOutOfRange,
                "replicas",
                format!(
                    "the broker rejected the settings of stream {name:?}: {:?} \
                 (is replicas larger than the cluster?)",
                    settings
                ),
            )),
            ResponseCode::AccessRefused => Err(Error::new(
                Reason::BrokerAccessRefused,
                format!(
                    "user {:?} may not create stream {name:?}",
                    self.connector.config().user
                ),
            )),
            code => Err(Error::new(
                Reason::Internal,
                format!("the broker answered creating stream {name:?} with {code:?}"),
            )),
        }
    }

    /// Deletes a super stream and its partitions; forgets what was cached
    /// of it.
    pub async fn delete_super_stream(&self, name: &str) -> Result<()> {
        self.super_streams.forget_name(name);
        let response = self
            .with_admin(&format!("deleting super stream {name:?}"), |c| async move {
                c.delete_super_stream(name).await
            })
            .await?;
        match response.code() {
            ResponseCode::Ok => Ok(()),
            ResponseCode::StreamDoesNotExist => Err(Error::new(
                Reason::StreamNotFound,
                format!("stream {name:?} does not exist"),
            )),
            ResponseCode::AccessRefused => Err(Error::new(
                Reason::BrokerAccessRefused,
                format!(
                    "user {:?} may not delete stream {name:?}",
                    self.connector.config().user
                ),
            )),
            code => Err(Error::new(
                Reason::Internal,
                format!("the broker answered deleting stream {name:?} with {code:?}"),
            )),
        }
    }

    /// The super stream `name` with its partitions in routing order, from
    /// the cache when it was looked up lately (see [`SuperStreams`]).
    pub async fn super_stream(&self, name: &str) -> Result<Arc<SuperStream>> {
        match self.super_streams.get(name) {
            Some(cached) if cached.is_fresh() => Ok(cached),
            _ => self.super_stream_now(name).await,
        }
    }

    /// The super stream `name` as the broker lists its partitions now (the
    /// cached entry when they are the same).
    pub async fn super_stream_now(&self, name: &str) -> Result<Arc<SuperStream>> {
        let cached = self.super_streams.get(name);
        let partitions = self
            .metadata_query(&format!("listing partitions of {name:?}"), async |c| {
                c.partitions(name).await
            })
            .await
            .inspect_err(|e| {
                if e.kind() == Kind::NotFound {
                    self.super_streams.forget_name(name);
                }
            })?;
        match cached {
            Some(cached) if cached.confirm(&partitions) => Ok(cached),
            _ => Ok(self
                .super_streams
                .insert(SuperStream::new(name, partitions))),
        }
    }

    /// An operation found a partition of `stream` gone, or the broker
    /// reported it moved away: the next lookup asks the broker again.
    pub fn forget(&self, stream: &Arc<SuperStream>) {
        self.super_streams.forget(stream);
    }

    /// The node leading `partition` now.
    pub async fn leader(&self, partition: &Partition) -> Result<Node> {
        let placements = self
            .placements(std::slice::from_ref(&partition.stream))
            .await?;
        placements
            .into_iter()
            .next()
            .map(|placement| placement.leader)
            .ok_or_else(|| Error::new(Reason::Internal, "the broker's metadata answer was empty"))
    }

    /// Leader and replicas of each stream, in the order given. The nodes
    /// named are remembered as ones to administer through.
    pub async fn placements(&self, streams: &[String]) -> Result<Vec<PartitionPlacement>> {
        let placements = self
            .metadata_query("reading stream metadata", async |c| {
                c.placements(streams).await
            })
            .await?;
        self.known().learn(
            placements
                .iter()
                .flat_map(|p| std::iter::once(&p.leader).chain(&p.replicas))
                .cloned(),
        );
        Ok(placements)
    }

    /// The offset stored on the broker under `reference` for `stream`;
    /// `None` when nothing was stored.
    pub async fn query_offset(&self, reference: &str, stream: &str) -> Result<Option<u64>> {
        let client = self.admin().await?;
        let answer = self
            .within(
                &format!("querying the offset of {reference:?} on {stream:?}"),
                client.query_offset(reference.to_owned(), stream),
            )
            .await?;
        match answer {
            Ok(offset) => Ok(Some(offset)),
            Err(ClientError::RequestError(ResponseCode::OffsetNotFound)) => Ok(None),
            Err(ClientError::RequestError(ResponseCode::StreamDoesNotExist)) => Err(Error::new(
                Reason::PartitionNotFound,
                format!("partition stream {stream:?} does not exist"),
            )),
            Err(e) => {
                self.admin.lock().await.take();
                Err(unavailable("querying a stored offset failed", e))
            }
        }
    }

    /// Stores `offset` on the broker under `reference` for `stream`. The
    /// command has no answer; it is written to the connection before this
    /// returns.
    pub async fn store_offset(&self, reference: &str, stream: &str, offset: u64) -> Result<()> {
        self.with_admin(
            &format!("storing the offset of {reference:?} on {stream:?}"),
            |c| async move { c.store_offset(reference, stream, offset).await },
        )
        .await
    }

    /// The names of the virtual host's super streams, in no order (from
    /// the management API: the stream protocol cannot list them).
    pub async fn super_stream_names(&self) -> Result<Vec<String>> {
        super::management::super_streams(&self.connector).await
    }

    /// The consumers of `group` on `stream`'s partitions on every
    /// connection, from the management API (the stream protocol cannot
    /// list subscriptions).
    pub async fn group_consumers(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<super::GroupConsumer>> {
        super::management::group_consumers(&self.connector, stream, group).await
    }

    /// The `max_chunk_records` setting of a partition stream: publishers
    /// send its records in frames of at most this many, one frame at a time,
    /// so that each frame reaches the broker's writer alone and no chunk
    /// holds records of two frames (the broker makes a chunk of whatever
    /// its writer took at once, and may split a frame).
    pub async fn max_chunk_records(&self, stream: &str) -> Result<Option<usize>> {
        let setting = self
            .query_offset(MAX_CHUNK_RECORDS_REFERENCE, stream)
            .await?;
        Ok(setting.and_then(|records| usize::try_from(records).ok()))
    }

    /// Keeps `records` as the `max_chunk_records` setting of each of
    /// `streams`, and returns once the broker reads it back (a stored
    /// offset is written asynchronously).
    pub async fn set_max_chunk_records(&self, streams: &[String], records: u32) -> Result<()> {
        for stream in streams {
            self.store_and_confirm(MAX_CHUNK_RECORDS_REFERENCE, stream, u64::from(records))
                .await?;
        }
        Ok(())
    }

    /// Closes the administrative and idle reader connections.
    pub async fn close(&self) {
        self.readers.close().await;
        if let Some(client) = self.admin.lock().await.take() {
            let _ = client.close().await;
        }
        self.metadata.lock().await.take();
    }
}
