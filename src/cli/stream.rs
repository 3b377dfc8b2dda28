//! `partlog stream create|list|describe|resize|delete`.

use serde::Serialize;

use super::client::{self, Result};
use super::output::{cell, Printer, Row};
use super::{Common, StreamArgs, StreamCommand};
use crate::proto;

/// One partition of a stream description.
#[derive(Debug, Serialize)]
struct PartitionRow {
    stream: String,
    partition: u32,
    partition_stream: String,
    leader: String,
    replicas: Vec<String>,
    /// First and last offset held; unset (`-`) while the partition is empty.
    first: Option<u64>,
    tail: Option<u64>,
}

impl Row for PartitionRow {
    const HEADER: &'static [&'static str] =
        &["PARTITION", "STREAM", "LEADER", "REPLICAS", "FIRST", "TAIL"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.partition.to_string(),
            self.partition_stream.clone(),
            self.leader.clone(),
            if self.replicas.is_empty() {
                "-".into()
            } else {
                self.replicas.join(",")
            },
            cell(self.first),
            cell(self.tail),
        ]
    }
}

fn partition_rows(description: Option<proto::StreamDescription>) -> Vec<PartitionRow> {
    let description = description.unwrap_or_default();
    description
        .partitions
        .into_iter()
        .map(|p| PartitionRow {
            stream: description.stream.clone(),
            partition: p.index,
            partition_stream: p.partition_stream,
            leader: p.leader,
            replicas: p.replicas,
            first: p.first,
            tail: p.tail,
        })
        .collect()
}

/// One growth of a stream (see ResizeStream).
#[derive(Debug, Serialize)]
struct EpochRow {
    stream: String,
    from_partitions: u32,
    to_partitions: u32,
    /// RFC 3339, UTC.
    resized_at: String,
    /// Offset of each old partition's epoch marker.
    marker_offsets: Vec<u64>,
}

impl Row for EpochRow {
    const HEADER: &'static [&'static str] = &["GREW", "RESIZED_AT", "MARKERS"];

    fn cells(&self) -> Vec<String> {
        let markers: Vec<String> = self.marker_offsets.iter().map(u64::to_string).collect();
        vec![
            format!("{} -> {}", self.from_partitions, self.to_partitions),
            self.resized_at.clone(),
            markers.join(","),
        ]
    }
}

/// The stream's partitions, then its growths when it has any.
fn print_description(
    printer: &mut Printer,
    description: Option<proto::StreamDescription>,
) -> Result<()> {
    let epochs: Vec<EpochRow> = description
        .iter()
        .flat_map(|d| {
            d.epochs.iter().map(|epoch| EpochRow {
                stream: d.stream.clone(),
                from_partitions: epoch.from_partitions,
                to_partitions: epoch.to_partitions,
                resized_at: super::output::timestamp(epoch.resized_at).unwrap_or_default(),
                marker_offsets: epoch.marker_offsets.clone(),
            })
        })
        .collect();
    printer.rows(&partition_rows(description))?;
    if !epochs.is_empty() {
        printer.rows(&epochs)?;
    }
    Ok(())
}

/// One stream of a listing.
#[derive(Debug, Serialize)]
struct StreamRow {
    stream: String,
    partitions: u32,
}

impl Row for StreamRow {
    const HEADER: &'static [&'static str] = &["STREAM", "PARTITIONS"];

    fn cells(&self) -> Vec<String> {
        vec![self.stream.clone(), self.partitions.to_string()]
    }
}

/// Streams per ListStreams call: the most partlog answers.
const LIST_PAGE: i32 = 1000;

#[derive(Serialize)]
struct Deleted<'a> {
    stream: &'a str,
    deleted: bool,
}

pub async fn run(args: StreamArgs, common: &Common) -> Result<()> {
    let mut printer = Printer::new(common.json);
    let mut client = client::connect(common).await?;
    match args.command {
        StreamCommand::Create {
            name,
            partitions,
            max_age,
            max_bytes,
            max_segment_bytes,
            replicas,
            filter_size_bytes,
            max_chunk_records,
        } => {
            let retention = (max_age.is_some()
                || max_bytes.is_some()
                || max_segment_bytes.is_some())
            .then(|| proto::Retention {
                max_age,
                max_bytes: max_bytes.unwrap_or(0),
                max_segment_bytes: max_segment_bytes.unwrap_or(0),
            });
            let created = client
                .create_stream(proto::CreateStreamRequest {
                    stream: name,
                    partitions,
                    retention,
                    replicas,
                    filter_size_bytes,
                    max_chunk_records,
                })
                .await?
                .into_inner();
            print_description(&mut printer, created.stream)?;
        }
        StreamCommand::List { prefix } => {
            let mut rows = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_streams(proto::ListStreamsRequest {
                        prefix: prefix.clone(),
                        page_size: LIST_PAGE,
                        page_token,
                    })
                    .await?
                    .into_inner();
                rows.extend(page.streams.into_iter().map(|s| StreamRow {
                    stream: s.stream,
                    partitions: s.partitions,
                }));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            printer.rows(&rows)?;
        }
        StreamCommand::Describe { name } => {
            let described = client
                .describe_stream(proto::DescribeStreamRequest { stream: name })
                .await?
                .into_inner();
            print_description(&mut printer, described.stream)?;
        }
        StreamCommand::Resize { name, partitions } => {
            let resized = client
                .resize_stream(proto::ResizeStreamRequest {
                    stream: name,
                    partitions,
                })
                .await?
                .into_inner();
            print_description(&mut printer, resized.stream)?;
        }
        StreamCommand::Delete { name } => {
            client
                .delete_stream(proto::DeleteStreamRequest {
                    stream: name.clone(),
                })
                .await?;
            printer.message(
                &format!("deleted stream {name}"),
                &Deleted {
                    stream: &name,
                    deleted: true,
                },
            )?;
        }
    }
    Ok(())
}
