//! The partitioned log: partlog's core operations, free of any transport.
//!
//! [`PartitionedLog`] validates requests, routes records to partitions and
//! drives the broker adapter. It keeps, per stream that this process has
//! published to, the partition list in routing order, the round-robin
//! cursor for unkeyed records and one [`PartitionProducer`] per partition.
//! That cache is dropped for a stream when it is deleted through this
//! process or when the broker reports it gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Mutex;

use crate::broker::producer::PartitionProducer;
use crate::broker::reader::{read_range, ReadRange};
use crate::broker::{Broker, Node, StreamSettings};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::record::{NewRecord, StoredRecord};
use crate::routing::{partition_for_key, RoundRobin};
use crate::validate;

/// A stream's partitions in routing order, with where each lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    pub stream: String,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub index: u32,
    pub stream: String,
    pub leader: Node,
    pub replicas: Vec<Node>,
}

/// Where one published record went, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub result: Result<()>,
}

/// A bounded read of one partition.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    /// 0 asks for the default.
    pub max_records: u32,
    pub max_wait: Duration,
}

/// Default number of records a Read returns when the request names none.
pub const DEFAULT_READ_RECORDS: u32 = 100;

pub struct PartitionedLog {
    broker: Broker,
    limits: Limits,
    writers: Mutex<HashMap<String, Arc<StreamWriter>>>,
}

/// Publishing state of one stream.
struct StreamWriter {
    partitions: Vec<String>,
    round_robin: RoundRobin,
    producers: Vec<Mutex<Option<Arc<PartitionProducer>>>>,
}

impl PartitionedLog {
    pub fn new(broker: Broker, limits: Limits) -> Self {
        PartitionedLog {
            broker,
            limits,
            writers: Mutex::new(HashMap::new()),
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub async fn create_stream(
        &self,
        stream: &str,
        partitions: u32,
        settings: &StreamSettings,
    ) -> Result<StreamDescription> {
        validate::stream_name(stream)?;
        validate::partition_count(partitions)?;
        if settings.replicas == Some(0) {
            return Err(Error::InvalidArgument(
                "replicas must be at least 1 (the leader) when set".into(),
            ));
        }
        if settings.max_age.is_some_and(|age| age.as_secs() == 0) {
            return Err(Error::InvalidArgument(
                "retention.max_age must be at least one second when set".into(),
            ));
        }
        self.broker
            .create_super_stream(stream, partitions, settings)
            .await?;
        self.describe_stream(stream).await
    }

    pub async fn delete_stream(&self, stream: &str) -> Result<()> {
        validate::stream_name(stream)?;
        let writer = self.writers.lock().await.remove(stream);
        let result = self.broker.delete_super_stream(stream).await;
        if let Some(writer) = writer {
            writer.close().await;
        }
        result
    }

    pub async fn describe_stream(&self, stream: &str) -> Result<StreamDescription> {
        validate::stream_name(stream)?;
        let partitions = self.broker.partitions(stream).await?;
        let placements = self.broker.placements(&partitions).await?;
        Ok(StreamDescription {
            stream: stream.to_owned(),
            partitions: partitions
                .into_iter()
                .zip(placements)
                .enumerate()
                .map(|(index, (stream, placement))| PartitionDescription {
                    index: index as u32,
                    stream,
                    leader: placement.leader,
                    replicas: placement.replicas,
                })
                .collect(),
        })
    }

    /// Appends `records`, answering for each in request order once the
    /// broker confirmed or refused it. An invalid batch writes nothing.
    pub async fn publish(&self, stream: &str, records: Vec<NewRecord>) -> Result<Vec<Appended>> {
        validate::stream_name(stream)?;
        validate::publish_batch(&records, &self.limits)?;
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
            routed.push(partition);
            let group = &mut groups[partition as usize];
            group.0.push(index);
            group.1.push(record);
        }

        let appends = groups
            .into_iter()
            .enumerate()
            .filter(|(_, (indexes, _))| !indexes.is_empty())
            .map(|(partition, (indexes, records))| {
                let writer = writer.clone();
                async move {
                    let outcome = match writer.producer(self, partition).await {
                        Ok(producer) => producer.append(records).await,
                        Err(e) => vec![Err(e); indexes.len()],
                    };
                    (indexes, outcome)
                }
            });
        let mut results: Vec<Option<Result<()>>> = vec![None; routed.len()];
        let mut stream_gone = false;
        for (indexes, outcome) in join_all(appends).await {
            for (index, result) in indexes.into_iter().zip(outcome) {
                stream_gone |= matches!(result, Err(Error::NotFound(_)));
                results[index] = Some(result);
            }
        }
        if stream_gone {
            self.forget(stream, &writer).await;
        }
        Ok(routed
            .into_iter()
            .zip(results)
            .map(|(partition, result)| Appended {
                partition,
                result: result.expect("every record belongs to one group"),
            })
            .collect())
    }

    pub async fn read(&self, request: ReadRequest) -> Result<Vec<StoredRecord>> {
        validate::stream_name(&request.stream)?;
        let max_records = match request.max_records {
            0 => DEFAULT_READ_RECORDS.min(self.limits.max_read_records),
            n if n > self.limits.max_read_records => {
                return Err(Error::InvalidArgument(format!(
                    "max_records is {n}; at most {} are allowed (limits.max_read_records)",
                    self.limits.max_read_records
                )))
            }
            n => n,
        };
        let max_wait_limit = Duration::from_millis(self.limits.max_read_wait_ms);
        if request.max_wait > max_wait_limit {
            return Err(Error::InvalidArgument(format!(
                "max_wait is {:?}; at most {max_wait_limit:?} is allowed \
                 (limits.max_read_wait_ms)",
                request.max_wait
            )));
        }
        let partitions = self.broker.partitions(&request.stream).await?;
        let Some(partition_stream) = partitions.get(request.partition as usize) else {
            return Err(Error::InvalidArgument(format!(
                "partition {} is out of range: stream {:?} has partitions 0..={}",
                request.partition,
                request.stream,
                partitions.len() - 1
            )));
        };
        let placement = self
            .broker
            .placements(std::slice::from_ref(partition_stream))
            .await?
            .remove(0);
        read_range(
            &self.broker,
            partition_stream,
            &placement.leader,
            ReadRange {
                partition: request.partition,
                from: request.offset,
                max_records: max_records as usize,
                max_wait: request.max_wait,
            },
        )
        .await
    }

    /// Closes every producer after its queued records were confirmed, then
    /// the broker connections.
    pub async fn close(&self) {
        let writers: Vec<_> = self.writers.lock().await.drain().map(|(_, w)| w).collect();
        join_all(writers.iter().map(|w| w.close())).await;
        self.broker.close().await;
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
    /// The partition's producer, opened (again) when missing or broken.
    async fn producer(
        &self,
        log: &PartitionedLog,
        partition: usize,
    ) -> Result<Arc<PartitionProducer>> {
        let mut slot = self.producers[partition].lock().await;
        if let Some(producer) = slot.as_ref().filter(|p| !p.is_closed()) {
            return Ok(producer.clone());
        }
        let stream = &self.partitions[partition];
        let placement = log
            .broker
            .placements(std::slice::from_ref(stream))
            .await?
            .remove(0);
        let producer =
            Arc::new(PartitionProducer::open(&log.broker, stream, &placement.leader).await?);
        *slot = Some(producer.clone());
        Ok(producer)
    }

    async fn close(&self) {
        join_all(self.producers.iter().map(|slot| async move {
            let producer = slot.lock().await.take();
            if let Some(producer) = producer {
                producer.close().await;
            }
        }))
        .await;
    }
}
