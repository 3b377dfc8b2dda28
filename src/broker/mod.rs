//! The broker adapter: everything partlog asks of RabbitMQ, in partlog's
//! terms and errors.
//!
//! [`Broker`] owns one long-lived administrative connection (super stream
//! create/delete, metadata, offsets) and one [`raw::RawConnection`]
//! (statistics, partitions); both are reopened on the next call after a
//! failure. Producers and readers get their own connections to the node that
//! leads their partition (see [`producer`] and [`reader`]).
//!
//! The rabbitmq-stream-client's `Environment` helpers are deliberately not
//! used: they open a fresh connection per call and its super stream metadata
//! helpers panic on broker errors.

pub mod producer;
pub mod raw;
pub mod reader;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::ResponseCode;
use rabbitmq_stream_client::{Client, ClientOptions};
use tokio::sync::Mutex;

use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use raw::{Credentials, RawConnection, StreamStats};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Handle to the RabbitMQ cluster; one per process, shared by all calls.
pub struct Broker {
    config: BrokerConfig,
    timeout: Duration,
    admin: Mutex<Option<Client>>,
    raw: Mutex<Option<RawConnection>>,
}

impl Broker {
    /// A handle that connects on first use; every operation fails with
    /// UNAVAILABLE while the broker cannot be reached.
    pub fn new(config: BrokerConfig, timeout: Duration) -> Broker {
        Broker {
            config,
            timeout,
            admin: Mutex::new(None),
            raw: Mutex::new(None),
        }
    }

    /// Connects and checks what configuration alone cannot: the
    /// credentials, the virtual host and that the broker's frame size can
    /// carry partlog's largest frame (FAILED_PRECONDITION otherwise).
    pub async fn check(&self) -> Result<()> {
        self.check_frame_size().await?;
        self.admin().await.map(drop)
    }

    /// The configured node, host:port.
    pub fn address(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
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

    /// True when the administrative connection is open or can be reopened.
    pub async fn is_reachable(&self) -> bool {
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

    /// Options for a connection to `node`, or to the configured node.
    pub(crate) fn client_options(&self, node: Option<&Node>, name: &str) -> ClientOptions {
        let (host, port) = match node {
            Some(node) => (node.host.as_str(), node.port),
            None => (self.config.host.as_str(), self.config.port),
        };
        ClientOptions::builder()
            .host(host)
            .port(port)
            .user(&self.config.user)
            .password(&self.config.password)
            .v_host(&self.config.vhost)
            .heartbeat(self.config.heartbeat_secs)
            .max_frame_size(self.config.max_frame_bytes)
            .client_provided_name(name.to_owned())
            .build()
    }

    /// Opens a client connection to `node` within the broker timeout.
    pub(crate) async fn open_client(&self, node: Option<&Node>, name: &str) -> Result<Client> {
        let options = self.client_options(node, name);
        let target = node.map_or_else(|| self.address(), Node::to_string);
        self.within(&format!("connecting to {target}"), Client::connect(options))
            .await?
            .map_err(|e| unavailable(&format!("cannot connect to the broker at {target}"), e))
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
        let client = self.open_client(None, "partlog-admin").await?;
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
            let credentials = Credentials {
                host: self.config.host.clone(),
                port: self.config.port,
                user: self.config.user.clone(),
                password: self.config.password.clone(),
                vhost: self.config.vhost.clone(),
            };
            *slot = Some(RawConnection::open(&credentials, self.timeout).await?);
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

    /// Leader and replicas of each stream, in the order given.
    pub async fn placements(&self, streams: &[String]) -> Result<Vec<PartitionPlacement>> {
        let mut metadata = self
            .with_admin("reading stream metadata", |c| async move {
                c.metadata(streams.to_vec()).await
            })
            .await?;
        streams
            .iter()
            .map(|stream| {
                let meta = metadata.remove(stream).ok_or_else(|| {
                    Error::Unavailable(format!(
                        "partition stream {stream:?} has no leader at the moment"
                    ))
                })?;
                match meta.response_code {
                    ResponseCode::Ok => Ok(PartitionPlacement {
                        leader: node(&meta.leader),
                        replicas: meta.replicas.iter().map(node).collect(),
                    }),
                    ResponseCode::StreamDoesNotExist => Err(Error::NotFound(format!(
                        "partition stream {stream:?} does not exist"
                    ))),
                    code => Err(Error::Unavailable(format!(
                        "partition stream {stream:?} is not available: {code:?}"
                    ))),
                }
            })
            .collect()
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

    /// Closes the administrative connections.
    pub async fn close(&self) {
        if let Some(client) = self.admin.lock().await.take() {
            let _ = client.close().await;
        }
        self.raw.lock().await.take();
    }
}

fn node(broker: &rabbitmq_stream_client::types::Broker) -> Node {
    Node {
        host: broker.host.clone(),
        port: u16::try_from(broker.port).unwrap_or(u16::MAX),
    }
}

/// A client library error as UNAVAILABLE: transport failures are transient
/// from partlog's point of view.
pub(crate) fn unavailable(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{context}: {error}"))
}
