//! `partlog offsets`, `commit`, `reset` and `groups`: a consumer group's
//! committed offsets.

use serde::Serialize;

use super::client::{self, Failure, Result};
use super::output::{cell, Printer, Row};
use super::{CommitArgs, Common, GroupsArgs, OffsetsArgs, ResetArgs};
use crate::proto;

/// One partition of `GetOffsets`.
#[derive(Debug, Serialize)]
struct OffsetsRow {
    partition: u32,
    committed: Option<u64>,
    /// LOCAL (this instance's store) or BROKER (committed elsewhere).
    source: Option<&'static str>,
    first: Option<u64>,
    tail: Option<u64>,
    lag: u64,
    active_member: Option<String>,
}

impl Row for OffsetsRow {
    const HEADER: &'static [&'static str] = &[
        "PARTITION",
        "COMMITTED",
        "SOURCE",
        "FIRST",
        "TAIL",
        "LAG",
        "ACTIVE",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.partition.to_string(),
            cell(self.committed),
            cell(self.source),
            cell(self.first),
            cell(self.tail),
            self.lag.to_string(),
            cell(self.active_member.as_ref()),
        ]
    }
}

impl From<proto::PartitionOffsets> for OffsetsRow {
    fn from(p: proto::PartitionOffsets) -> Self {
        let source = match proto::OffsetSource::try_from(p.committed_source) {
            Ok(proto::OffsetSource::Local) => Some("LOCAL"),
            Ok(proto::OffsetSource::Broker) => Some("BROKER"),
            _ => None,
        };
        OffsetsRow {
            partition: p.partition,
            committed: p.committed,
            source,
            first: p.first,
            tail: p.tail,
            lag: p.lag,
            active_member: Some(p.active_member).filter(|m| !m.is_empty()),
        }
    }
}

/// A partition's committed offset after `commit` or `reset`.
#[derive(Debug, Serialize)]
struct CommittedRow {
    partition: u32,
    /// The last processed record; none after a reset to the very start.
    committed: Option<u64>,
    /// The offset asked for was below the committed one and ignored.
    ignored_lower: bool,
}

impl Row for CommittedRow {
    const HEADER: &'static [&'static str] = &["PARTITION", "COMMITTED", "NOTE"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.partition.to_string(),
            cell(self.committed),
            if self.ignored_lower {
                "lower than the committed offset: ignored".into()
            } else {
                String::new()
            },
        ]
    }
}

fn committed_rows(results: Vec<proto::CommitResult>) -> Vec<CommittedRow> {
    results
        .into_iter()
        .map(|r| CommittedRow {
            partition: r.partition,
            committed: r.committed,
            ignored_lower: r.ignored_lower,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct GroupRow {
    group: String,
}

impl Row for GroupRow {
    const HEADER: &'static [&'static str] = &["GROUP"];

    fn cells(&self) -> Vec<String> {
        vec![self.group.clone()]
    }
}

pub async fn offsets(args: OffsetsArgs, common: &Common) -> Result<()> {
    let mut client = client::connect(common).await?;
    let answer = client
        .get_offsets(proto::GetOffsetsRequest {
            group: args.group,
            stream: args.stream,
        })
        .await?
        .into_inner();
    let rows: Vec<OffsetsRow> = answer.partitions.into_iter().map(Into::into).collect();
    Printer::new(common.json).rows(&rows)?;
    Ok(())
}

pub async fn commit(args: CommitArgs, common: &Common) -> Result<()> {
    let mut offsets = std::collections::HashMap::new();
    for (partition, offset) in args.offsets {
        if offsets.insert(partition, offset).is_some() {
            return Err(Failure::Usage(format!(
                "partition {partition} is named twice"
            )));
        }
    }
    let mut client = client::connect(common).await?;
    let answer = client
        .commit(proto::CommitRequest {
            group: args.group,
            stream: args.stream,
            offsets,
        })
        .await?
        .into_inner();
    let mut rows = committed_rows(answer.results);
    rows.sort_by_key(|r| r.partition);
    Printer::new(common.json).rows(&rows)?;
    Ok(())
}

pub async fn reset(args: ResetArgs, common: &Common) -> Result<()> {
    let mut client = client::connect(common).await?;
    let answer = client
        .reset_offsets(proto::ResetOffsetsRequest {
            group: args.group,
            stream: args.stream,
            partitions: args.partitions,
            to: Some(args.to.to_proto()),
        })
        .await?
        .into_inner();
    let mut rows = committed_rows(answer.results);
    rows.sort_by_key(|r| r.partition);
    Printer::new(common.json).rows(&rows)?;
    Ok(())
}

pub async fn list(args: GroupsArgs, common: &Common) -> Result<()> {
    let mut client = client::connect(common).await?;
    let answer = client
        .list_groups(proto::ListGroupsRequest {
            stream: args.stream,
        })
        .await?
        .into_inner();
    let rows: Vec<GroupRow> = answer
        .groups
        .into_iter()
        .map(|group| GroupRow { group })
        .collect();
    Printer::new(common.json).rows(&rows)?;
    Ok(())
}
