//! `Read`: a bounded read of one partition from an offset.
//!
//! A new reader first attaches at `Last` to learn where the records end
//! ([`at_last_chunk`]); if the requested offset lies before that chunk it
//! moves there. A reader left at `Last` goes on to deliver new chunks,
//! which serves a read that waits for new records. After the call the
//! reader is kept for the next call from where this one ended
//! ([`WarmReaders`]).
//!
//! A read with a filter ([`read_filtered`]) asks the broker which chunk it
//! committed last, then subscribes with the filter: the broker sends only
//! the chunks that may hold the filter's values, and tells (by answering a
//! later request) when it has no more. Every record before that chunk was
//! then either sent or skipped, so the next offset can move past what the
//! filter skipped without missing a record.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::epochs::{split_markers, EpochMarker};
use super::warm_readers::{Cursor, WarmReaders};
use crate::broker::bounds::{at_last_chunk, AtLast};
use crate::broker::{Broker, ChunkReader, Consumer, Partition, ReadFrom};
use crate::config::Limits;
use crate::error::{Error, Kind, Reason, Result};
use crate::record::{RecordFilter, StoredRecord};
use crate::telemetry;
use crate::validate;

/// Default number of records a Read returns when the request names none.
pub const DEFAULT_READ_RECORDS: u32 = 100;

/// A bounded read of one partition, as the client asks for it.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    /// 0 asks for the default.
    pub max_records: u32,
    /// 0 asks for the limit.
    pub max_bytes: u32,
    pub max_wait: Duration,
    /// Only the records it keeps; `None`: every record.
    pub filter: Option<RecordFilter>,
}

/// What a bounded read returned.
#[derive(Debug)]
pub struct ReadRecords {
    pub records: Vec<StoredRecord>,
    /// Where the next read goes on: after the last record returned, or
    /// with a filter after the records it skipped.
    pub next_offset: u64,
    /// The epoch markers passed, which are not records.
    pub markers: Vec<EpochMarker>,
}

impl ReadRecords {
    fn new(mut records: Vec<StoredRecord>, next_offset: u64) -> ReadRecords {
        let markers = split_markers(&mut records);
        ReadRecords {
            records,
            next_offset,
            markers,
        }
    }
}

/// What a bounded read reads, within the limits.
#[derive(Debug, Clone, Copy)]
pub struct ReadRange {
    pub from: u64,
    pub max_records: usize,
    /// Bytes of keys, values and headers; the first record comes anyway.
    pub max_bytes: usize,
    pub max_wait: Duration,
}

impl ReadRequest {
    /// The range to read, checked against the limits.
    pub fn range(&self, limits: &Limits) -> Result<ReadRange> {
        let max_records = validate::amount(
            "max_records",
            self.max_records,
            DEFAULT_READ_RECORDS,
            limits.max_read_records,
            "limits.max_read_records",
        )?;
        let max_bytes = validate::amount(
            "max_bytes",
            self.max_bytes,
            limits.max_read_bytes,
            limits.max_read_bytes,
            "limits.max_read_bytes",
        )?;
        let max_wait_limit = Duration::from_millis(limits.max_read_wait_ms);
        if self.max_wait > max_wait_limit {
            return Err(Error::field(
                Reason::ValueOutOfRange,
                "max_wait",
                format!(
                    "max_wait is {:?}; at most {max_wait_limit:?} is allowed \
                 (limits.max_read_wait_ms)",
                    self.max_wait
                ),
            ));
        }
        Ok(ReadRange {
            from: self.offset,
            max_records: max_records as usize,
            max_bytes: max_bytes as usize,
            max_wait: self.max_wait,
        })
    }
}

/// Reads up to `range.max_records` records (and `range.max_bytes`) of
/// `partition` from `range.from`. Returns at once when the partition holds
/// nothing at or after `from`, unless `max_wait` asks to wait for the first
/// new record. Goes on with the reader parked at `from` when there is one
/// ([`WarmReaders`]) and parks its reader for the next call.
pub async fn read(
    broker: &Broker,
    warm: &WarmReaders,
    partition: &Partition,
    range: ReadRange,
) -> Result<ReadRecords> {
    let mut read = None;
    if let Some(mut cursor) = warm.take(&partition.stream, range.from) {
        match read_with(broker, &mut cursor, partition, range).await {
            Ok(records) => {
                telemetry::stream(&partition.super_stream).read_resumed();
                read = Some((records, cursor));
            }
            // The kept reader's connection failed: a new one.
            Err(why) if why.kind() == Kind::Unavailable => {
                tracing::debug!(%why, "a kept reader failed; reading with a new one");
                cursor.reader.close();
            }
            Err(e) => {
                cursor.reader.close();
                return Err(e);
            }
        }
    }
    let (records, mut cursor) = match read {
        Some(read) => read,
        None => {
            let mut cursor = cold(broker, partition, range.from).await?;
            match read_with(broker, &mut cursor, partition, range).await {
                Ok(records) => (records, cursor),
                Err(e) => {
                    cursor.reader.close();
                    return Err(e);
                }
            }
        }
    };
    let next = records.last().map_or(range.from, |r| r.offset + 1);
    if let Some(last) = records.last() {
        partition.saw_record(last.offset);
    }
    if cursor.held.is_none() {
        // The broker may send the next chunk while the reader waits.
        if let Err(e) = cursor.reader.ask_next().await {
            tracing::debug!(%e, "a reader is not kept for the next Read");
            cursor.reader.close();
            return Ok(ReadRecords::new(records, next));
        }
    }
    cursor.tail_is_current = false;
    warm.park(&partition.stream, next, cursor);
    Ok(ReadRecords::new(records, next))
}

/// Reads `range` of `partition`, keeping the records `filter` keeps. The
/// reader is not kept for the next call (a kept reader would serve the
/// same filter rarely enough not to be worth a subscription).
pub async fn read_filtered(
    broker: &Broker,
    partition: &Partition,
    range: ReadRange,
    filter: Arc<RecordFilter>,
) -> Result<ReadRecords> {
    // Committed before the filtered subscription starts (on the leader,
    // which commits first): the broker passes this chunk before it says it
    // has nothing more to send. Its records may be read again by the next
    // call, never missed.
    let stats = broker.stream_stats(&partition.stream).await?;
    let passed_at_end = stats.committed_chunk_id.unwrap_or(0);
    let leader = broker.leader(partition).await?;
    let start = ReadFrom::Offset(range.from);
    let mut reader = broker
        .readers()
        .open(
            partition,
            &leader,
            start,
            Consumer::Alone,
            Some(filter.clone()),
        )
        .await?;
    let read = scan_filtered(&mut reader, partition, range, &filter, passed_at_end).await;
    reader.close();
    read
}

/// The records of `range` that `filter` keeps, from `reader`, which reads
/// from `range.from` with the filter; every record below `passed_at_end`
/// was sent or skipped once the broker has nothing more to send.
async fn scan_filtered(
    reader: &mut ChunkReader,
    partition: &Partition,
    range: ReadRange,
    filter: &RecordFilter,
    passed_at_end: u64,
) -> Result<ReadRecords> {
    let mut records = Vec::new();
    let mut bytes = 0;
    // Offsets below this were returned or skipped.
    let mut passed = range.from;
    let wait_deadline = Instant::now() + range.max_wait;
    loop {
        let chunk = match reader.next_chunk_now().await? {
            Some(chunk) => chunk,
            None => {
                // The broker passed every chunk committed before it started.
                passed = passed.max(passed_at_end);
                if !records.is_empty() || range.max_wait.is_zero() {
                    break;
                }
                match reader.next_chunk(wait_deadline).await? {
                    Some(chunk) => chunk,
                    None => break,
                }
            }
        };
        let chunk_records = match chunk.records(partition, passed) {
            Ok(chunk_records) => chunk_records,
            // What came before the damage is answered; the next call,
            // from the damaged chunk, answers the error.
            Err(e) if e.kind() == Kind::DataLoss && !records.is_empty() => break,
            Err(e) => return Err(e),
        };
        for record in chunk_records {
            if filter.keeps(&record) {
                bytes += record.payload_bytes();
                if bytes > range.max_bytes && !records.is_empty() {
                    return Ok(ReadRecords::new(records, passed));
                }
                passed = record.offset + 1;
                records.push(record);
                if records.len() == range.max_records {
                    return Ok(ReadRecords::new(records, passed));
                }
            } else {
                passed = record.offset + 1;
            }
        }
        passed = passed.max(chunk.last_offset() + 1);
    }
    Ok(ReadRecords::new(records, passed))
}

/// A new reader for a read from `from`: attached at `Last` to learn where
/// the records end, and moved to `from` when it lies before that chunk.
async fn cold(broker: &Broker, partition: &Partition, from: u64) -> Result<Cursor> {
    let AtLast { reader, last, .. } = at_last_chunk(broker, partition).await?;
    let mut cursor = Cursor {
        reader,
        held: None,
        tail: None,
        newest_chunk: None,
        tail_is_current: true,
    };
    if let Some(last) = last {
        cursor.saw(&last);
        if from < last.first_offset {
            if let Err(e) = cursor
                .reader
                .resubscribe(ReadFrom::Offset(from), None)
                .await
            {
                cursor.reader.close();
                return Err(e);
            }
        } else {
            cursor.held = Some(last);
        }
    }
    Ok(cursor)
}

/// Brings what `cursor` knows of the partition's tail up to date, before
/// a read stops there: a chunk that arrived while the reader was kept, or
/// — when the broker stored something after the newest chunk the reader
/// received (records still on their way, or only offset tracking, which is
/// never delivered) — the last record chunk, learnt as a new reader does.
async fn refresh_tail(broker: &Broker, partition: &Partition, cursor: &mut Cursor) -> Result<()> {
    if let Some(chunk) = cursor.reader.arrived_chunk()? {
        cursor.saw(&chunk);
        cursor.held = Some(chunk);
        return Ok(());
    }
    cursor.tail_is_current = true;
    let stats = broker.stream_stats(&partition.stream).await?;
    if stats.committed_chunk_id <= cursor.newest_chunk {
        return Ok(());
    }
    let AtLast { reader, last, .. } = at_last_chunk(broker, partition).await?;
    reader.close();
    cursor.tail = cursor.tail.max(last.map(|chunk| chunk.last_offset()));
    Ok(())
}

/// Reads `range` with `cursor`, which keeps the chunk it stops in.
async fn read_with(
    broker: &Broker,
    cursor: &mut Cursor,
    partition: &Partition,
    range: ReadRange,
) -> Result<Vec<StoredRecord>> {
    let mut records = Vec::new();
    let mut bytes = 0;
    let chunk_timeout = broker.connector().timeout();
    let wait_deadline = Instant::now() + range.max_wait;
    loop {
        let chunk = match cursor.held.take() {
            Some(chunk) => chunk,
            None => {
                // Before the tail a chunk is due promptly; after it, only
                // new records would come, and only a waiting read waits.
                let next = records
                    .last()
                    .map_or(range.from, |r: &StoredRecord| r.offset + 1);
                let reached_tail = cursor.tail.is_none_or(|tail| next > tail);
                if reached_tail && !cursor.tail_is_current {
                    refresh_tail(broker, partition, cursor).await?;
                    continue;
                }
                let deadline = if reached_tail {
                    if !records.is_empty() || range.max_wait.is_zero() {
                        return Ok(records);
                    }
                    wait_deadline
                } else {
                    Instant::now() + chunk_timeout
                };
                match cursor.reader.next_chunk(deadline).await? {
                    Some(chunk) => {
                        cursor.saw(&chunk);
                        chunk
                    }
                    None if reached_tail => return Ok(records),
                    None => {
                        return Err(Error::new(
                            Reason::BrokerUnavailable,
                            format!(
                                "the broker sent no records for {chunk_timeout:?} although the \
                             partition holds more"
                            ),
                        ))
                    }
                }
            }
        };
        let from = records.last().map_or(range.from, |r| r.offset + 1);
        if let Err(e) = chunk.records(partition, from).map(drop) {
            if e.kind() == Kind::DataLoss && !records.is_empty() {
                // What came before the damage is answered; the next call,
                // from there, answers the error (the reader keeps the
                // chunk for it).
                cursor.held = Some(chunk);
                return Ok(records);
            }
            return Err(e);
        }
        let chunk_records = chunk.records(partition, from)?;
        let mut full = false;
        for record in chunk_records {
            bytes += record.payload_bytes();
            if bytes > range.max_bytes && !records.is_empty() {
                full = true;
                break;
            }
            records.push(record);
            if records.len() == range.max_records {
                full = true;
                break;
            }
        }
        let next = records.last().map_or(range.from, |r| r.offset + 1);
        if next <= chunk.last_offset() {
            // The rest of the chunk is the next call's.
            cursor.held = Some(chunk);
        }
        if full {
            return Ok(records);
        }
    }
}
