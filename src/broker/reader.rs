//! Reading a partition stream chunk by chunk.
//!
//! A [`ChunkReader`] is one subscription on its own connection. The broker
//! sends a chunk per credit, and the reader keeps exactly one credit
//! outstanding: rabbitmq-stream-client hands every incoming frame to the
//! handler on a freshly spawned task, so two chunks in flight at once could
//! reach the reader out of order. One credit at a time keeps chunks in
//! offset order and bounds what the reader buffers to a single chunk; a
//! caller that stops asking stops the broker too.
//! [`read_range`] builds the bounded `Read` on top of it, using the
//! partition's committed chunk id (from `StreamStats`) to know where the log
//! currently ends instead of waiting for a chunk that may never come.

use std::collections::HashMap;
use std::time::Duration;

use rabbitmq_stream_client::types::{Message, MessageResult, OffsetSpecification, ResponseKind};
use rabbitmq_stream_client::Client;
use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::commands::deliver::DeliverCommand;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{unavailable, Broker, Node};
use crate::error::{Error, Result};
use crate::record::StoredRecord;

const SUBSCRIPTION_ID: u8 = 1;

/// One chunk as delivered: consecutive records from `first_offset`.
pub struct Chunk {
    pub first_offset: u64,
    /// When the broker wrote the chunk, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub messages: Vec<Message>,
}

impl Chunk {
    fn from_deliver(deliver: &DeliverCommand) -> Chunk {
        Chunk {
            first_offset: deliver.chunk_first_offset,
            timestamp_ms: chunk_timestamp(deliver),
            messages: deliver.messages.clone(),
        }
    }

    /// Offset of the chunk's last record.
    pub fn last_offset(&self) -> u64 {
        self.first_offset + (self.messages.len() as u64).saturating_sub(1)
    }
}

/// The chunk timestamp of a delivery. The protocol crate keeps the field
/// private; its encoder writes the frame fields in wire order, so encoding
/// just the fixed header (subscription id, magic, chunk type, entries,
/// records, timestamp) recovers it without copying the records.
fn chunk_timestamp(deliver: &DeliverCommand) -> i64 {
    /// Accepts the first `N` bytes, then refuses, which stops the encoder.
    struct Prefix<const N: usize> {
        bytes: [u8; N],
        len: usize,
    }
    impl<const N: usize> std::io::Write for Prefix<N> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(N - self.len);
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.bytes[self.len..self.len + n].copy_from_slice(&buf[..n]);
            self.len += n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const TIMESTAMP_AT: usize = 1 + 1 + 1 + 2 + 4;
    let mut prefix = Prefix::<{ TIMESTAMP_AT + 8 }> {
        bytes: [0; TIMESTAMP_AT + 8],
        len: 0,
    };
    let _ = deliver.encode(&mut prefix);
    let bytes: [u8; 8] = prefix.bytes[TIMESTAMP_AT..].try_into().expect("8 bytes");
    i64::from_be_bytes(bytes)
}

/// What a subscription hears from the broker.
pub enum ReaderEvent {
    Chunk(Chunk),
    /// Single active consumer: this subscription became active (it must
    /// answer with [`ChunkReader::activate`]) or inactive.
    ConsumerUpdate {
        active: bool,
        correlation_id: u32,
    },
}

/// A subscription to one partition stream on its own connection.
pub struct ChunkReader {
    client: Client,
    events: mpsc::UnboundedReceiver<Result<ReaderEvent>>,
}

impl ChunkReader {
    /// Subscribes to `stream` on `node` from `start`. `properties` are the
    /// subscription's properties (consumer name, single active consumer, ...).
    pub async fn open(
        broker: &Broker,
        stream: &str,
        node: &Node,
        start: OffsetSpecification,
        properties: HashMap<String, String>,
    ) -> Result<ChunkReader> {
        let client = broker.open_client(Some(node), "partlog-reader").await?;
        let (tx, events) = mpsc::unbounded_channel();
        client
            .set_handler(move |item: MessageResult| {
                let tx = tx.clone();
                async move {
                    match item {
                        Some(Ok(response)) => match response.kind_ref() {
                            ResponseKind::Deliver(deliver) => {
                                let _ =
                                    tx.send(Ok(ReaderEvent::Chunk(Chunk::from_deliver(deliver))));
                            }
                            ResponseKind::ConsumerUpdate(update) => {
                                let _ = tx.send(Ok(ReaderEvent::ConsumerUpdate {
                                    active: update.is_active() == 1,
                                    correlation_id: update.get_correlation_id(),
                                }));
                            }
                            ResponseKind::MetadataUpdate(_) => {
                                let _ = tx.send(Err(Error::Unavailable(
                                    "the partition's leader changed or it was deleted".into(),
                                )));
                            }
                            _ => {}
                        },
                        Some(Err(e)) => {
                            let _ = tx.send(Err(unavailable("the reading connection failed", e)));
                        }
                        None => {
                            let _ = tx.send(Err(Error::Unavailable(
                                "the reading connection closed".into(),
                            )));
                        }
                    }
                    Ok(())
                }
            })
            .await;
        let response = broker
            .within(
                &format!("subscribing to {stream:?}"),
                client.subscribe(SUBSCRIPTION_ID, stream, start, 1, properties),
            )
            .await?
            .map_err(|e| unavailable(&format!("cannot subscribe to {stream:?}"), e))?;
        if !response.is_ok() {
            let _ = client.close().await;
            return Err(match response.code() {
                rabbitmq_stream_client::types::ResponseCode::StreamDoesNotExist => {
                    Error::NotFound(format!("partition stream {stream:?} does not exist"))
                }
                code => Error::Unavailable(format!("cannot subscribe to {stream:?}: {code:?}")),
            });
        }
        Ok(ChunkReader { client, events })
    }

    /// The next event, or `None` when none arrived before `deadline`.
    /// Receiving a chunk asks the broker for the one after it.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<ReaderEvent>> {
        let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Err(_) => return Ok(None),
            Ok(Some(event)) => event?,
            Ok(None) => return Err(Error::Unavailable("the reading connection closed".into())),
        };
        if let ReaderEvent::Chunk(_) = event {
            self.client
                .credit(SUBSCRIPTION_ID, 1)
                .await
                .map_err(|e| unavailable("granting credit failed", e))?;
        }
        Ok(Some(event))
    }

    /// The next chunk, or `None` when none arrived before `deadline`.
    /// For subscriptions without single active consumer.
    pub async fn next_chunk(&mut self, deadline: Instant) -> Result<Option<Chunk>> {
        loop {
            match self.next_event(deadline).await? {
                None => return Ok(None),
                Some(ReaderEvent::Chunk(chunk)) => return Ok(Some(chunk)),
                Some(ReaderEvent::ConsumerUpdate { .. }) => continue,
            }
        }
    }

    /// Answers a consumer update: where this now active (or, ignored by the
    /// broker, inactive) consumer starts.
    pub async fn answer_update(
        &self,
        correlation_id: u32,
        start: OffsetSpecification,
    ) -> Result<()> {
        let response = self
            .client
            .consumer_update(correlation_id, start)
            .await
            .map_err(|e| unavailable("answering a consumer update failed", e))?;
        if response.is_ok() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "the broker refused the consumer update answer: {:?}",
                response.code()
            )))
        }
    }

    /// Unsubscribes and closes the connection in the background: the caller
    /// has what it needs and should not wait for the broker's goodbye.
    pub fn close(self) {
        let client = self.client;
        tokio::spawn(async move {
            let _ = client.unsubscribe(SUBSCRIPTION_ID).await;
            let _ = client.close().await;
        });
    }
}

/// First and last offset of a partition stream, `None` while it is empty.
/// The last offset is exact: the broker reports only the id (first offset)
/// of the last committed chunk, so that chunk is read to count its records.
pub async fn partition_bounds(
    broker: &Broker,
    stream: &str,
    leader: &Node,
) -> Result<Option<(u64, u64)>> {
    let stats = broker.stream_stats(stream).await?;
    let (Some(first), Some(last_chunk)) = (stats.first_chunk_id, stats.committed_chunk_id) else {
        return Ok(None);
    };
    let mut reader = ChunkReader::open(
        broker,
        stream,
        leader,
        OffsetSpecification::Offset(last_chunk),
        HashMap::new(),
    )
    .await?;
    let chunk = reader.next_chunk(Instant::now() + broker.timeout()).await;
    reader.close();
    match chunk? {
        Some(chunk) => Ok(Some((first, chunk.last_offset()))),
        None => Err(Error::Unavailable(format!(
            "the broker did not deliver the last chunk of {stream:?} within {:?}",
            broker.timeout()
        ))),
    }
}

/// What a bounded read asks for.
#[derive(Debug, Clone, Copy)]
pub struct ReadRange {
    pub partition: u32,
    pub from: u64,
    pub max_records: usize,
    pub max_wait: Duration,
}

/// Reads up to `range.max_records` records of `stream` from `range.from`.
/// Returns at once when the log holds nothing at or after `from`, unless
/// `max_wait` asks to wait for the first new record.
pub async fn read_range(
    broker: &Broker,
    stream: &str,
    leader: &Node,
    range: ReadRange,
) -> Result<Vec<StoredRecord>> {
    let stats = broker.stream_stats(stream).await?;
    // Where the log ends now: having read the chunk at `end`, nothing more
    // is available without waiting.
    let end = stats.committed_chunk_id;
    if end.is_none() && range.max_wait.is_zero() {
        return Ok(Vec::new());
    }
    // Starting at most at the last chunk lets its delivery tell whether
    // `from` lies inside it or beyond the end.
    let start = match end {
        Some(end) => range.from.min(end),
        None => range.from,
    };
    let mut reader = ChunkReader::open(
        broker,
        stream,
        leader,
        OffsetSpecification::Offset(start),
        HashMap::new(),
    )
    .await?;
    let result = collect(&mut reader, broker.timeout(), end, range).await;
    reader.close();
    result
}

async fn collect(
    reader: &mut ChunkReader,
    chunk_timeout: Duration,
    end: Option<u64>,
    range: ReadRange,
) -> Result<Vec<StoredRecord>> {
    let mut records = Vec::new();
    let mut at_end = end.is_none();
    let wait_deadline = Instant::now() + range.max_wait;
    loop {
        // Before the end, a chunk is due promptly; after it, only new
        // records would come, and only a waiting read waits for them.
        let deadline = if at_end {
            if !records.is_empty() || range.max_wait.is_zero() {
                return Ok(records);
            }
            wait_deadline
        } else {
            Instant::now() + chunk_timeout
        };
        let Some(chunk) = reader.next_chunk(deadline).await? else {
            if at_end {
                return Ok(records);
            }
            return Err(Error::Unavailable(format!(
                "the broker sent no data for {chunk_timeout:?} although the partition holds more"
            )));
        };
        if end.is_some_and(|end| chunk.first_offset >= end) {
            at_end = true;
        }
        let timestamp_ms = chunk.timestamp_ms;
        for (i, message) in chunk.messages.iter().enumerate() {
            let offset = chunk.first_offset + i as u64;
            if offset < range.from {
                continue;
            }
            records.push(StoredRecord::from_message(
                message,
                range.partition,
                offset,
                timestamp_ms,
            ));
            if records.len() == range.max_records {
                return Ok(records);
            }
        }
    }
}
