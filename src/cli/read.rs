//! `partlog read`: one partition's records, from an offset or a time, up to
//! a count or to the partition's end.

use futures::StreamExt;

use super::client::{self, Result};
use super::output::{Printer, RecordRow};
use super::{Common, ReadArgs};
use crate::proto::{self, start_position, subscribe_response::Event, StartPosition};

/// Records asked for per Read call.
const PAGE: u64 = 1000;

pub async fn run(args: ReadArgs, common: &Common) -> Result<()> {
    let mut client = client::connect(common).await?;
    let mut printer = Printer::new(common.json);
    let mut offset = match (&args.offset, &args.from_time) {
        (Some(offset), _) => *offset,
        (None, Some(time)) => {
            match offset_at_time(&mut client, &args.stream, args.partition, *time).await? {
                Some(offset) => offset,
                // Nothing stored at or after the time.
                None => return Ok(()),
            }
        }
        // Offsets below the first retained one read from the first.
        (None, None) => 0,
    };
    let mut remaining = args.max.unwrap_or(u64::MAX);
    while remaining > 0 {
        let answer = client
            .read(proto::ReadRequest {
                stream: args.stream.clone(),
                partition: args.partition,
                offset,
                max_records: remaining.min(PAGE) as u32,
                filters: args.filtering.filters.clone(),
                include_unfiltered: args.filtering.include_unfiltered,
                ..Default::default()
            })
            .await?
            .into_inner();
        if answer.records.is_empty() && answer.markers.is_empty() {
            break;
        }
        remaining = remaining.saturating_sub(answer.records.len() as u64);
        offset = answer.next_offset;
        // Markers where they sit among the records.
        let mut markers = answer.markers.into_iter().peekable();
        for record in answer.records {
            while let Some(marker) = markers.next_if(|m| m.offset < record.offset) {
                printer.epoch_marker(&marker)?;
            }
            printer.row(&RecordRow::new(record, args.values.values))?;
        }
        for marker in markers {
            printer.epoch_marker(&marker)?;
        }
    }
    Ok(())
}

/// The offset of the first record stored at or after `time` in the
/// partition, `None` when there is none yet.
///
/// The API has no lookup by time, but a subscription can start at one: it
/// attaches at the first chunk stored at or after the time. When no chunk
/// is, such a subscription would wait for the next record, so the newest
/// chunk's time is looked at first, the way partlog resolves a reset to a
/// time. Records carry their chunk's time.
async fn offset_at_time(
    client: &mut client::Client,
    stream: &str,
    partition: u32,
    time: prost_types::Timestamp,
) -> Result<Option<u64>> {
    // An empty partition has no last chunk to attach to; Read says so at once.
    let any = client
        .read(proto::ReadRequest {
            stream: stream.to_owned(),
            partition,
            max_records: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    if any.records.is_empty() {
        return Ok(None);
    }
    let newest = first_record_from(
        client,
        stream,
        partition,
        start_position::Position::Last(start_position::Last {}),
    )
    .await?;
    // partlog resolves times to the broker's milliseconds.
    let millis = |t: prost_types::Timestamp| (t.seconds, t.nanos / 1_000_000);
    let after_newest = newest.timestamp.is_some_and(|t| millis(t) < millis(time));
    if after_newest {
        return Ok(None);
    }
    let first = first_record_from(
        client,
        stream,
        partition,
        start_position::Position::Timestamp(time),
    )
    .await?;
    Ok(Some(first.offset))
}

/// The first record a plain subscription at `start` delivers.
async fn first_record_from(
    client: &mut client::Client,
    stream: &str,
    partition: u32,
    start: start_position::Position,
) -> Result<proto::Record> {
    let mut events = client
        .subscribe(proto::SubscribeRequest {
            stream: stream.to_owned(),
            partitions: vec![partition],
            start: Some(StartPosition {
                position: Some(start),
            }),
            window: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(event) = events.next().await {
        if let Some(Event::Record(record)) = event?.event {
            return Ok(record);
        }
    }
    Err(client::Failure::Other(format!(
        "partlog ended the subscription to partition {partition} of {stream:?} before a record came"
    )))
}
