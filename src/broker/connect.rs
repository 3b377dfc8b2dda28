//! Opening broker connections and bounding broker requests in time: what
//! every part of the adapter that talks to the broker shares.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rabbitmq_stream_client::types::MessageResult;
use rabbitmq_stream_client::{Client, ClientOptions};

use super::node::Node;
use super::protocol::metadata::MetadataConnection;
use super::protocol::wire::Credentials;
use super::tls::{BrokerTls, Transport};
use crate::config::BrokerConfig;
use crate::error::{Error, Reason, Result};
use crate::telemetry::{self, ConnectionKind};

/// The broker settings, the request timeout and the transport (plain or
/// TLS); cheap to clone.
#[derive(Clone)]
pub struct Connector {
    config: Arc<BrokerConfig>,
    timeout: Duration,
    transport: Arc<Transport>,
}

impl Connector {
    pub fn new(config: BrokerConfig, timeout: Duration) -> Connector {
        Connector {
            transport: Arc::new(Transport::new(&config.tls)),
            config: Arc::new(config),
            timeout,
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// How long one broker request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The TLS settings of partlog's own connections; `None` for plain.
    pub fn tls(&self) -> Result<Option<Arc<BrokerTls>>> {
        self.transport.tls()
    }

    /// When a broker request started now must have been answered.
    pub fn deadline(&self) -> tokio::time::Instant {
        deadline(self.timeout)
    }

    /// How long published records may wait for their confirms.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.config.confirm_timeout_ms)
    }

    /// Opens a client library connection to `node` within the timeout;
    /// `name` is the connection name the broker shows.
    pub async fn open_client(&self, node: &Node, name: &str) -> Result<Client> {
        let (tls, tls_server_name) = self.transport.library_settings()?;
        let options = ClientOptions::builder()
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
            .build();
        let client = self
            .within(&format!("connecting to {node}"), Client::connect(options))
            .await?
            .map_err(|e| unavailable(&format!("cannot connect to the broker at {node}"), e))?;
        telemetry::connection_opened(ConnectionKind::of_connection_name(name));
        Ok(client)
    }

    /// How partlog's own connections reach `node`. A TLS setting that
    /// cannot be used fails here, never falls back to plain TCP.
    pub fn credentials(&self, node: &Node) -> Result<Credentials> {
        Ok(Credentials {
            host: node.host.clone(),
            port: node.port,
            user: self.config.user.clone(),
            password: self.config.password.clone(),
            vhost: self.config.vhost.clone(),
            tls: self.transport.tls()?,
        })
    }

    /// Opens partlog's own query connection to `node`.
    pub async fn open_metadata(&self, node: &Node) -> Result<MetadataConnection> {
        MetadataConnection::open(&self.credentials(node)?, self.timeout).await
    }

    /// Runs a broker request with the timeout; `what` says what was being
    /// done in the error.
    pub async fn within<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T> {
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            Error::new(
                Reason::BrokerUnavailable,
                format!(
                    "the broker did not answer within {:?} while {what}",
                    self.timeout
                ),
            )
        })
    }
}

/// Counts the end of a client library connection of `kind` in its
/// handler: the library hands the handler `None` once the connection's
/// socket ended, whoever closed it. (The library keeps a connection's
/// state alive after its last handle is dropped, so nothing else tells.)
pub fn count_end(kind: ConnectionKind, item: &MessageResult) {
    if item.is_none() {
        telemetry::connection_closed(kind);
    }
}

/// Counts the end of a client library connection that has no handler of
/// its own (the admin connection); see [`count_end`].
pub async fn count_end_of(client: &Client, kind: ConnectionKind) {
    client
        .set_handler(move |item: MessageResult| async move {
            count_end(kind, &item);
            Ok(())
        })
        .await;
}

/// Now plus `wait`. Allowed arithmetic: the waits partlog computes
/// deadlines for are configured timeouts, far below the range of an
/// `Instant` (hundreds of years).
#[allow(clippy::arithmetic_side_effects)]
pub fn deadline(wait: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + wait
}

/// A client library error as UNAVAILABLE: transport failures are transient
/// from partlog's point of view.
pub fn unavailable(context: &str, error: impl std::fmt::Display) -> Error {
    Error::new(Reason::BrokerUnavailable, format!("{context}: {error}"))
}
