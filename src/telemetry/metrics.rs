//! The registry of every Prometheus metric of the process and the handles
//! instrumented code updates; see the README's Metrics section for what
//! each one means.
//!
//! One registry per process ([`metrics`]), created on first use: the
//! instrumented code (broker, log, server) reaches it without being handed
//! anything, and updates cost atomics, whether or not a listener serves
//! them. Label sets are bounded: streams, groups, partitions, RPC methods,
//! status codes and connection kinds, never keys or producer ids. Series of
//! things that went away (a deleted stream, a group without members, a
//! partition no group here knows any more) are removed, not left at their
//! last value.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::record::StoredRecord;
use crate::sync::lock;

/// Upper bounds (seconds) of broker round trips and disk flushes.
const OPERATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of calls: unary ones take milliseconds, streaming
/// ones (Subscribe, Consume, PublishStream) as long as the client stays.
const CALL_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
];

fn operation_histogram() -> Histogram {
    Histogram::new(OPERATION_BUCKETS)
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type SecondsGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabel {
    principal: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    stream: String,
    group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    group: String,
    stream: String,
    partition: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Every metric of the process; see the module docs.
pub(crate) struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: HistogramFamily<MethodLabel>,
    pub rpc_in_flight: Family<MethodLabel, Gauge>,
    records_published: Family<StreamLabel, Counter>,
    bytes_published: Family<StreamLabel, Counter>,
    records_duplicate: Family<StreamLabel, Counter>,
    records_publish_failed: Family<StreamLabel, Counter>,
    records_delivered: Family<StreamLabel, Counter>,
    bytes_delivered: Family<StreamLabel, Counter>,
    publish_confirm: HistogramFamily<StreamLabel>,
    subscription_reconnects: Family<StreamLabel, Counter>,
    chunks_unreadable: Family<StreamLabel, Counter>,
    producer_recreations: Family<StreamLabel, Counter>,
    stream_resizes: Family<StreamLabel, Counter>,
    group_epoch_waits: Family<GroupLabels, Gauge>,
    reads_resumed: Family<StreamLabel, Counter>,
    chunks_received: Family<StreamLabel, Counter>,
    chunk_bytes_received: Family<StreamLabel, Counter>,
    subscriptions_active: Family<StreamLabel, Gauge>,
    broker_up: Gauge,
    connections_open: Family<KindLabel, Gauge>,
    connections_opened: Family<KindLabel, Counter>,
    group_members_active: Family<GroupLabels, Gauge>,
    group_partitions_active: Family<GroupLabels, Gauge>,
    group_committed_offset: Family<PartitionLabels, Gauge>,
    group_tail_offset: Family<PartitionLabels, Gauge>,
    group_lag: Family<PartitionLabels, Gauge>,
    lag_refresh_duration: SecondsGauge,
    lag_refresh_partitions: Gauge,
    lag_refresh_skipped: Counter,
    principal_last_call: Family<PrincipalLabel, SecondsGauge>,
    /// The principals with a `principal_last_call` series.
    principals: Mutex<std::collections::HashSet<String>>,
    offset_store_flush: Histogram,
    /// Handles of each stream's series, so that the hot paths (publish,
    /// delivery) neither allocate labels nor look them up per batch.
    streams: Mutex<HashMap<String, Arc<StreamMetrics>>>,
    /// Running subscriptions per stream; the gauge follows under this lock,
    /// so that removing a stream's series at 0 cannot race an increment.
    subscriptions: Mutex<HashMap<String, i64>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut metrics = Metrics {
            // Filled below with the metrics it serves.
            registry: Registry::default(),
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(call_histogram),
            rpc_in_flight: Family::default(),
            records_published: Family::default(),
            bytes_published: Family::default(),
            records_duplicate: Family::default(),
            records_publish_failed: Family::default(),
            records_delivered: Family::default(),
            bytes_delivered: Family::default(),
            publish_confirm: Family::new_with_constructor(operation_histogram),
            subscription_reconnects: Family::default(),
            chunks_unreadable: Family::default(),
            producer_recreations: Family::default(),
            stream_resizes: Family::default(),
            group_epoch_waits: Family::default(),
            reads_resumed: Family::default(),
            chunks_received: Family::default(),
            chunk_bytes_received: Family::default(),
            subscriptions_active: Family::default(),
            broker_up: Gauge::default(),
            connections_open: Family::default(),
            connections_opened: Family::default(),
            group_members_active: Family::default(),
            group_partitions_active: Family::default(),
            group_committed_offset: Family::default(),
            group_tail_offset: Family::default(),
            group_lag: Family::default(),
            lag_refresh_duration: SecondsGauge::default(),
            lag_refresh_partitions: Gauge::default(),
            lag_refresh_skipped: Counter::default(),
            principal_last_call: Family::default(),
            principals: Mutex::default(),
            offset_store_flush: operation_histogram(),
            streams: Mutex::default(),
            subscriptions: Mutex::default(),
        };
        metrics.registry = metrics.registered();
        metrics
    }

    /// A registry that serves the metrics (clones share their values).
    fn registered(&self) -> Registry {
        let mut registry = Registry::with_prefix("partlog");
        let (r, m) = (&mut registry, self);
        r.register(
            "build",
            "partlog's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "rpc_requests",
            "Finished gRPC calls by method and status code",
            m.rpc_requests.clone(),
        );
        r.register_with_unit(
            "rpc_duration",
            "gRPC call durations, from the request's headers to the end of the response",
            Unit::Seconds,
            m.rpc_duration.clone(),
        );
        r.register(
            "rpc_in_flight",
            "gRPC calls in progress",
            m.rpc_in_flight.clone(),
        );
        r.register(
            "records_published",
            "Records the broker confirmed as stored",
            m.records_published.clone(),
        );
        r.register_with_unit(
            "records_published",
            "Keys, values and headers of the records the broker confirmed as stored",
            Unit::Bytes,
            m.bytes_published.clone(),
        );
        r.register(
            "records_duplicate",
            "Records not written again: their producer's sequence was stored before",
            m.records_duplicate.clone(),
        );
        r.register(
            "records_publish_failed",
            "Records answered with an error after validation (e.g. UNAVAILABLE)",
            m.records_publish_failed.clone(),
        );
        r.register(
            "records_delivered",
            "Records sent to clients by Read, Subscribe and Consume",
            m.records_delivered.clone(),
        );
        r.register_with_unit(
            "records_delivered",
            "Keys, values and headers of the records sent to clients",
            Unit::Bytes,
            m.bytes_delivered.clone(),
        );
        r.register_with_unit(
            "publish_confirm",
            "From handing a batch's records to a partition's producer to the broker's confirm \
             of the last of them",
            Unit::Seconds,
            m.publish_confirm.clone(),
        );
        r.register(
            "subscription_reconnects",
            "Partition subscriptions that lost their broker connection and reconnect",
            m.subscription_reconnects.clone(),
        );
        r.register(
            "chunks_unreadable",
            "Chunks delivered for the stream that partlog could not read (DATA_LOSS)",
            m.chunks_unreadable.clone(),
        );
        r.register(
            "producer_recreations",
            "Partition producers opened again after theirs broke",
            m.producer_recreations.clone(),
        );
        r.register(
            "stream_resizes",
            "Resizes of the stream this instance finished (ResizeStream)",
            m.stream_resizes.clone(),
        );
        r.register(
            "group_epoch_waits",
            "Partitions whose group member on this instance waits for the group to cross an \
             epoch (commit every old partition up to its marker)",
            m.group_epoch_waits.clone(),
        );
        r.register(
            "reads_resumed",
            "Read calls that went on with the reader of the call before (no new broker \
             subscription)",
            m.reads_resumed.clone(),
        );
        r.register(
            "chunks_received",
            "Chunks the broker sent partlog's readers (Read, Subscribe, Consume); a reader \
             that filters is sent only the chunks that may hold its filter values",
            m.chunks_received.clone(),
        );
        r.register_with_unit(
            "chunks_received",
            "Bytes of the chunks the broker sent partlog's readers",
            Unit::Bytes,
            m.chunk_bytes_received.clone(),
        );
        r.register(
            "subscriptions_active",
            "Subscribe and Consume calls reading the stream",
            m.subscriptions_active.clone(),
        );
        r.register(
            "broker_up",
            "1 while a broker node answers the health probe, else 0",
            m.broker_up.clone(),
        );
        r.register(
            "broker_connections_open",
            "Broker connections partlog holds, by kind",
            m.connections_open.clone(),
        );
        r.register(
            "broker_connections_opened",
            "Broker connections opened, by kind",
            m.connections_opened.clone(),
        );
        r.register(
            "group_members_active",
            "Members of this instance that the broker made active for a partition of the group",
            m.group_members_active.clone(),
        );
        r.register(
            "group_partitions_active",
            "Partitions of the group whose active member is on this instance",
            m.group_partitions_active.clone(),
        );
        r.register(
            "group_committed_offset",
            "The group's committed offset (last processed record) in the partition",
            m.group_committed_offset.clone(),
        );
        r.register(
            "group_tail_offset",
            "Offset of the partition's last record, as the group's lag counts it",
            m.group_tail_offset.clone(),
        );
        r.register(
            "group_lag",
            "Offsets after the group's committed one in the partition, as GetOffsets answers",
            m.group_lag.clone(),
        );
        r.register_with_unit(
            "lag_refresh_duration",
            "How long the last refresh of the group offset gauges took",
            Unit::Seconds,
            m.lag_refresh_duration.clone(),
        );
        r.register(
            "lag_refresh_partitions",
            "Partitions the last refresh of the group offset gauges asked about",
            m.lag_refresh_partitions.clone(),
        );
        r.register(
            "lag_refresh_skipped",
            "Refreshes of the group offset gauges not started because the previous one ran on",
            m.lag_refresh_skipped.clone(),
        );
        r.register(
            "principal_last_call_timestamp_seconds",
            "When the principal's last call was admitted (Unix time)",
            m.principal_last_call.clone(),
        );
        r.register_with_unit(
            "offset_store_flush",
            "Flushes (fsync) of the offset store",
            Unit::Seconds,
            m.offset_store_flush.clone(),
        );
        registry
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The handles of `stream`'s series.
    pub fn stream(&self, stream: &str) -> Arc<StreamMetrics> {
        let mut streams = lock(&self.streams);
        if let Some(handles) = streams.get(stream) {
            return handles.clone();
        }
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        let handles = Arc::new(StreamMetrics {
            published: self.records_published.get_or_create_owned(&label),
            published_bytes: self.bytes_published.get_or_create_owned(&label),
            duplicates: self.records_duplicate.get_or_create_owned(&label),
            publish_failed: self.records_publish_failed.get_or_create_owned(&label),
            delivered: self.records_delivered.get_or_create_owned(&label),
            delivered_bytes: self.bytes_delivered.get_or_create_owned(&label),
            confirm: self.publish_confirm.get_or_create_owned(&label),
            reconnects: self.subscription_reconnects.get_or_create_owned(&label),
            unreadable: self.chunks_unreadable.get_or_create_owned(&label),
            recreations: self.producer_recreations.get_or_create_owned(&label),
            resizes: self.stream_resizes.get_or_create_owned(&label),
            resumed: self.reads_resumed.get_or_create_owned(&label),
            chunks_received: self.chunks_received.get_or_create_owned(&label),
            chunk_bytes_received: self.chunk_bytes_received.get_or_create_owned(&label),
            name: label.stream,
        });
        streams.insert(stream.to_owned(), handles.clone());
        handles
    }

    /// `partlog_records_published_total` and
    /// `partlog_records_delivered_total` of every stream with series here:
    /// the records that went through this instance.
    pub fn record_totals(&self) -> Vec<RecordTotals> {
        lock(&self.streams)
            .values()
            .map(|handles| RecordTotals {
                stream: handles.name.clone(),
                published: handles.published.get(),
                delivered: handles.delivered.get(),
            })
            .collect()
    }

    /// Removes a deleted stream's series. (Its subscriptions gauge goes
    /// when its last subscription ends.)
    pub fn forget_stream(&self, stream: &str) {
        let mut streams = lock(&self.streams);
        streams.remove(stream);
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        for family in [
            &self.records_published,
            &self.bytes_published,
            &self.records_duplicate,
            &self.records_publish_failed,
            &self.records_delivered,
            &self.bytes_delivered,
            &self.subscription_reconnects,
            &self.chunks_unreadable,
            &self.producer_recreations,
            &self.stream_resizes,
            &self.reads_resumed,
            &self.chunks_received,
            &self.chunk_bytes_received,
        ] {
            family.remove(&label);
        }
        self.publish_confirm.remove(&label);
    }

    fn subscriptions_changed(&self, stream: &str, delta: i64) {
        let mut running = lock(&self.subscriptions);
        let count = running.entry(stream.to_owned()).or_default();
        *count += delta;
        let label = StreamLabel {
            stream: stream.to_owned(),
        };
        if *count > 0 {
            self.subscriptions_active.get_or_create(&label).set(*count);
        } else {
            running.remove(stream);
            self.subscriptions_active.remove(&label);
        }
    }

    pub fn broker_up(&self, up: bool) {
        self.broker_up.set(i64::from(up));
    }

    pub fn connection_opened(&self, kind: &'static str) {
        let label = KindLabel { kind };
        self.connections_opened.get_or_create(&label).inc();
        self.connections_open.get_or_create(&label).inc();
    }

    pub fn connection_closed(&self, kind: &'static str) {
        self.connections_open
            .get_or_create(&KindLabel { kind })
            .dec();
    }

    /// The members and partitions of a group active here now; series at 0
    /// are removed.
    pub fn group_members(&self, stream: &str, group: &str, members: usize, partitions: usize) {
        let label = GroupLabels {
            stream: stream.to_owned(),
            group: group.to_owned(),
        };
        for (family, value) in [
            (&self.group_members_active, members),
            (&self.group_partitions_active, partitions),
        ] {
            if value == 0 {
                family.remove(&label);
            } else {
                family.get_or_create(&label).set(value as i64);
            }
        }
    }

    /// A member of `group` here began (`delta` 1) or ended (-1) waiting
    /// for the group to cross an epoch; the series goes at 0.
    pub fn group_epoch_wait(&self, stream: &str, group: &str, delta: i64) {
        let label = GroupLabels {
            stream: stream.to_owned(),
            group: group.to_owned(),
        };
        let waiting = self.group_epoch_waits.get_or_create(&label).inc_by(delta) + delta;
        if waiting <= 0 {
            self.group_epoch_waits.remove(&label);
        }
    }

    /// A group's position in one partition, as GetOffsets computes it; an
    /// absent committed offset or tail removes that series.
    pub fn group_offsets(&self, at: &GroupPartition, offsets: PartitionLag) {
        let label = at.label();
        for (family, value) in [
            (&self.group_committed_offset, offsets.committed),
            (&self.group_tail_offset, offsets.tail),
            (&self.group_lag, Some(offsets.lag)),
        ] {
            match value {
                Some(value) => {
                    family.get_or_create(&label).set(saturating_i64(value));
                }
                None => {
                    family.remove(&label);
                }
            }
        }
    }

    pub fn forget_group_offsets(&self, at: &GroupPartition) {
        let label = at.label();
        self.group_committed_offset.remove(&label);
        self.group_tail_offset.remove(&label);
        self.group_lag.remove(&label);
    }

    pub fn lag_refreshed(&self, took: Duration, partitions: usize, skipped: u64) {
        self.lag_refresh_duration.set(took.as_secs_f64());
        self.lag_refresh_partitions.set(partitions as i64);
        self.lag_refresh_skipped.inc_by(skipped);
    }

    /// An authenticated call of `principal` was admitted now.
    pub fn principal_called(&self, principal: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let label = PrincipalLabel {
            principal: principal.to_owned(),
        };
        self.principal_last_call
            .get_or_create(&label)
            .set(now.as_secs_f64());
        let mut principals = lock(&self.principals);
        if !principals.contains(principal) {
            principals.insert(principal.to_owned());
        }
    }

    /// Removes the series of principals not in `current` (after a reload).
    pub fn keep_principals<'a>(&self, current: impl Iterator<Item = &'a str>) {
        let current: std::collections::HashSet<&str> = current.collect();
        lock(&self.principals).retain(|principal| {
            let keep = current.contains(principal.as_str());
            if !keep {
                let label = PrincipalLabel {
                    principal: principal.clone(),
                };
                self.principal_last_call.remove(&label);
            }
            keep
        });
    }

    pub fn offset_store_flushed(&self, took: Duration) {
        self.offset_store_flush.observe(took.as_secs_f64());
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// (group, stream, partition): where a group's offset gauges are.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GroupPartition {
    pub group: String,
    pub stream: String,
    pub partition: u32,
}

impl GroupPartition {
    fn label(&self) -> PartitionLabels {
        PartitionLabels {
            group: self.group.clone(),
            stream: self.stream.clone(),
            partition: self.partition,
        }
    }
}

/// A group's committed offset, the partition's tail and the lag between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionLag {
    pub committed: Option<u64>,
    pub tail: Option<u64>,
    pub lag: u64,
}

/// A stream's record counters: stored through this instance, and sent
/// from it to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordTotals {
    pub stream: String,
    pub published: u64,
    pub delivered: u64,
}

/// What a batch's records came to, per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Published {
    pub stored: u64,
    pub stored_bytes: u64,
    pub duplicates: u64,
    pub failed: u64,
}

/// The series of one stream, looked up once (see [`Metrics::stream`]).
pub(crate) struct StreamMetrics {
    name: String,
    published: Counter,
    published_bytes: Counter,
    duplicates: Counter,
    publish_failed: Counter,
    delivered: Counter,
    delivered_bytes: Counter,
    confirm: Histogram,
    reconnects: Counter,
    unreadable: Counter,
    recreations: Counter,
    resizes: Counter,
    resumed: Counter,
    chunks_received: Counter,
    chunk_bytes_received: Counter,
}

impl StreamMetrics {
    /// A batch's outcomes; one call per batch, not per record.
    pub fn published(&self, batch: &Published) {
        self.published.inc_by(batch.stored);
        self.published_bytes.inc_by(batch.stored_bytes);
        self.duplicates.inc_by(batch.duplicates);
        self.publish_failed.inc_by(batch.failed);
    }

    /// A partition's share of a batch was confirmed `took` after it was
    /// queued.
    pub fn confirmed_after(&self, took: Duration) {
        self.confirm.observe(took.as_secs_f64());
    }

    /// `records` went to a client; one call per batch.
    pub fn delivered(&self, records: &[StoredRecord]) {
        let bytes: usize = records.iter().map(StoredRecord::payload_bytes).sum();
        self.delivered.inc_by(records.len() as u64);
        self.delivered_bytes.inc_by(bytes as u64);
    }

    pub fn subscription_reconnected(&self) {
        self.reconnects.inc();
    }

    /// A chunk could not be read: the call reading it ended with DATA_LOSS.
    pub fn chunk_unreadable(&self) {
        self.unreadable.inc();
    }

    pub fn producer_recreated(&self) {
        self.recreations.inc();
    }

    /// A resize of the stream finished here.
    pub fn resized(&self) {
        self.resizes.inc();
    }

    /// A Read went on with the reader kept from the call before.
    pub fn read_resumed(&self) {
        self.resumed.inc();
    }

    /// A reader was sent a chunk of `bytes` bytes.
    pub fn chunk_received(&self, bytes: usize) {
        self.chunks_received.inc();
        self.chunk_bytes_received.inc_by(bytes as u64);
    }

    /// Counts a subscription of the stream until the guard is dropped.
    pub fn subscription(self: &Arc<Self>) -> ActiveSubscription {
        metrics().subscriptions_changed(&self.name, 1);
        ActiveSubscription(self.clone())
    }
}

/// A running subscription, counted in `partlog_subscriptions_active`.
pub(crate) struct ActiveSubscription(Arc<StreamMetrics>);

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        metrics().subscriptions_changed(&self.0.name, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn series_carry_their_labels_and_go_when_their_stream_does() {
        let m = metrics();
        let stream = "metrics-unit-test";
        let handles = m.stream(stream);
        handles.published(&Published {
            stored: 3,
            stored_bytes: 30,
            duplicates: 1,
            failed: 0,
        });
        let subscription = handles.subscription();
        let text = m.encode();
        let published = format!("partlog_records_published_total{{stream=\"{stream}\"}}");
        assert_eq!(line(&text, &published), Some(&*format!("{published} 3")));
        let bytes = format!("partlog_records_published_bytes_total{{stream=\"{stream}\"}}");
        assert_eq!(line(&text, &bytes), Some(&*format!("{bytes} 30")));
        let active = format!("partlog_subscriptions_active{{stream=\"{stream}\"}}");
        assert_eq!(line(&text, &active), Some(&*format!("{active} 1")));
        assert!(
            text.contains("# TYPE partlog_publish_confirm_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("partlog_build_info{version="), "{text}");

        drop(subscription);
        m.forget_stream(stream);
        let text = m.encode();
        assert!(!text.contains(stream), "{text}");
    }

    #[test]
    fn group_gauges_at_zero_or_unknown_are_removed() {
        let m = metrics();
        m.group_members("metrics-unit-groups", "g", 2, 3);
        let text = m.encode();
        let members = "partlog_group_members_active{stream=\"metrics-unit-groups\",group=\"g\"} 2";
        assert!(text.contains(members), "{text}");
        m.group_members("metrics-unit-groups", "g", 0, 0);
        assert!(!m.encode().contains("metrics-unit-groups"));

        let at = GroupPartition {
            group: "g".into(),
            stream: "metrics-unit-lag".into(),
            partition: 2,
        };
        let lag = PartitionLag {
            committed: None,
            tail: Some(9),
            lag: 10,
        };
        m.group_offsets(&at, lag);
        let text = m.encode();
        let series = "{group=\"g\",stream=\"metrics-unit-lag\",partition=\"2\"}";
        assert!(
            text.contains(&format!("partlog_group_lag{series} 10")),
            "{text}"
        );
        assert!(text.contains(&format!("partlog_group_tail_offset{series} 9")));
        assert!(!text.contains(&format!("partlog_group_committed_offset{series}")));
        m.forget_group_offsets(&at);
        assert!(!m.encode().contains("metrics-unit-lag"));
    }
}
