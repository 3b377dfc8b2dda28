//! The broker adapter: everything partlog asks of RabbitMQ, in partlog's
//! terms and errors.
//!
//! - [`cluster`]: [`Broker`], the handle to the cluster — administration,
//!   metadata, offsets and statistics through any node, the super stream
//!   cache, and the connection pools below.
//! - [`node`]: nodes and partition placements; the nodes partlog may
//!   administer through.
//! - [`connect`]: opening connections and bounding requests in time.
//! - [`raw`]: partlog's own connection for metadata queries; [`wire`] is
//!   the stream protocol as partlog's own connections speak it.
//! - [`super_stream`]: super streams and their partitions, cached.
//! - [`producer`]: appending to a partition with pipelined confirms, on
//!   connections producers share per node ([`publish_connection`]), with
//!   the bookkeeping of [`confirms`].
//! - [`reader`]: reading a partition chunk by chunk, with credit flow and a
//!   pool of idle connections; [`bounds`] learns where records begin and
//!   end.
//! - [`backoff`]: capped exponential backoff for reconnecting.
//! - [`tls`]: every connection is plain or TLS as `[broker.tls]` says.
//!
//! The rabbitmq-stream-client's `Environment` helpers are deliberately not
//! used: they open a fresh connection per call and its super stream metadata
//! helpers panic on broker errors.

mod backoff;
pub(crate) mod bounds;
mod cluster;
mod confirms;
mod connect;
mod node;
pub(crate) mod producer;
mod publish_connection;
mod raw;
pub(crate) mod reader;
mod super_stream;
mod tls;
mod wire;

pub(crate) use backoff::Backoff;
pub(crate) use cluster::{Broker, StreamSettings};
pub(crate) use confirms::Stored;
pub(crate) use node::Node;
pub(crate) use super_stream::{Partition, SuperStream};
