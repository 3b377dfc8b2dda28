//! The partitioned log: partlog's core operations, free of any transport.
//!
//! [`PartitionedLog`] validates requests, routes records to partitions and
//! drives the broker adapter. It keeps, per stream that this process has
//! published to, the partition list in routing order, the round-robin
//! cursor for unkeyed records and one
//! [`PartitionProducer`](crate::broker::producer::PartitionProducer) per partition.
//! That cache is dropped for a stream when it is deleted through this
//! process or when the broker reports it gone.
//!
//! Consumer groups: committed offsets live in the [`OffsetStore`] and are
//! mirrored to the broker's offset tracking under the group's name, so any
//! instance resumes a group from the larger of its own and the broker's
//! value. Which member reads a partition is the broker's single active
//! consumer decision ([`crate::subscription`]); the log only remembers which
//! of its own subscribers are active, for `GetOffsets`.
//!
//! Layout: this module holds the log itself and its stream operations;
//! `publish` the write path (routing, per-partition producers, submitted
//! batches); `groups` consumer groups (subscribe, commit, offsets).

mod groups;
mod publish;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Mutex;

use crate::broker::reader::{read_range, ReadRange};
use crate::broker::{Broker, Node, StreamSettings};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::offsets::OffsetStore;
use crate::record::StoredRecord;
use crate::subscription::Fallback;
use crate::validate;

pub use groups::{CommittedOffset, OffsetSource, PartitionOffsets};
use publish::StreamWriter;
pub use publish::{Appended, SubmittedBatch};

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

/// A bounded read of one partition.
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

/// Default number of records a Read returns when the request names none.
pub const DEFAULT_READ_RECORDS: u32 = 100;

/// How often CreateStream looks whether the new partitions run.
const MEMBER_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Identity of the process in member names, e.g. `127.0.0.1:50051`.
pub type InstanceName = String;

pub struct PartitionedLog {
    broker: Broker,
    limits: Limits,
    store: OffsetStore,
    fallback: Fallback,
    instance: InstanceName,
    writers: Mutex<HashMap<String, Arc<StreamWriter>>>,
    /// (stream, group, partition) → member active on this instance.
    active: std::sync::Mutex<HashMap<(String, String, u32), String>>,
    next_member: AtomicU64,
    /// Set once by [`PartitionedLog::begin_shutdown`]; ends subscriptions.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Per partition stream, the highest offset known to hold a record
    /// (seen by a subscription, a Read or a bounds query): commits up to it
    /// need no broker round trip to prove their record exists.
    known_last: std::sync::Mutex<HashMap<String, u64>>,
}

impl PartitionedLog {
    pub fn new(
        broker: Broker,
        limits: Limits,
        store: OffsetStore,
        fallback: Fallback,
        instance: InstanceName,
    ) -> Self {
        PartitionedLog {
            broker,
            limits,
            store,
            fallback,
            instance,
            writers: Mutex::new(HashMap::new()),
            active: std::sync::Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
            shutdown: tokio::sync::watch::Sender::new(false),
            known_last: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// `offset` of `partition_stream` holds a record.
    pub(crate) fn note_record(&self, partition_stream: &str, offset: u64) {
        let mut known = self.known_last.lock().unwrap_or_else(|e| e.into_inner());
        let last = known.entry(partition_stream.to_owned()).or_insert(offset);
        *last = (*last).max(offset);
    }

    /// The highest offset of `partition_stream` known to hold a record.
    pub(crate) fn known_last_record(&self, partition_stream: &str) -> Option<u64> {
        let known = self.known_last.lock().unwrap_or_else(|e| e.into_inner());
        known.get(partition_stream).copied()
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn fallback(&self) -> Fallback {
        self.fallback
    }

    pub async fn create_stream(
        &self,
        stream: &str,
        partitions: u32,
        settings: &StreamSettings,
    ) -> Result<StreamDescription> {
        validate::partition_count(partitions)?;
        validate::created_stream_name(stream, partitions, &self.broker.config().vhost)?;
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
        self.await_members(stream, settings.replicas).await
    }

    /// The new stream's description once every partition has a leader and
    /// the `replicas` asked for (the broker starts them asynchronously after
    /// answering the create), or as it is when the request timeout is up.
    ///
    /// A partition without a leader by then is taken as one that cannot
    /// start (its writer failed, e.g. on the broker's file system): the
    /// stream is deleted again, and the answer is FAILED_PRECONDITION, not
    /// a code that invites retrying what cannot work.
    async fn await_members(
        &self,
        stream: &str,
        replicas: Option<u32>,
    ) -> Result<StreamDescription> {
        let followers = replicas.map_or(0, |n| n as usize - 1);
        let deadline = tokio::time::Instant::now() + self.broker.timeout();
        loop {
            let described = match self.describe_stream(stream).await {
                Ok(d) => self.writers_answer(&d).await.map(|()| d),
                failed => failed,
            };
            let running = matches!(&described, Ok(d)
                if d.partitions.iter().all(|p| p.replicas.len() >= followers));
            if running || tokio::time::Instant::now() >= deadline {
                return match described {
                    Err(Error::Unavailable(why)) => Err(self.abandon_create(stream, &why).await),
                    other => other,
                };
            }
            tokio::time::sleep(MEMBER_POLL_INTERVAL).await;
        }
    }

    /// Every partition's writer answers: the metadata names a leader as
    /// soon as the broker picked one, also while its writer fails to start.
    async fn writers_answer(&self, description: &StreamDescription) -> Result<()> {
        for partition in &description.partitions {
            self.broker.stream_stats(&partition.stream).await?;
        }
        Ok(())
    }

    /// Deletes a stream whose partitions did not start and says why, and
    /// what is left if the deletion failed too.
    async fn abandon_create(&self, stream: &str, why: &str) -> Error {
        let timeout = self.broker.timeout();
        let cause = format!(
            "the broker created stream {stream:?} but could not start its partitions within \
             {timeout:?} ({why})"
        );
        tracing::warn!(stream, %why, "partitions of a new stream did not start; deleting it");
        match self.broker.delete_super_stream(stream).await {
            Ok(()) | Err(Error::NotFound(_)) => Error::FailedPrecondition(format!(
                "{cause}; partlog deleted it again. The broker's log says why (e.g. its file \
                 system refused the partitions' data directories); retry once that is fixed"
            )),
            Err(e) => Error::FailedPrecondition(format!(
                "{cause}, and deleting it failed ({e}): the super stream and its partition \
                 streams \"{stream}-0\".. are left on the broker; delete them with DeleteStream \
                 or `rabbitmq-streams delete_super_stream {stream}`"
            )),
        }
    }

    pub async fn delete_stream(&self, stream: &str) -> Result<()> {
        validate::stream_name(stream)?;
        let writer = self.writers.lock().await.remove(stream);
        let result = self.broker.delete_super_stream(stream).await;
        // A stream created again under the name starts empty. (Other
        // streams named like its partitions are only looked up again.)
        let partition_prefix = format!("{stream}-");
        self.known_last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|partition_stream, _| !partition_stream.starts_with(&partition_prefix));
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
        let max_bytes = match request.max_bytes {
            0 => self.limits.max_read_bytes,
            n if n > self.limits.max_read_bytes => {
                return Err(Error::InvalidArgument(format!(
                    "max_bytes is {n}; at most {} are allowed (limits.max_read_bytes)",
                    self.limits.max_read_bytes
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
        let records = read_range(
            &self.broker,
            partition_stream,
            &placement.leader,
            ReadRange {
                partition: request.partition,
                from: request.offset,
                max_records: max_records as usize,
                max_bytes: max_bytes as usize,
                max_wait: request.max_wait,
            },
        )
        .await?;
        if let Some(last) = records.last() {
            self.note_record(partition_stream, last.offset);
        }
        Ok(records)
    }

    /// Ends every subscription (their calls complete normally) so that a
    /// graceful shutdown does not wait for subscribers to leave.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown began.
    pub(crate) async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.subscribe();
        // The sender lives as long as self, so waiting cannot fail.
        let _ = shutdown.wait_for(|down| *down).await;
    }

    /// Closes every producer after its queued records were confirmed, then
    /// flushes the offset store and closes the broker connections.
    pub async fn close(&self) {
        let writers: Vec<_> = self.writers.lock().await.drain().map(|(_, w)| w).collect();
        join_all(writers.iter().map(|w| w.close())).await;
        if let Err(e) = self.store.flush().await {
            tracing::error!("flushing the offset store failed: {e}");
        }
        self.broker.close().await;
    }
}
