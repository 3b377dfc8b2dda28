//! Command-line flags (`make bench ARGS="..."`).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::bench::Round;

/// partlog against RabbitMQ's native stream client (rabbitmq-stream-client),
/// in one run, on fresh super streams of the same shape.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(name = "partlog_vs_native")]
pub struct Options {
    /// Lines to run (comma-separated); all when absent.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<LineGroup>,

    /// Measured rounds; partlog and native alternate within each round and
    /// medians over rounds are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Records per throughput measurement (publish, consume, group,
    /// pipeline), up to --max-mb of values.
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,

    /// Most megabytes (10^6 bytes) of values per throughput measurement:
    /// fewer records of large values keep a run's time and the broker's
    /// disk in bounds.
    #[arg(long, default_value_t = 400)]
    pub max_mb: u64,

    /// Records of the unmeasured warm-up before each line.
    #[arg(long, default_value_t = 20_000)]
    pub warmup_records: u64,

    /// Partition counts of the publish throughput matrix; the first one is
    /// used by every other line.
    #[arg(long, value_delimiter = ',', default_value = "3,12")]
    pub partitions: Vec<u32>,

    /// Value sizes in bytes (at least 16: sequence and timestamp) of the
    /// publish throughput matrix; the first one is used by every other line.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    pub value_size: Vec<usize>,

    /// Value sizes in bytes of the large-value publish lines, on the first
    /// partition count (batches hold at most --batch records and about
    /// 1 MiB of values).
    #[arg(long, value_delimiter = ',', default_value = "16384,65536")]
    pub large_value_size: Vec<usize>,

    /// Distinct record keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u32,

    /// Concurrent publishing clients (partlog `Publish` calls, native
    /// producers); `PublishStream` keeps as many batches in flight on one call.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,

    /// Records per batch for throughput.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,

    /// Records per batch for the fixed-rate publish → confirm latency.
    #[arg(long, default_value_t = 100)]
    pub latency_batch: usize,

    /// Records per fixed-rate publish → confirm latency measurement.
    #[arg(long, default_value_t = 100_000)]
    pub latency_records: u64,

    /// Members of the consumer group.
    #[arg(long, default_value_t = 4)]
    pub group_members: usize,

    /// Partitions of the consumer group line (enough for every member to
    /// be active) and of the pipeline line's input and output.
    #[arg(long, default_value_t = 12)]
    pub group_partitions: u32,

    /// Records a group member processes between commits.
    #[arg(long, default_value_t = 100)]
    pub commit_every: u64,

    /// Commits a partlog group member keeps in flight before it waits.
    #[arg(long, default_value_t = 32)]
    pub commits_in_flight: usize,

    /// Publish rate (records/s) while measuring publish → delivery latency.
    #[arg(long, default_value_t = 20_000)]
    pub delivery_rate: u64,

    /// The routing lease (broker.routing_lease_ms) of the partlog the bench
    /// starts (an existing one must have it too): the resize line's goal
    /// for the publish outage is twice it.
    #[arg(long, default_value_t = 2_000)]
    pub routing_lease_ms: u64,

    /// Publish rate (records/s) while the resize line grows a stream.
    #[arg(long, default_value_t = 2_000)]
    pub resize_rate: u64,

    /// Records per publish → delivery latency measurement.
    #[arg(long, default_value_t = 60_000)]
    pub delivery_records: u64,

    /// Partitions × groups of the connection scale line (256x10 is issue
    /// 10's target).
    #[arg(long, default_value = "64x4", value_parser = parse_scale)]
    pub scale: Scale,

    /// Records published before the connection scale line subscribes.
    #[arg(long, default_value_t = 5_000)]
    pub scale_records: u64,

    /// Use this broker (stream port) instead of starting or reusing the
    /// local one with scripts/rabbitmq.sh.
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,

    /// Use this running partlog (same cluster as --broker) instead of
    /// starting one; its resources are unmeasured unless --partlog-pid.
    #[arg(long, value_name = "URL")]
    pub partlog: Option<String>,

    /// Process id of the --partlog server, to measure its resources.
    #[arg(long, requires = "partlog")]
    pub partlog_pid: Option<u32>,

    /// The --partlog server's metrics listener (metrics.listen), for what
    /// the broker sent its readers.
    #[arg(long, requires = "partlog", value_name = "HOST:PORT")]
    pub partlog_metrics: Option<String>,

    /// Records of the filtered-read line, in one partition.
    #[arg(long, default_value_t = 1_000_000)]
    pub filter_records: u64,

    /// Distinct filter values of the filtered-read line's records, drawn
    /// at random for each run of --filter-run records.
    #[arg(long, default_value_t = 100)]
    pub filter_values: u32,

    /// Records in a row with the same filter value in the filtered-read
    /// line (1: each record's drawn anew; a batch's size: every publish
    /// batch of one value, as a writer that batches per tenant).
    #[arg(long, default_value_t = 1)]
    pub filter_run: u64,

    /// max_chunk_records of the filtered-read line's filtering-friendly
    /// stream.
    #[arg(long, default_value_t = 10)]
    pub filter_chunk_records: u32,

    /// filter_size_bytes (Bloom filter bytes per chunk) of the
    /// filtered-read line's streams [default: the broker's, 16].
    #[arg(long)]
    pub filter_size_bytes: Option<u32>,

    /// Where the JSON report goes; default bench/results/<UTC timestamp>.json.
    #[arg(long)]
    pub json_out: Option<PathBuf>,

    /// Passed by `cargo bench`; `cargo test` runs this binary without it.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub bench: bool,
}

impl Options {
    pub fn runs(&self, line: LineGroup) -> bool {
        self.only.is_empty() || self.only.contains(&line)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        if self.partitions.is_empty() || self.partitions.iter().any(|p| !(1..=256).contains(p)) {
            return Err("--partitions takes counts from 1 to 256".into());
        }
        if self.value_size.is_empty() || self.value_size.iter().any(|v| *v < 16) {
            return Err("--value-size takes sizes of at least 16 bytes".into());
        }
        if self.large_value_size.iter().any(|v| *v < 16) {
            return Err("--large-value-size takes sizes of at least 16 bytes".into());
        }
        if self.clients == 0 || self.batch == 0 || self.latency_batch == 0 {
            return Err("--clients, --batch and --latency-batch must be at least 1".into());
        }
        if self.batch > 10_000 || self.latency_batch > 10_000 {
            return Err("partlog takes at most 10 000 records per Publish".into());
        }
        if !(1..=256).contains(&self.group_partitions) {
            return Err("--group-partitions takes a count from 1 to 256".into());
        }
        if self.keys == 0 || self.group_members == 0 || self.commit_every == 0 {
            return Err("--keys, --group-members and --commit-every must be at least 1".into());
        }
        if self.records == 0 || self.latency_records == 0 || self.delivery_records == 0 {
            return Err("record counts must be at least 1".into());
        }
        if self.routing_lease_ms == 0 || self.resize_rate == 0 {
            return Err("--routing-lease-ms and --resize-rate must be positive".into());
        }
        if self.max_mb == 0 || self.delivery_rate == 0 || self.commits_in_flight == 0 {
            return Err(
                "--max-mb, --delivery-rate and --commits-in-flight must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Records of `value_size` bytes per throughput measurement.
    /// Records a throughput round of `value_size` bytes takes: the warm-up
    /// count, or [`Options::records_of`].
    pub fn round_records(&self, round: Round, value_size: usize) -> u64 {
        match round {
            Round::Warmup => self.warmup_records,
            Round::Measured(_) => self.records_of(value_size),
        }
    }

    pub fn records_of(&self, value_size: usize) -> u64 {
        self.records
            .min(self.max_mb * 1_000_000 / value_size as u64)
            .max(1)
    }

    /// Records per throughput batch of `value_size` bytes: --batch, or
    /// fewer so that a batch holds about [`BATCH_VALUE_BYTES`] of values.
    pub fn batch_of(&self, value_size: usize) -> usize {
        self.batch.min(BATCH_VALUE_BYTES / value_size).max(1)
    }

    /// Partitions of every line but the publish matrix.
    pub fn base_partitions(&self) -> u32 {
        self.partitions[0]
    }

    /// Value size of every line but the publish matrix.
    pub fn base_value_size(&self) -> usize {
        self.value_size[0]
    }
}

/// Most value bytes in one throughput batch: large values come in fewer
/// records per batch, as clients send them.
pub const BATCH_VALUE_BYTES: usize = 1024 * 1024;

/// The lines `--only` selects.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineGroup {
    /// Publish throughput over the value size × partitions matrix and of
    /// large values, with publish → confirm latency at full speed.
    Publish,
    /// Publish → confirm latency at a half and a quarter of the native
    /// maximum rate.
    PublishLatency,
    /// Consume throughput from the first record.
    Consume,
    /// Consumer group with commits.
    Group,
    /// Consume → publish → commit pipeline: partlog with and without
    /// `source`, and the native client with named producers.
    Pipeline,
    /// Publish → subscriber delivery latency.
    DeliveryLatency,
    /// Broker connections and activation time of many partitions × groups.
    Scale,
    /// Reading one filter value's records, filtered on the broker against
    /// unfiltered, at the default batching and with max_chunk_records; and
    /// what publishing with max_chunk_records costs.
    Filter,
    /// Growing a stream under load (ResizeStream): time to the first
    /// new-epoch delivery and the publish outage, against two routing
    /// leases.
    Resize,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Scale {
    pub partitions: u32,
    pub groups: u32,
}

fn parse_scale(text: &str) -> Result<Scale, String> {
    let (p, g) = text
        .split_once('x')
        .ok_or_else(|| format!("expected PARTITIONSxGROUPS, got {text:?}"))?;
    let partitions: u32 = p.parse().map_err(|e| format!("partitions {p:?}: {e}"))?;
    let groups: u32 = g.parse().map_err(|e| format!("groups {g:?}: {e}"))?;
    if !(1..=256).contains(&partitions) || groups == 0 {
        return Err("partitions 1..=256 and at least one group".into());
    }
    Ok(Scale { partitions, groups })
}
