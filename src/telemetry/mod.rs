//! What partlog tells its operators: Prometheus metrics and logs.
//!
//! - Metrics: one registry per process ([`metrics`]), updated by the
//!   instrumented code of every layer through the functions and handles
//!   here — per batch or chunk, never per record, with each stream's series
//!   looked up once ([`stream`]). [`exporter`] serves them at `/metrics` on
//!   `metrics.listen`; the lag gauges are refreshed by the log
//!   (`log::lag`), the RPC series by the server's layer
//!   (`server::observe`).
//! - [`logging`]: the tracing subscriber of `partlog serve` (`log.format`
//!   text or JSON) and of the client subcommands, and error cause chains.
//!
//! A leaf: the server, the log and the broker adapter call into it; it
//! calls none of them.

pub mod exporter;
pub mod logging;
mod metrics;

pub(crate) use metrics::{
    metrics, GroupPartition, MethodLabel, PartitionLag, Published, RecordTotals, RpcLabels,
    StreamMetrics,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The series of `stream` (records, bytes, confirms, reconnects); cache
/// the handle where a stream is used per batch.
pub(crate) fn stream(stream: &str) -> Arc<StreamMetrics> {
    metrics().stream(stream)
}

/// Each stream's records stored and delivered through this instance so
/// far (the console's records/s in and out).
pub(crate) fn record_totals() -> Vec<RecordTotals> {
    metrics().record_totals()
}

/// The stream was deleted: its series go.
pub(crate) fn forget_stream(stream: &str) {
    metrics().forget_stream(stream)
}

/// What a broker connection is for: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionKind {
    /// Administration and offsets (the client library's connection).
    Admin,
    /// partlog's own metadata and statistics connection.
    Query,
    Producer,
    Reader,
    Other,
}

impl ConnectionKind {
    /// The kind of a client library connection from the name partlog gives
    /// it (`partlog-admin`, `partlog-producer`, `partlog-reader`).
    pub fn of_connection_name(name: &str) -> ConnectionKind {
        match name.strip_prefix("partlog-") {
            Some("admin") => ConnectionKind::Admin,
            Some("producer") => ConnectionKind::Producer,
            Some("reader") => ConnectionKind::Reader,
            _ => ConnectionKind::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ConnectionKind::Admin => "admin",
            ConnectionKind::Query => "query",
            ConnectionKind::Producer => "producer",
            ConnectionKind::Reader => "reader",
            ConnectionKind::Other => "other",
        }
    }
}

/// A broker connection of `kind` opened.
pub(crate) fn connection_opened(kind: ConnectionKind) {
    metrics().connection_opened(kind.label());
}

/// A broker connection of `kind` closed (or its socket ended).
pub(crate) fn connection_closed(kind: ConnectionKind) {
    metrics().connection_closed(kind.label());
}

/// Counts a connection of `kind` open from now until dropped: for
/// connections partlog owns outright, whose end is their drop.
pub(crate) struct OpenConnection(ConnectionKind);

impl OpenConnection {
    pub fn new(kind: ConnectionKind) -> OpenConnection {
        connection_opened(kind);
        OpenConnection(kind)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        connection_closed(self.0);
    }
}

/// Whether a broker node answers the health probe.
pub(crate) fn broker_up(up: bool) {
    metrics().broker_up(up);
}

/// The members and partitions of a group active on this instance now.
pub(crate) fn group_members(stream: &str, group: &str, members: usize, partitions: usize) {
    metrics().group_members(stream, group, members, partitions);
}

/// A member of `group` on `stream` began (`delta` 1) or ended (-1)
/// waiting at an epoch barrier.
pub(crate) fn group_epoch_wait(stream: &str, group: &str, delta: i64) {
    metrics().group_epoch_wait(stream, group, delta);
}

/// Times an offset store flush.
pub(crate) fn offset_store_flushed(started: Instant) {
    metrics().offset_store_flushed(started.elapsed());
}

/// An authenticated call of `principal` was admitted.
pub(crate) fn principal_called(principal: &str) {
    metrics().principal_called(principal);
}

/// After a reload: only these principals keep their series.
pub(crate) fn keep_principals<'a>(current: impl Iterator<Item = &'a str>) {
    metrics().keep_principals(current);
}

/// A round of the lag refresh ended.
pub(crate) fn lag_refreshed(took: Duration, partitions: usize, skipped: u64) {
    metrics().lag_refreshed(took, partitions, skipped);
}
