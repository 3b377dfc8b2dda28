//! The write path: routing records to partitions and queuing them on the
//! partitions' producers, in order.
//!
//! [`Writers`] keeps, per stream published to, a [`StreamWriter`]: the
//! stream's partitions (the broker's cached [`SuperStream`]), the
//! round-robin cursor for unkeyed records and the partitions' producers.
//! Records are routed over the partition count of the stream's routing
//! lease ([`RoutingLeases`]), which a resize fences. A writer lives while
//! its partition list is the broker's: it is replaced when the list changed
//! (the producers of partitions it keeps carry over, so that a key's
//! records stay on one producer and in order), and dropped when the stream
//! was deleted through this process or the broker reports it gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Mutex;

use super::lease::RoutingLeases;
use crate::broker::producer::{PartitionProducer, Submitted};
use crate::broker::{Broker, Stored, SuperStream};
use crate::error::{Kind, Result};
use crate::record::NewRecord;
use crate::routing::{partition_for_key, RoundRobin};
use crate::sync::lock;
use crate::telemetry::{self, Published, StreamMetrics};

/// Where one published record went, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub sequence: Option<u64>,
    pub result: Result<Stored>,
}

/// A named (producer id) producer unused this long is closed when the next
/// one opens.
const NAMED_PRODUCER_IDLE: Duration = Duration::from_secs(300);

/// A producer id as a client names it, and whom it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerId<'a> {
    pub id: &'a str,
    /// The authenticated principal that publishes with it; `None` when
    /// authentication is off (every client shares one namespace).
    pub owner: Option<&'a str>,
}

/// The broker's name of a producer id's deduplicating producers. With an
/// owner, the id is its owner's: two principals using the same id have
/// producers of their own, so that one cannot make the other's records
/// duplicates. The owner is a tag of fixed length (16 hex digits of the
/// SHA-256 of its name) before the id: names of any length and content
/// fit the broker's 255-byte limit with a 200-byte id, and no two owners
/// share a prefix. The same on every instance, so retries across instances
/// stay exactly once.
pub fn producer_name(producer: ProducerId<'_>) -> String {
    use sha2::{Digest, Sha256};
    match producer.owner {
        None => producer.id.to_owned(),
        Some(owner) => {
            let digest = Sha256::digest(owner.as_bytes());
            let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("p{tag}:{}", producer.id)
        }
    }
}

/// The writers of every stream this process published to.
pub struct Writers {
    leases: Arc<RoutingLeases>,
    by_stream: std::sync::Mutex<HashMap<String, Arc<StreamWriter>>>,
}

/// A batch queued on its partitions' producers; see [`Writers::submit`].
pub struct SubmittedBatch {
    writer: Arc<StreamWriter>,
    /// Partition, sequence and size of each record, in request order.
    routed: Vec<Routed>,
    /// Request indexes of each partition's records and their submission.
    parts: Vec<(Vec<usize>, Result<Handed>)>,
}

/// Records handed to a partition's producer, and when.
type Handed = (Instant, Submitted);

/// Where a record went: its partition, its sequence, and its bytes as the
/// published-bytes counter counts them.
struct Routed {
    partition: u32,
    sequence: Option<u64>,
    bytes: u64,
}

/// Publishing state of one stream.
pub struct StreamWriter {
    stream: Arc<SuperStream>,
    /// The stream's series, looked up once.
    metrics: Arc<StreamMetrics>,
    round_robin: RoundRobin,
    /// Per partition; tokio mutexes, held while the producer opens.
    producers: Vec<Mutex<Option<Arc<PartitionProducer>>>>,
    /// Deduplicating producers by (client producer id, partition). A tokio
    /// mutex: held while one opens, since a second producer under the same
    /// name would take over the broker's publisher and race the first.
    named: Mutex<HashMap<(String, usize), Arc<PartitionProducer>>>,
}

impl Writers {
    pub fn new(leases: Arc<RoutingLeases>) -> Writers {
        Writers {
            leases,
            by_stream: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Routes `records` (already validated) and queues them on their
    /// partitions' producers; `producer_id` is the broker's name of their
    /// deduplicating producer ([`producer_name`]). Batches submitted one after the other are
    /// written in that order, whenever their outcomes are awaited.
    pub async fn submit(
        &self,
        broker: &Broker,
        stream: &str,
        producer_id: Option<&str>,
        records: Vec<NewRecord>,
    ) -> Result<SubmittedBatch> {
        let route = self.leases.route(stream).await?;
        let count = route.count;
        let writer = self.writer(route.stream.clone());

        // Group by partition, keeping request order within each group.
        let mut groups: Vec<(Vec<usize>, Vec<NewRecord>)> =
            (0..count).map(|_| (Vec::new(), Vec::new())).collect();
        let mut routed = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let partition = if record.key.is_empty() {
                writer.round_robin.next(count)
            } else {
                partition_for_key(&record.key, count)
            };
            routed.push(Routed {
                partition,
                sequence: record.sequence,
                bytes: record.size(),
            });
            let group = &mut groups[partition as usize];
            group.0.push(index);
            group.1.push(record);
        }

        let mut parts = Vec::new();
        for (partition, (indexes, records)) in groups.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let producer = writer.producer(broker, partition, producer_id).await;
            let part = match producer.and_then(|p| route.check().map(|()| p)) {
                Ok(producer) => Ok((Instant::now(), producer.submit(records).await)),
                Err(e) => Err(e),
            };
            parts.push((indexes, part));
        }
        Ok(SubmittedBatch {
            writer,
            routed,
            parts,
        })
    }

    /// The stream's writer; a new one when `stream` (the broker's
    /// partition list) is not the one the cached writer has.
    fn writer(&self, stream: Arc<SuperStream>) -> Arc<StreamWriter> {
        let mut writers = lock(&self.by_stream);
        let previous = writers.get(&stream.name);
        if let Some(writer) = previous.filter(|w| Arc::ptr_eq(&w.stream, &stream)) {
            return writer.clone();
        }
        let writer = Arc::new(StreamWriter::new(stream, previous.map(|w| &**w)));
        if let Some(replaced) = writers.insert(writer.stream.name.clone(), writer.clone()) {
            tokio::spawn(async move { replaced.close().await });
        }
        writer
    }

    /// The routing leases the writers route under.
    pub fn leases(&self) -> &RoutingLeases {
        &self.leases
    }

    /// Closes the writer of a stream being deleted, after its queued
    /// records were answered.
    pub async fn remove(&self, stream: &str) {
        self.leases.forget(stream);
        let writer = lock(&self.by_stream).remove(stream);
        if let Some(writer) = writer {
            writer.close().await;
        }
    }

    /// Drops the writer of a stream the broker reports gone, unless it was
    /// already replaced.
    fn forget(&self, writer: &Arc<StreamWriter>) {
        let mut writers = lock(&self.by_stream);
        if writers
            .get(&writer.stream.name)
            .is_some_and(|w| Arc::ptr_eq(w, writer))
        {
            writers.remove(&writer.stream.name);
        }
    }

    /// Closes every producer after its queued records were answered.
    pub async fn close(&self) {
        let writers: Vec<_> = lock(&self.by_stream).drain().map(|(_, w)| w).collect();
        join_all(writers.iter().map(|w| w.close())).await;
    }
}

impl SubmittedBatch {
    /// Each record's outcome, in request order, once the broker answered.
    pub async fn outcome(self, writers: &Writers, broker: &Broker) -> Vec<Appended> {
        let metrics = &self.writer.metrics;
        let answers = self.parts.into_iter().map(|(indexes, part)| async move {
            let outcome = match part {
                Ok((handed, submitted)) => {
                    let outcome = submitted.outcome().await;
                    if outcome.iter().all(Result::is_ok) {
                        metrics.confirmed_after(handed.elapsed());
                    }
                    outcome
                }
                Err(e) => vec![Err(e); indexes.len()],
            };
            (indexes, outcome)
        });
        let mut results: Vec<Option<Result<Stored>>> = vec![None; self.routed.len()];
        let mut stream_gone = false;
        for (indexes, outcome) in join_all(answers).await {
            if let Some((index, Err(e))) = indexes.iter().zip(&outcome).find(|(_, r)| r.is_err()) {
                tracing::debug!(
                    stream = %self.writer.stream.name,
                    partition = self.routed[*index].partition,
                    error = %e,
                    "records not stored"
                );
            }
            for (index, result) in indexes.into_iter().zip(outcome) {
                stream_gone |= matches!(&result, Err(e) if e.kind() == Kind::NotFound);
                results[index] = Some(result);
            }
        }
        if stream_gone {
            broker.forget(&self.writer.stream);
            writers.forget(&self.writer);
        }
        let mut published = Published::default();
        let appended = self
            .routed
            .into_iter()
            .zip(results)
            .map(|(routed, result)| {
                let result = result.expect("every record belongs to one partition");
                match &result {
                    Ok(Stored::Written) => {
                        published.stored += 1;
                        published.stored_bytes += routed.bytes;
                    }
                    Ok(Stored::Duplicate) => published.duplicates += 1,
                    Err(_) => published.failed += 1,
                }
                Appended {
                    partition: routed.partition,
                    sequence: routed.sequence,
                    result,
                }
            })
            .collect();
        self.writer.metrics.published(&published);
        appended
    }
}

impl StreamWriter {
    /// The writer of `stream`, taking over `previous`'s producers of the
    /// partitions both have (the same partition streams, in the same
    /// places).
    fn new(stream: Arc<SuperStream>, previous: Option<&StreamWriter>) -> StreamWriter {
        let kept = |index: usize| {
            previous.filter(|p| {
                p.stream
                    .partitions
                    .get(index)
                    .is_some_and(|old| old.stream == stream.partitions[index].stream)
            })
        };
        let producers = (0..stream.partitions.len())
            .map(|index| {
                let producer = kept(index).and_then(|p| p.producers[index].try_lock().ok()?.take());
                Mutex::new(producer)
            })
            .collect();
        let named = previous
            .and_then(|p| p.named.try_lock().ok())
            .map(|mut named| {
                let keys: Vec<_> = named
                    .keys()
                    .filter(|(_, index)| kept(*index).is_some())
                    .cloned()
                    .collect();
                keys.into_iter()
                    .filter_map(|key| named.remove(&key).map(|p| (key, p)))
                    .collect()
            })
            .unwrap_or_default();
        StreamWriter {
            metrics: telemetry::stream(&stream.name),
            producers,
            stream,
            round_robin: RoundRobin::default(),
            named: Mutex::new(named),
        }
    }

    /// The partition's producer (the named one of `producer_id`), opened
    /// (again) when missing or broken.
    async fn producer(
        &self,
        broker: &Broker,
        partition: usize,
        producer_id: Option<&str>,
    ) -> Result<Arc<PartitionProducer>> {
        let Some(producer_id) = producer_id else {
            let mut slot = self.producers[partition].lock().await;
            if let Some(producer) = slot.as_ref().filter(|p| !p.is_closed()) {
                return Ok(producer.clone());
            }
            let producer = Arc::new(self.open(broker, partition, None).await?);
            if let Some(broken) = slot.replace(producer.clone()) {
                self.metrics.producer_recreated();
                tokio::spawn(async move { broken.close().await });
            }
            return Ok(producer);
        };
        let mut named = self.named.lock().await;
        let key = (producer_id.to_owned(), partition);
        if let Some(producer) = named.get(&key) {
            if !producer.is_closed() {
                return Ok(producer.clone());
            }
            self.metrics.producer_recreated();
        }
        // Each named producer holds a publisher on the broker (and a share
        // of a connection): before adding one, retire those idle for long
        // (a later call with their id opens a new one, which learns the
        // stored sequence from the broker).
        let idle: Vec<_> = named
            .iter()
            .filter(|(_, p)| p.is_closed() || p.idle_for() > NAMED_PRODUCER_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for retired in idle.into_iter().filter_map(|k| named.remove(&k)) {
            tokio::spawn(async move { retired.close().await });
        }
        let producer = Arc::new(self.open(broker, partition, Some(producer_id)).await?);
        named.insert(key, producer.clone());
        Ok(producer)
    }

    async fn open(
        &self,
        broker: &Broker,
        partition: usize,
        name: Option<&str>,
    ) -> Result<PartitionProducer> {
        let partition = &self.stream.partitions[partition];
        let leader = broker.leader(partition).await?;
        PartitionProducer::open(broker, &partition.stream, &leader, name).await
    }

    async fn close(&self) {
        let mut producers: Vec<Arc<PartitionProducer>> =
            self.named.lock().await.drain().map(|(_, p)| p).collect();
        for slot in &self.producers {
            producers.extend(slot.lock().await.take());
        }
        join_all(producers.iter().map(|p| p.close())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_producer_id_is_its_owners() {
        let id = |owner| {
            producer_name(ProducerId {
                id: "checkout-7",
                owner,
            })
        };
        assert_eq!(id(None), "checkout-7");
        let alice = id(Some("alice"));
        assert_eq!(alice.len(), "p0123456789abcdef:checkout-7".len());
        assert!(alice.ends_with(":checkout-7"), "{alice}");
        assert_ne!(alice, id(Some("bob")));
        assert_eq!(alice, id(Some("alice")), "the same on every instance");
        // Any owner name fits the broker's 255 bytes with the longest id.
        let longest = "x".repeat(crate::validate::PRODUCER_ID_MAX_BYTES);
        let name = producer_name(ProducerId {
            id: &longest,
            owner: Some(&"o".repeat(10_000)),
        });
        assert!(name.len() <= 255, "{}", name.len());
    }
}
