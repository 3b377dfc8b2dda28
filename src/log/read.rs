//! `Read`: a bounded read of one partition from an offset.
//!
//! One connection: the reader first attaches at `Last` to learn where the
//! records end ([`at_last_chunk`]); if the requested offset lies before that
//! chunk it moves there. A reader left at `Last` goes on to deliver new
//! chunks, which serves a read that waits for new records.

use std::time::Duration;

use tokio::time::Instant;

use crate::broker::bounds::{at_last_chunk, AtLast};
use crate::broker::{Broker, Chunk, ChunkReader, Partition, ReadFrom};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::record::StoredRecord;
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
            return Err(Error::InvalidArgument(format!(
                "max_wait is {:?}; at most {max_wait_limit:?} is allowed \
                 (limits.max_read_wait_ms)",
                self.max_wait
            )));
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
/// new record.
pub async fn read(
    broker: &Broker,
    partition: &Partition,
    range: ReadRange,
) -> Result<Vec<StoredRecord>> {
    let AtLast {
        mut reader, last, ..
    } = at_last_chunk(broker, partition).await?;
    let result = read_with(broker, &mut reader, partition, last, range).await;
    reader.close();
    let records = result?;
    if let Some(last) = records.last() {
        partition.saw_record(last.offset);
    }
    Ok(records)
}

/// Reads `range` with a reader at `Last` that delivered `last`.
async fn read_with(
    broker: &Broker,
    reader: &mut ChunkReader,
    partition: &Partition,
    last: Option<Chunk>,
    range: ReadRange,
) -> Result<Vec<StoredRecord>> {
    let mut pending = None;
    let mut tail = None;
    if let Some(last) = last {
        tail = Some(last.last_offset());
        if range.from < last.first_offset {
            reader.resubscribe(ReadFrom::Offset(range.from)).await?;
        } else {
            pending = Some(last);
        }
    }
    let mut reached_tail = tail.is_none();
    let mut records = Vec::new();
    let mut bytes = 0;
    let chunk_timeout = broker.connector().timeout();
    let wait_deadline = Instant::now() + range.max_wait;
    loop {
        let chunk = match pending.take() {
            Some(chunk) => chunk,
            None => {
                // Before the tail a chunk is due promptly; after it, only
                // new records would come, and only a waiting read waits.
                let deadline = if reached_tail {
                    if !records.is_empty() || range.max_wait.is_zero() {
                        return Ok(records);
                    }
                    wait_deadline
                } else {
                    Instant::now() + chunk_timeout
                };
                match reader.next_chunk(deadline).await? {
                    Some(chunk) => chunk,
                    None if reached_tail => return Ok(records),
                    None => {
                        return Err(Error::Unavailable(format!(
                            "the broker sent no records for {chunk_timeout:?} although the \
                             partition holds more"
                        )))
                    }
                }
            }
        };
        let chunk_records = match chunk.records(partition, range.from) {
            Ok(chunk_records) => chunk_records,
            // What came before the damage is answered; reading on from
            // there answers the error.
            Err(Error::DataLoss(_)) if !records.is_empty() => return Ok(records),
            Err(e) => return Err(e),
        };
        for record in chunk_records {
            bytes += record.payload_bytes();
            if bytes > range.max_bytes && !records.is_empty() {
                return Ok(records);
            }
            records.push(record);
            if records.len() == range.max_records {
                return Ok(records);
            }
        }
        if tail.is_some_and(|t| chunk.last_offset() >= t) {
            reached_tail = true;
        }
    }
}
