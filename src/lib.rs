//! partlog turns a RabbitMQ stream cluster into a keyed, partitioned,
//! ordered log served over gRPC (`partlog.v1.PartLog`).
//!
//! A partlog *stream* is a RabbitMQ super stream. Records are routed to its
//! partitions by murmur3 of their key, exactly like RabbitMQ's native stream
//! clients route, and stored as AMQP 1.0 messages that native clients read.
//!
//! # Layout
//!
//! Calls go one way: [`server`] → [`log`] → [`broker`]. The core (`log`,
//! `broker` and the leaves below them) knows nothing of gRPC; the server is
//! a thin edge over it, and [`cli`] is a client of the edge.
//!
//! - [`server`]: the gRPC services (partlog, health, reflection), the
//!   protobuf ↔ core conversions with the one error → status mapping,
//!   graceful shutdown, and security at the edge: TLS, authentication and
//!   authorization.
//! - [`log`]: [`log::PartitionedLog`], the core operations — streams, Read,
//!   the write path under routing leases, growing a stream behind a write
//!   fence (its epoch markers), subscriptions and consumer groups.
//! - [`broker`]: the RabbitMQ adapter, the only code that knows the client
//!   library — the cluster handle (administration through any node,
//!   metadata, offsets, the super stream cache, a stream's routing state
//!   and epochs, the management API), producers with pipelined
//!   confirms, and partlog's own protocol code (`broker::protocol`): chunk
//!   readers with credit flow, compressed batches, the metadata
//!   connection; TLS for every broker connection.
//! - [`offsets`]: the sled store of consumer groups' committed offsets.
//! - [`telemetry`]: Prometheus metrics (the registry every layer updates,
//!   the `/metrics` listener) and the log's set-up; a leaf every layer
//!   calls.
//! - Leaves: [`config`] (TOML with `PARTLOG_*` overrides), [`error`] (the
//!   one error type: a stable reason, a message, the field at fault), [`routing`] (murmur3 key → partition),
//!   [`record`] (records and their AMQP 1.0 form), [`validate`] (requests
//!   checked before the broker is asked), [`sync`] (the locking
//!   convention), [`pem`] (certificate and key files), [`tls_stream`] (a
//!   connection plain or through TLS).
//! - [`proto`]: generated protobuf types and their codec.
//! - `generative` (tests only): generative checks of every decoder of
//!   broker bytes (`make fuzz` runs them longer).
//! - `console`: the web console (`console.listen`) — its own HTTP/1.1
//!   listener serving a page built into the binary and a JSON API that
//!   calls the `server`'s PartLog service in process (so authentication
//!   is the API's), and the last hour of records/s and lag kept in memory
//!   for its charts.
//! - [`cli`]: the client subcommands of the `partlog` binary (`stream`,
//!   `publish`, `read`, `tail`, `offsets`, ...).

pub(crate) mod broker;
pub mod cli;
pub mod config;
pub(crate) mod console;
pub(crate) mod error;
#[cfg(test)]
mod generative;
pub(crate) mod log;
pub(crate) mod offsets;
pub(crate) mod pem;
pub mod proto;
pub mod record;
pub mod routing;
pub mod server;
pub(crate) mod sync;
pub mod telemetry;
pub(crate) mod tls_stream;
pub mod validate;
