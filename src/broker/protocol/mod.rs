//! The stream protocol as partlog speaks it itself, without the client
//! library: every byte the broker sends on these connections is read here.
//!
//! - [`wire`]: frames, frame bodies and the connection handshake;
//! - [`link`]: a connection as readers and publishers share it — its
//!   reading task, requests, heartbeats;
//! - [`chunk`]: a delivered chunk — header, checksum, entries, sub-entry
//!   batches — with [`compression`] for compressed batches;
//! - [`reader`]: reader connections shared per node and the subscriptions
//!   they carry ([`ChunkReader`]);
//! - [`publisher`]: publisher declarations, publish frames that do not
//!   copy large values, confirms;
//! - [`metadata`]: the connection for metadata queries (stream statistics,
//!   partitions, leaders).
//!
//! Bytes from the network are never trusted: each decoder answers an error
//! naming what was wrong, never a panic (the lints of [`crate::broker`]
//! keep indexing, unchecked arithmetic and unwraps out), and each is tested
//! with inputs built from a model and then truncated, extended and
//! bit-flipped ([`crate::generative`]; `make fuzz` runs them for minutes).

pub(crate) mod chunk;
pub(crate) mod compression;
pub(crate) mod link;
pub(crate) mod metadata;
pub(crate) mod publisher;
pub(crate) mod reader;
pub(crate) mod wire;

pub(crate) use chunk::Chunk;
pub(crate) use reader::{ChunkReader, Consumer, ReadFrom, ReaderEvent, ReaderPool};
