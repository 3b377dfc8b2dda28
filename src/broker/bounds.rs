//! Where a partition's records begin and end, learnt by reading: the
//! broker's statistics name chunk ids, and the last chunk may hold offset
//! tracking (stored consumer offsets) instead of records, which takes offsets
//! but is never delivered. A subscription at `Last` attaches to the last
//! chunk of records.

use super::cluster::Broker;
use super::protocol::{Chunk, ChunkReader, Consumer, ReadFrom};
use super::super_stream::Partition;
use crate::error::{Error, Reason, Result};

/// What a partition stream holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// First retained offset.
    pub first: u64,
    /// Offset of the last record.
    pub last: u64,
    /// When the chunk holding `last` was stored, ms since the Unix epoch.
    pub last_timestamp_ms: i64,
}

/// Attaches a reader to the partition's leader at `Last` and waits for the
/// last record chunk (see [`AtLast`]); the reader goes on to deliver new
/// chunks.
pub async fn at_last_chunk(broker: &Broker, partition: &Partition) -> Result<AtLast> {
    let stream = partition.stream.as_str();
    let leader = broker.leader(partition).await?;
    let mut reader = broker
        .readers()
        .open(partition, &leader, ReadFrom::Last, Consumer::Alone, None)
        .await?;
    let last = async {
        let stats = broker.stream_stats(stream).await?;
        if stats.committed_chunk_id.is_none() {
            return Ok((None, stats));
        }
        let chunk = reader.next_chunk(broker.connector().deadline()).await?;
        if chunk.is_none() {
            // Chunks but no records: only offset tracking was written.
            tracing::debug!(
                stream,
                "no record chunk arrived; the stream holds only offset tracking"
            );
        }
        Ok((chunk, stats))
    }
    .await;
    match last {
        Ok((last, stats)) => {
            if let Some(chunk) = &last {
                partition.saw_record(chunk.last_offset());
            }
            Ok(AtLast {
                reader,
                last,
                first_chunk_id: stats.first_chunk_id,
            })
        }
        Err(e) => {
            reader.close();
            Err(e)
        }
    }
}

/// A reader attached at `Last`, the last record chunk it delivered (`None`
/// when the partition holds no records) and the first retained chunk id.
pub struct AtLast {
    pub reader: ChunkReader,
    pub last: Option<Chunk>,
    pub first_chunk_id: Option<u64>,
}

/// The bounds of a partition stream, `None` while it holds no records.
pub async fn partition_bounds(broker: &Broker, partition: &Partition) -> Result<Option<Bounds>> {
    let at_last = at_last_chunk(broker, partition).await?;
    at_last.reader.close();
    let Some(last) = at_last.last else {
        return Ok(None);
    };
    let first = at_last.first_chunk_id.unwrap_or(0);
    Ok(Some(Bounds {
        first: first.min(last.first_offset),
        last: last.last_offset(),
        last_timestamp_ms: last.timestamp_ms,
    }))
}

/// The first chunk a subscription at `start` receives, which the caller
/// knows exists.
pub async fn first_chunk_at(
    broker: &Broker,
    partition: &Partition,
    start: ReadFrom,
) -> Result<Chunk> {
    let stream = &partition.stream;
    let leader = broker.leader(partition).await?;
    let timeout = broker.connector().timeout();
    let mut reader = broker
        .readers()
        .open(partition, &leader, start, Consumer::Alone, None)
        .await?;
    let chunk = reader.next_chunk(broker.connector().deadline()).await;
    reader.close();
    chunk?.ok_or_else(|| {
        Error::new(
            Reason::BrokerUnavailable,
            format!("the broker did not deliver a chunk of {stream:?} within {timeout:?}"),
        )
    })
}
