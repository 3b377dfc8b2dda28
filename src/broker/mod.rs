//! The broker adapter: everything partlog asks of RabbitMQ, in partlog's
//! terms and errors.
//!
//! [`Broker`] owns one long-lived administrative connection (super stream
//! create/delete, offsets) and one [`raw::RawConnection`] (metadata,
//! partitions, statistics); both are reopened on the next call after a
//! failure, on the first node that answers: the configured nodes, then the
//! ones the cluster's metadata named, starting with the node that answered
//! last. Producers and readers get their own connections to the node that
//! leads their partition (see [`producer`] and [`reader`]); readers done
//! with theirs hand them to a pool for the next reader of that node. Every
//! connection is plain or TLS as [`tls::Transport`] says (`[broker.tls]`).
//!
//! The rabbitmq-stream-client's `Environment` helpers are deliberately not
//! used: they open a fresh connection per call and its super stream metadata
//! helpers panic on broker errors.

mod backoff;
pub mod producer;
pub mod publish_connection;
pub mod raw;
pub mod reader;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::ResponseCode;
use rabbitmq_stream_client::{Client, ClientOptions};
use tokio::sync::Mutex;

use crate::config::BrokerConfig;
use crate::error::{Error, Result};
pub use backoff::Backoff;
use publish_connection::SharedPublishConnections;
use raw::{Credentials, RawConnection, StreamStats};
use reader::ReaderPool;

/// Retention and placement of a new super stream's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSettings {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub max_segment_bytes: Option<u64>,
    pub replicas: Option<u32>,
}

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
        args
    }
}

/// A broker node as the cluster advertises it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where one partition stream lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    pub leader: Node,
    pub replicas: Vec<Node>,
}

/// The nodes partlog may administer through, in the order it tries them.
#[derive(Debug)]
struct KnownNodes {
    /// Configured nodes first, then the ones metadata named.
    nodes: Vec<Node>,
    /// Index of the node that answered last; tried first.
    preferred: usize,
}

impl KnownNodes {
    /// Every node, the preferred one first.
    fn in_order(&self) -> Vec<Node> {
        let (before, after) = self.nodes.split_at(self.preferred);
        after.iter().chain(before).cloned().collect()
    }

    fn prefer(&mut self, node: &Node) {
        if let Some(index) = self.nodes.iter().position(|n| n == node) {
            self.preferred = index;
        }
    }

    fn learn(&mut self, nodes: impl IntoIterator<Item = Node>) {
        for node in nodes {
            if !self.nodes.contains(&node) {
                self.nodes.push(node);
            }
        }
    }
}

/// Handle to the RabbitMQ cluster; one per process, shared by all calls.
pub struct Broker {
    config: BrokerConfig,
    timeout: Duration,
    known: std::sync::Mutex<KnownNodes>,
    admin: Mutex<Option<Client>>,
    raw: Mutex<Option<RawConnection>>,
    readers: Arc<ReaderPool>,
    publishers: SharedPublishConnections,
    transport: tls::Transport,
}

impl Broker {
    /// A handle that connects on first use; every operation fails with
    /// UNAVAILABLE while no node of the cluster can be reached.
    pub fn new(config: BrokerConfig, timeout: Duration) -> Broker {
        let nodes = config
            .nodes()
            .into_iter()
            .map(|(host, port)| Node { host, port })
            .collect();
        Broker {
            transport: tls::Transport::new(&config.tls),
            config,
            timeout,
            known: std::sync::Mutex::new(KnownNodes {
                nodes,
                preferred: 0,
            }),
            admin: Mutex::new(None),
            raw: Mutex::new(None),
            readers: Arc::default(),
            publishers: SharedPublishConnections::default(),
        }
    }

    /// Connects and checks what configuration alone cannot: the
    /// credentials, the virtual host and that the broker's frame size can
    /// carry partlog's largest frame (FAILED_PRECONDITION otherwise).
    pub async fn check(&self) -> Result<()> {
        self.check_frame_size().await?;
        self.admin().await.map(drop)
    }

    /// Idle reader connections, shared by every reader of this process.
    pub(crate) fn reader_pool(&self) -> &Arc<ReaderPool> {
        &self.readers
    }

    /// Connections named producers share.
    pub(crate) fn shared_publish_connections(&self) -> &SharedPublishConnections {
        &self.publishers
    }

    /// The node partlog administers through (the one that answered last).
    pub fn admin_node(&self) -> Node {
        let known = self.known();
        known.nodes[known.preferred].clone()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, KnownNodes> {
        // The list stays consistent even if a holder panicked.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
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
                Err(Error::Unavailable(why)) => failures.push(why),
                Err(other) => return Err(other),
            }
        }
        Err(Error::Unavailable(failures.join("; ")))
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long published records may wait for their confirms.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.config.confirm_timeout_ms)
    }

    /// True when a node answers a request now. (The client library's
    /// connection may look open long after the broker went away: it only
    /// notices missed heartbeats.)
    pub async fn is_reachable(&self) -> bool {
        let ping = self.raw_query("checking the broker", RawConnection::ping);
        if ping.await.is_err() {
            // The admin connection is as dead, whether it noticed or not.
            self.admin.lock().await.take();
            return false;
        }
        self.admin().await.is_ok()
    }

    async fn check_frame_size(&self) -> Result<()> {
        let mut raw = self.raw.lock().await;
        let conn = self.raw_connection(&mut raw).await?;
        let broker_max = conn.broker_frame_max();
        if broker_max != 0 && broker_max < self.config.max_frame_bytes {
            return Err(Error::FailedPrecondition(format!(
                "the broker's stream.frame_max is {broker_max} bytes but broker.max_frame_bytes \
                 is {}; raise the broker's stream.frame_max or lower broker.max_frame_bytes \
                 and limits.max_value_bytes",
                self.config.max_frame_bytes
            )));
        }
        Ok(())
    }

    fn client_options(&self, node: &Node, name: &str) -> Result<ClientOptions> {
        let (tls, tls_server_name) = self.transport.library_settings()?;
        Ok(ClientOptions::builder()
            .host(&node.host)
            .port(node.port)
            .user(&self.config.user)
            .password(self.config.password.expose())
            .v_host(&self.config.vhost)
            .heartbeat(self.config.heartbeat_secs)
            .max_frame_size(self.config.max_frame_bytes)
            .client_provided_name(name.to_owned())
            .tls(tls)
            .tls_server_name(tls_server_name)
            .build())
    }

    /// Opens a client connection to `node` within the broker timeout.
    pub(crate) async fn open_client(&self, node: &Node, name: &str) -> Result<Client> {
        let options = self.client_options(node, name)?;
        self.within(&format!("connecting to {node}"), Client::connect(options))
            .await?
            .map_err(|e| unavailable(&format!("cannot connect to the broker at {node}"), e))
    }

    /// Runs a broker request with the configured timeout.
    pub(crate) async fn within<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T> {
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            Error::Unavailable(format!(
                "the broker did not answer within {:?} while {what}",
                self.timeout
            ))
        })
    }

    async fn admin(&self) -> Result<Client> {
        let mut admin = self.admin.lock().await;
        if let Some(client) = admin.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = self
            .connect_any(async |node| self.open_client(&node, "partlog-admin").await)
            .await?;
        *admin = Some(client.clone());
        Ok(client)
    }

    /// Runs `op` on the admin connection, dropping the connection when the
    /// request failed at the transport so the next call reconnects.
    async fn with_admin<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
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

    async fn raw_connection<'a>(
        &self,
        slot: &'a mut Option<RawConnection>,
    ) -> Result<&'a mut RawConnection> {
        if slot.is_none() {
            let connection = self
                .connect_any(async |node| {
                    let credentials = Credentials {
                        host: node.host,
                        port: node.port,
                        user: self.config.user.clone(),
                        password: self.config.password.clone(),
                        vhost: self.config.vhost.clone(),
                        tls: self.transport.tls()?,
                    };
                    RawConnection::open(&credentials, self.timeout).await
                })
                .await?;
            *slot = Some(connection);
        }
        Ok(slot.as_mut().expect("just filled"))
    }

    /// Runs one query on the raw connection, reopening it first if needed
    /// and dropping it after a transport failure.
    async fn raw_query<T>(
        &self,
        what: &str,
        query: impl AsyncFnOnce(&mut RawConnection) -> Result<T>,
    ) -> Result<T> {
        let mut slot = self.raw.lock().await;
        let conn = self.raw_connection(&mut slot).await?;
        let result = self.within(what, query(conn)).await.and_then(|r| r);
        if matches!(result, Err(Error::Unavailable(_) | Error::Internal(_))) {
            slot.take();
        }
        result
    }

    /// First and last committed chunk of a partition stream.
    pub async fn stream_stats(&self, stream: &str) -> Result<StreamStats> {
        self.raw_query(&format!("reading statistics of {stream:?}"), async |c| {
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
            ResponseCode::StreamAlreadyExists => Err(Error::AlreadyExists(format!(
                "stream {name:?} (or a stream named like one of its partitions) already exists"
            ))),
            ResponseCode::PreconditionFailed => Err(Error::InvalidArgument(format!(
                "the broker rejected the settings of stream {name:?}: {:?} \
                 (is replicas larger than the cluster?)",
                settings
            ))),
            ResponseCode::AccessRefused => Err(Error::FailedPrecondition(format!(
                "user {:?} may not create stream {name:?}",
                self.config.user
            ))),
            code => Err(Error::Internal(format!(
                "the broker answered creating stream {name:?} with {code:?}"
            ))),
        }
    }

    pub async fn delete_super_stream(&self, name: &str) -> Result<()> {
        let response = self
            .with_admin(&format!("deleting super stream {name:?}"), |c| async move {
                c.delete_super_stream(name).await
            })
            .await?;
        match response.code() {
            ResponseCode::Ok => Ok(()),
            ResponseCode::StreamDoesNotExist => {
                Err(Error::NotFound(format!("stream {name:?} does not exist")))
            }
            ResponseCode::AccessRefused => Err(Error::FailedPrecondition(format!(
                "user {:?} may not delete stream {name:?}",
                self.config.user
            ))),
            code => Err(Error::Internal(format!(
                "the broker answered deleting stream {name:?} with {code:?}"
            ))),
        }
    }

    /// The partition streams of a super stream in routing order.
    pub async fn partitions(&self, name: &str) -> Result<Vec<String>> {
        self.raw_query(&format!("listing partitions of {name:?}"), async |c| {
            c.partitions(name).await
        })
        .await
    }

    /// Leader and replicas of each stream, in the order given. The nodes
    /// named are remembered as ones to administer through.
    pub async fn placements(&self, streams: &[String]) -> Result<Vec<PartitionPlacement>> {
        let placements = self
            .raw_query("reading stream metadata", async |c| {
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
            Err(ClientError::RequestError(ResponseCode::StreamDoesNotExist)) => Err(
                Error::NotFound(format!("partition stream {stream:?} does not exist")),
            ),
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

    /// Closes the administrative and idle reader connections.
    pub async fn close(&self) {
        self.readers.close().await;
        if let Some(client) = self.admin.lock().await.take() {
            let _ = client.close().await;
        }
        self.raw.lock().await.take();
    }
}

/// A client library error as UNAVAILABLE: transport failures are transient
/// from partlog's point of view.
pub(crate) fn unavailable(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{context}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> Node {
        Node {
            host: "localhost".into(),
            port,
        }
    }

    #[test]
    fn known_nodes_try_the_last_good_one_first_and_learn_new_ones_once() {
        let mut known = KnownNodes {
            nodes: vec![at(1), at(2)],
            preferred: 0,
        };
        assert_eq!(known.in_order(), [at(1), at(2)]);

        known.learn([at(2), at(3), at(3)]);
        assert_eq!(known.in_order(), [at(1), at(2), at(3)]);

        known.prefer(&at(2));
        assert_eq!(known.in_order(), [at(2), at(3), at(1)]);

        // A node that was never known changes nothing.
        known.prefer(&at(9));
        assert_eq!(known.in_order(), [at(2), at(3), at(1)]);
    }
}
