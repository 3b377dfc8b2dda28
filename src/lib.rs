//! partlog turns a RabbitMQ stream cluster into a keyed, partitioned,
//! ordered log served over gRPC (`partlog.v1.PartLog`).
//!
//! A partlog *stream* is a RabbitMQ super stream. Records are routed to its
//! partitions by murmur3 of their key, exactly like RabbitMQ's native stream
//! clients route, and stored as AMQP 1.0 messages that native clients read.
//!
//! # Layout
//!
//! The core knows nothing of gRPC; the server is a thin edge over it.
//!
//! - [`config`]: the TOML configuration with `PARTLOG_*` overrides.
//! - [`error`]: the one error type of the core.
//! - [`routing`]: key → partition (murmur3, seed 104729) and round-robin.
//! - [`record`]: records and their AMQP 1.0 form on the broker.
//! - [`validate`]: names, counts and limits checked before the broker is asked.
//! - [`broker`]: the RabbitMQ adapter — administration through any node of
//!   the cluster, raw queries (metadata, partitions, stream statistics),
//!   per-partition producers with pipelined confirms on own or shared
//!   connections, chunk readers with a connection pool, reconnection
//!   backoff, TLS for every broker connection (`broker::tls`).
//! - [`offsets`]: the sled store of consumer groups' committed offsets.
//! - [`pem`]: certificate and key files, for TLS to clients and to the
//!   broker.
//! - [`subscription`]: tailing partitions, alone or as a single active
//!   consumer of a group.
//! - [`log`]: [`log::PartitionedLog`], the core operations on top of the
//!   adapter — streams and reads, the write path (`log::publish`), consumer
//!   groups (`log::groups`).
//! - [`server`]: the gRPC services (partlog, health, reflection), the
//!   error → status mapping and graceful shutdown; TLS, authentication and
//!   authorization at the edge (`server::tls`, `server::auth`).
//! - [`proto`]: generated protobuf types.
//! - [`cli`]: the client subcommands of the `partlog` binary (`stream`,
//!   `publish`, `read`, `tail`, `offsets`, ...), callers of the gRPC API.

pub mod broker;
pub mod cli;
pub mod config;
pub mod error;
pub mod log;
pub mod offsets;
pub mod pem;
pub mod proto;
pub mod record;
pub mod routing;
pub mod server;
pub mod subscription;
pub mod validate;
