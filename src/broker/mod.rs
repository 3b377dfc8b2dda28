//! The broker adapter: everything partlog asks of RabbitMQ, in partlog's
//! terms and errors.
//!
//! - [`cluster`]: [`Broker`], the handle to the cluster — administration,
//!   metadata, offsets and statistics through any node, the super stream
//!   cache, and the connection pools below.
//! - [`node`]: nodes and partition placements; the nodes partlog may
//!   administer through.
//! - [`connect`]: opening connections and bounding requests in time.
//! - [`protocol`]: the stream protocol as partlog speaks it itself — its
//!   reader connections (chunks read from their bytes, compressed batches
//!   included), its publishing connections (frames that do not copy large
//!   values) and its metadata connection.
//! - [`super_stream`]: super streams and their partitions, cached.
//! - [`producer`]: appending to a partition with pipelined confirms, on
//!   connections producers share per node ([`publish_connection`]), with
//!   the bookkeeping of [`confirms`]; records are written as
//!   [`crate::record`] encodes them, which `message`'s tests check against
//!   the client library's decoder.
//! - [`bounds`]: where a partition's records begin and end, learnt by
//!   reading.
//! - [`management`]: the management HTTP API, which lists the super
//!   streams and a group's consumers, and binds new partitions.
//! - [`epochs`]: a stream's routing state and epoch history, kept on the
//!   broker as offset tracking references, and growing a super stream.
//! - [`backoff`]: capped exponential backoff for reconnecting.
//! - [`tls`]: every connection is plain or TLS as `[broker.tls]` says.
//!
//! The rabbitmq-stream-client's `Environment` helpers are deliberately not
//! used: they open a fresh connection per call and its super stream metadata
//! helpers panic on broker errors. The client library's types stay inside
//! this folder: replacing the library is a change here, nowhere else.
//!
//! This code handles what the broker sends: indexing, unchecked arithmetic
//! and unwraps, which could panic on unexpected bytes, are denied here
//! (checked or saturating operations instead; tests may use them).
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
// Not for tests, which compute their inputs (clippy.toml lets tests index
// and unwrap).
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

mod backoff;
pub(crate) mod bounds;
mod cluster;
mod confirms;
mod connect;
mod epochs;
mod management;
#[cfg(test)]
mod message;
mod node;
pub(crate) mod producer;
mod protocol;
mod publish_connection;
mod super_stream;
mod tls;

/// Log directives for the client library: its dispatcher warns "Stream
/// closed" on every connection that closes, also when partlog closes it;
/// partlog logs broken connections itself, with context.
pub(crate) const LIBRARY_LOG_DIRECTIVES: &str = "rabbitmq_stream_client::client::dispatcher=error";

pub(crate) use backoff::Backoff;
pub(crate) use cluster::{Broker, StreamSettings, RESERVED_REFERENCE_PREFIX};
pub(crate) use confirms::Stored;
pub(crate) use epochs::{Epoch, Routing};
pub(crate) use management::GroupConsumer;
pub(crate) use node::Node;
pub(crate) use protocol::{Chunk, ChunkReader, Consumer, ReadFrom, ReaderEvent};
pub(crate) use super_stream::{Partition, SuperStream};
