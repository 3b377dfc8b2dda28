//! The client subcommands of the `partlog` binary: `stream`, `publish`,
//! `read`, `tail`, `offsets`, `commit`, `reset`, `groups` and `health`,
//! which call a running partlog over gRPC with the generated client.
//!
//! - this module: the clap types and the dispatch;
//! - [`client`]: connecting, and the failures with their exit codes;
//! - [`parse`]: argument values (`--from`, `P=OFFSET`, sizes, durations);
//! - [`input`]: records read from standard input by `publish`;
//! - [`output`]: tables, JSON lines and value rendering, shared by all;
//! - `stream`, `publish`, `read`, `tail`, `groups`, `health`: one module per
//!   concern;
//! - `token`: bearer tokens and their entries for the principals file.
//!
//! Exit codes: 0 success, 1 a call (or a published record) failed, 2 bad
//! usage or input.

pub mod client;
mod groups;
mod health;
pub mod input;
mod mirror;
pub mod output;
pub mod parse;
mod publish;
mod read;
mod stream;
mod tail;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tonic::codegen::http::Uri;

use crate::config::Secret;
use client::Failure;
use input::InputFormat;
use output::ValueFormat;
use parse::Position;

/// Options every client subcommand takes, anywhere on the command line
/// (`partlog --server URL stream create ..` as well as
/// `partlog stream create .. --server URL`): the binary parses them at its
/// top level, as global options.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection and output (client subcommands)")]
pub struct Common {
    /// partlog's gRPC address (http://HOST:PORT, or HOST:PORT).
    #[arg(
        long,
        env = "PARTLOG_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_parser = parse::server,
        global = true
    )]
    pub server: Uri,
    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM CA certificate(s) that partlog's TLS certificate must chain to
    /// (https:// servers) [default: the system's trusted CAs].
    #[arg(long, env = "PARTLOG_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for a partlog with mutual TLS; with --key.
    #[arg(
        long,
        env = "PARTLOG_CERT",
        value_name = "FILE",
        requires = "key",
        global = true
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "PARTLOG_KEY",
        value_name = "FILE",
        requires = "cert",
        global = true
    )]
    pub key: Option<PathBuf>,
    /// Bearer token sent with every call. Prefer PARTLOG_TOKEN or
    /// --token-file: other users of the machine can see arguments.
    #[arg(long, env = "PARTLOG_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<Secret>,
    /// A file holding the bearer token (used when no --token is given).
    #[arg(long, env = "PARTLOG_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// How record values (and keys that are not UTF-8) are printed.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection and output")]
pub struct ValueArgs {
    /// How values are printed: `auto` is UTF-8 text when the value is valid
    /// UTF-8 and base64 otherwise (`base64:` prefixed in tables,
    /// `{"base64": ..}` in JSON), `utf8` replaces invalid bytes, `base64` and
    /// `hex` encode every value.
    #[arg(long, value_enum, default_value_t = ValueFormat::Auto)]
    pub values: ValueFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, describe or delete a stream.
    Stream(StreamArgs),
    /// Publish records read from standard input.
    Publish(PublishArgs),
    /// Print one partition's records from an offset or a time.
    Read(ReadArgs),
    /// Follow records as they arrive (Subscribe), alone or in a consumer group.
    Tail(TailArgs),
    /// Show a group's committed offset, first and tail offset and lag per partition.
    Offsets(OffsetsArgs),
    /// Commit a group's offsets (the offset of the last processed record).
    Commit(CommitArgs),
    /// Move a group's committed offsets, also backwards.
    Reset(ResetArgs),
    /// List the consumer groups this partlog instance knows for a stream.
    Groups(GroupsArgs),
    /// Copy a stream to another partlog exactly once, as a member of a
    /// consumer group: run several to share the work, stop and start any at
    /// any time.
    Mirror(MirrorArgs),
    /// Ask partlog's health service whether it serves (exit 0) or not (exit 1).
    Health(HealthArgs),
    /// Make a bearer token, or the principals-file entry for one.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a new random token (256 bits, base64url) on standard output.
    New,
    /// Read a token from standard input (its first line) and print the
    /// principals-file entry (auth.tokens_file) with its SHA-256.
    Hash {
        /// The principal's name in the entry.
        #[arg(long)]
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(subcommand)]
    pub command: StreamCommand,
}

#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Create a stream (a RabbitMQ super stream) and print its partitions.
    Create {
        /// The stream's name.
        name: String,
        /// Number of partitions, 1..=256.
        #[arg(long)]
        partitions: u32,
        /// Delete segments older than this (e.g. 1d, 12h, 90min; whole seconds).
        #[arg(long, value_parser = parse::duration)]
        max_age: Option<prost_types::Duration>,
        /// Delete the oldest segments beyond this size per partition (e.g. 10GB, 512MiB).
        #[arg(long, value_parser = parse::size)]
        max_bytes: Option<u64>,
        /// Size of one segment file (e.g. 100MB); the broker's default otherwise.
        #[arg(long, value_parser = parse::size)]
        max_segment_bytes: Option<u64>,
        /// Replicas per partition, the leader included; the broker's default otherwise.
        #[arg(long)]
        replicas: Option<u32>,
        /// Bytes of each chunk's Bloom filter of filter values (16..=255); the broker's
        /// default (16) otherwise.
        #[arg(long)]
        filter_size_bytes: Option<u32>,
        /// At most this many records per chunk from a partlog producer (1..=10000): small
        /// chunks filter well, at a broker round trip per chunk.
        #[arg(long)]
        max_chunk_records: Option<u32>,
    },
    /// List the streams (that the caller may use) with their partition counts, in name order.
    List {
        /// Only streams whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Print a stream's partitions in routing order with leader and replicas, and its growths.
    Describe {
        /// The stream's name.
        name: String,
    },
    /// Grow a stream to more partitions, keeping every key's order; prints its partitions
    /// and growths. Publishing pauses for about two routing leases (broker.routing_lease_ms).
    Resize {
        /// The stream's name.
        name: String,
        /// The partition count after the resize: more than the stream has, at most 256.
        #[arg(long)]
        partitions: u32,
    },
    /// Delete a stream and all of its partitions.
    Delete {
        /// The stream's name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The stream to publish to.
    pub stream: String,
    /// `text`: one record per line, `key<TAB>value` (a line without a tab is
    /// a value with an empty key). `json`: one object per line,
    /// {"key": .., "value": .., "headers": {..}, "filter": .., "sequence": N}, the value a
    /// string or {"base64": ..} or {"hex": ..}. Empty lines are skipped.
    #[arg(long, value_enum, default_value_t = InputFormat::Text)]
    pub format: InputFormat,
    /// Publish idempotently as this producer: a record retried with the same
    /// producer id and sequence is stored once.
    #[arg(long)]
    pub producer_id: Option<String>,
    /// With --producer-id: the sequence of the first record; each next record
    /// takes the previous one's + 1 unless its JSON line has a `sequence`.
    /// [default: 1]
    #[arg(long, requires = "producer_id")]
    pub first_sequence: Option<u64>,
    /// The filter value of every record whose JSON line has no `filter`:
    /// consumers that filter on the broker are sent only chunks that may
    /// hold the values they want.
    #[arg(long)]
    pub filter: Option<String>,
    /// Records per batch (one PublishStream message); batches are pipelined.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// The stream to read.
    pub stream: String,
    /// The partition to read.
    #[arg(long)]
    pub partition: u32,
    /// First offset to print [default: the first retained record].
    #[arg(long, conflicts_with = "from_time")]
    pub offset: Option<u64>,
    /// Start at the first record stored at or after this time (RFC 3339,
    /// e.g. 2026-11-28T10:00:00Z).
    #[arg(long, value_parser = parse::timestamp)]
    pub from_time: Option<prost_types::Timestamp>,
    /// Stop after this many records [default: at the partition's end].
    #[arg(long)]
    pub max: Option<u64>,
    #[command(flatten)]
    pub filtering: FilterArgs,
    #[command(flatten)]
    pub values: ValueArgs,
}

/// Which records a read keeps, by their filter values.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only records with this filter value (repeat for several, at most
    /// 64): the broker sends only the chunks that may hold them.
    #[arg(long = "filter", value_name = "VALUE")]
    pub filters: Vec<String>,
    /// With --filter: records without a filter value too.
    #[arg(long, requires = "filters")]
    pub include_unfiltered: bool,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// The stream to follow.
    pub stream: String,
    /// Read as a member of this consumer group: the broker gives each
    /// partition to one member at a time.
    #[arg(long)]
    pub group: Option<String>,
    /// Partitions to follow, e.g. 0,2 [default: all].
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<u32>,
    /// Where to start in each partition: first, last, next, committed,
    /// offset:N or time:RFC3339 [default: committed with --group, next
    /// without].
    #[arg(long, value_parser = parse::position)]
    pub from: Option<Position>,
    /// Commit each record's offset once it is printed (needs --group).
    #[arg(long, requires = "group")]
    pub commit: bool,
    /// Records partlog buffers for this subscriber [default: the server's].
    #[arg(long)]
    pub window: Option<u32>,
    #[command(flatten)]
    pub filtering: FilterArgs,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<u64>,
    #[command(flatten)]
    pub values: ValueArgs,
}

#[derive(Args, Debug)]
pub struct OffsetsArgs {
    /// The stream.
    pub stream: String,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// The stream.
    pub stream: String,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
    /// PARTITION=OFFSET pairs: the offset of the last processed record.
    #[arg(required = true, value_parser = parse::partition_offset)]
    pub offsets: Vec<(u32, u64)>,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// The stream.
    pub stream: String,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
    /// Where the group resumes: first, last, offset:N (resume at N) or
    /// time:RFC3339 (resume at the first record stored at or after it).
    #[arg(long, value_parser = parse::reset_target)]
    pub to: Position,
    /// Partitions to reset, e.g. 0,2 [default: all].
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<u32>,
}

#[derive(Args, Debug)]
pub struct GroupsArgs {
    /// The stream.
    pub stream: String,
}

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// The stream to copy, on --server.
    pub stream: String,
    /// The partlog to copy to (http://HOST:PORT or https://...).
    #[arg(long, value_parser = parse::server)]
    pub to: Uri,
    /// The stream to copy to, which must exist [default: the same name].
    #[arg(long)]
    pub to_stream: Option<String>,
    /// The consumer group on the source; mirrors of one group share its
    /// partitions, and a restarted mirror resumes after its last commit.
    #[arg(long)]
    pub group: String,
    /// PEM CA certificate(s) for an https:// target [default: the system's].
    #[arg(long, value_name = "FILE")]
    pub to_ca: Option<PathBuf>,
    /// A file holding the bearer token for the target (the source's token
    /// is never sent to it).
    #[arg(long, value_name = "FILE")]
    pub to_token_file: Option<PathBuf>,
    /// PEM client certificate for a target that asks for one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "to_key")]
    pub to_cert: Option<PathBuf>,
    /// PEM private key of --to-cert.
    #[arg(long, value_name = "FILE", requires = "to_cert")]
    pub to_key: Option<PathBuf>,
    /// Exit once the group has copied everything the source holds (its lag
    /// is 0 on every partition): a one-off copy instead of a standing one.
    #[arg(long)]
    pub until_caught_up: bool,
}

impl MirrorArgs {
    /// How to reach the target: its address, CA, client certificate and
    /// token of its own.
    fn target(&self, common: &Common) -> Common {
        Common {
            server: self.to.clone(),
            ca: self.to_ca.clone(),
            cert: self.to_cert.clone(),
            key: self.to_key.clone(),
            token: None,
            token_file: self.to_token_file.clone(),
            ..common.clone()
        }
    }
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The service to ask about: partlog.v1.PartLog (NOT_SERVING while no
    /// broker node answers), or "" for the server as a whole.
    #[arg(long, default_value = "partlog.v1.PartLog")]
    pub service: String,
}

/// Runs a client subcommand with the common options and prints what went
/// wrong, if anything.
pub fn run(command: Command, common: &Common) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return client::report(Failure::Other(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match command {
            Command::Stream(args) => stream::run(args, common).await,
            Command::Publish(args) => publish::run(args, common).await,
            Command::Read(args) => read::run(args, common).await,
            Command::Tail(args) => tail::run(args, common).await,
            Command::Offsets(args) => groups::offsets(args, common).await,
            Command::Commit(args) => groups::commit(args, common).await,
            Command::Reset(args) => groups::reset(args, common).await,
            Command::Groups(args) => groups::list(args, common).await,
            Command::Mirror(args) => mirror::run(args, common).await,
            Command::Health(args) => health::run(args, common).await,
            Command::Token(command) => token::run(command),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => client::report(failure),
    }
}
