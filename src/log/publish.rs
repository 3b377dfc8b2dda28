//! The write path: routing records to partitions and queuing them on the
//! partitions' producers, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Mutex;

use super::PartitionedLog;
use crate::broker::producer::{PartitionProducer, Submitted};
use crate::broker::Stored;
use crate::error::{Error, Result};
use crate::record::NewRecord;
use crate::routing::{partition_for_key, RoundRobin};
use crate::validate;

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

/// A batch queued on its partitions' producers; see
/// [`PartitionedLog::submit`].
pub struct SubmittedBatch {
    stream: String,
    writer: Arc<StreamWriter>,
    /// Partition and sequence of each record, in request order.
    routed: Vec<(u32, Option<u64>)>,
    /// Request indexes of each partition's records and their submission.
    parts: Vec<(Vec<usize>, Result<Submitted>)>,
}

impl SubmittedBatch {
    /// Each record's outcome, in request order, once the broker answered.
    pub async fn outcome(self, log: &PartitionedLog) -> Vec<Appended> {
        let answers = self.parts.into_iter().map(|(indexes, part)| async move {
            let outcome = match part {
                Ok(submitted) => submitted.outcome().await,
                Err(e) => vec![Err(e); indexes.len()],
            };
            (indexes, outcome)
        });
        let mut results: Vec<Option<Result<Stored>>> = vec![None; self.routed.len()];
        let mut stream_gone = false;
        for (indexes, outcome) in join_all(answers).await {
            for (index, result) in indexes.into_iter().zip(outcome) {
                stream_gone |= matches!(result, Err(Error::NotFound(_)));
                results[index] = Some(result);
            }
        }
        if stream_gone {
            log.forget(&self.stream, &self.writer).await;
        }
        self.routed
            .into_iter()
            .zip(results)
            .map(|((partition, sequence), result)| Appended {
                partition,
                sequence,
                result: result.expect("every record belongs to one partition"),
            })
            .collect()
    }
}

/// Publishing state of one stream.
pub(super) struct StreamWriter {
    partitions: Vec<String>,
    round_robin: RoundRobin,
    producers: Vec<Mutex<Option<Arc<PartitionProducer>>>>,
    /// Deduplicating producers by (client producer id, partition).
    named: Mutex<HashMap<(String, usize), Arc<PartitionProducer>>>,
}

impl PartitionedLog {
    /// Appends `records`, answering for each in request order once the
    /// broker confirmed or refused it. An invalid batch writes nothing.
    /// With a `producer_id`, records go through that producer's
    /// deduplicating publishers and a sequence stored before is reported as
    /// a duplicate instead of being written again.
    pub async fn publish(
        &self,
        stream: &str,
        producer_id: Option<&str>,
        records: Vec<NewRecord>,
    ) -> Result<Vec<Appended>> {
        let submitted = self.submit(stream, producer_id, records).await?;
        Ok(submitted.outcome(self).await)
    }

    /// The first half of [`PartitionedLog::publish`]: validates, routes and
    /// queues the records on their partitions' producers. Batches submitted
    /// one after the other are written in that order, whenever their
    /// outcomes are awaited.
    pub async fn submit(
        &self,
        stream: &str,
        producer_id: Option<&str>,
        records: Vec<NewRecord>,
    ) -> Result<SubmittedBatch> {
        validate::stream_name(stream)?;
        validate::publish_batch(&records, &self.limits)?;
        validate::producer_sequences(producer_id, &records)?;
        let writer = self.writer(stream).await?;
        let count = writer.partitions.len() as u32;

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
            routed.push((partition, record.sequence));
            let group = &mut groups[partition as usize];
            group.0.push(index);
            group.1.push(record);
        }

        let mut parts = Vec::new();
        for (partition, (indexes, records)) in groups.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let part = match writer.producer(self, partition, producer_id).await {
                Ok(producer) => Ok(producer.submit(records).await),
                Err(e) => Err(e),
            };
            parts.push((indexes, part));
        }
        Ok(SubmittedBatch {
            stream: stream.to_owned(),
            writer,
            routed,
            parts,
        })
    }

    async fn writer(&self, stream: &str) -> Result<Arc<StreamWriter>> {
        if let Some(writer) = self.writers.lock().await.get(stream) {
            return Ok(writer.clone());
        }
        // Looked up outside the lock: a slow broker must not stall
        // publishers of other streams.
        let partitions = self.broker.partitions(stream).await?;
        let mut writers = self.writers.lock().await;
        let writer = writers.entry(stream.to_owned()).or_insert_with(|| {
            Arc::new(StreamWriter {
                producers: partitions.iter().map(|_| Mutex::new(None)).collect(),
                partitions,
                round_robin: RoundRobin::default(),
                named: Mutex::new(HashMap::new()),
            })
        });
        Ok(writer.clone())
    }

    /// Drops the cached writer of a stream the broker reports gone, unless
    /// it was already replaced.
    async fn forget(&self, stream: &str, writer: &Arc<StreamWriter>) {
        let mut writers = self.writers.lock().await;
        if writers.get(stream).is_some_and(|w| Arc::ptr_eq(w, writer)) {
            writers.remove(stream);
        }
    }
}

impl StreamWriter {
    /// The partition's producer (the named one of `producer_id`), opened
    /// (again) when missing or broken.
    async fn producer(
        &self,
        log: &PartitionedLog,
        partition: usize,
        producer_id: Option<&str>,
    ) -> Result<Arc<PartitionProducer>> {
        let Some(producer_id) = producer_id else {
            let mut slot = self.producers[partition].lock().await;
            if let Some(producer) = slot.as_ref().filter(|p| !p.is_closed()) {
                return Ok(producer.clone());
            }
            let producer = Arc::new(self.open(log, partition, None).await?);
            if let Some(broken) = slot.replace(producer.clone()) {
                tokio::spawn(async move { broken.close().await });
            }
            return Ok(producer);
        };
        // Held while opening: a second producer under the same name would
        // take over the broker's publisher and race this one.
        let mut named = self.named.lock().await;
        let key = (producer_id.to_owned(), partition);
        if let Some(producer) = named.get(&key).filter(|p| !p.is_closed()) {
            return Ok(producer.clone());
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
        let producer = Arc::new(self.open(log, partition, Some(producer_id)).await?);
        named.insert(key, producer.clone());
        Ok(producer)
    }

    async fn open(
        &self,
        log: &PartitionedLog,
        partition: usize,
        name: Option<&str>,
    ) -> Result<PartitionProducer> {
        let stream = &self.partitions[partition];
        let placement = log
            .broker
            .placements(std::slice::from_ref(stream))
            .await?
            .remove(0);
        PartitionProducer::open(&log.broker, stream, &placement.leader, name).await
    }

    pub(super) async fn close(&self) {
        let mut producers: Vec<Arc<PartitionProducer>> =
            self.named.lock().await.drain().map(|(_, p)| p).collect();
        for slot in &self.producers {
            producers.extend(slot.lock().await.take());
        }
        join_all(producers.iter().map(|p| p.close())).await;
    }
}
