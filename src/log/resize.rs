//! `ResizeStream`: growing a stream from N to M partitions online without
//! breaking any key's order.
//!
//! The steps, each safe to repeat (a resize cut short is finished by
//! repeating it, on any instance) and each kept on the broker:
//!
//! 1. **Fence**: the stream's routing state (see
//!    [`crate::broker::Routing`]) becomes "fenced from N to M" and is read
//!    back. Every instance that routed over N did so under a lease it asked
//!    for before the fence was stored; all those leases end (three quarters
//!    of L after asking) no later than three quarters of L after the fence,
//!    and every instance that asks since is told to route nothing
//!    ([`super::lease`]).
//! 2. The partitions N..M are created with partition 0's settings and bound
//!    to the super stream in places N..M: the broker's partition list (and
//!    so native clients' routing) has M partitions.
//! 3. The resize waits until the routing lease and a quarter more passed
//!    since the fence was read back.
//! 4. **Markers**: an epoch marker is appended to each old partition and
//!    its offset recorded on the broker. Every record routed over N was
//!    stored before the wait ended, so it precedes its partition's marker.
//! 5. The growth (N, M, when) is recorded, and the routing state becomes
//!    "over M": records routed over M are appended only from now on, after
//!    every marker.
//!
//! The routing state only moves forward (over N, fenced from N to M, over
//! M): concurrent resizes to the same count write the same states, and one
//! to another count finds the fence and answers RESIZE_IN_PROGRESS.
//!
//! So no record routed over N is stored after one routed over M, which is
//! what consumer groups build on ([`super::epochs`]). The argument assumes
//! that instances' clocks run at the same rate within a few percent over a
//! lease, that a record routed under a lease reaches its partition's
//! leader within a quarter of the lease (or fails, and a retry routes it
//! again), and that every instance has the same `broker.routing_lease_ms`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::epochs::History;
use super::lease::RoutingLeases;
use super::read::{self, ReadRange};
use super::warm_readers::WarmReaders;
use crate::broker::bounds::partition_bounds;
use crate::broker::producer::PartitionProducer;
use crate::broker::{Broker, Partition, Routing, SuperStream};
use crate::error::{Error, Reason, Result};
use crate::record::{EpochChange, NewRecord};
use crate::validate;

/// How often a resize looks whether the broker lists the new partitions.
const LIST_POLL: Duration = Duration::from_millis(100);

/// What a resize needs of the log.
pub struct Resize<'a> {
    pub broker: &'a Broker,
    pub warm_readers: &'a WarmReaders,
    pub leases: &'a RoutingLeases,
}

impl Resize<'_> {
    /// Grows stream `name` to `to` partitions (see the module's steps);
    /// returns once records are routed over them.
    pub async fn run(&self, name: &str, to: u32) -> Result<()> {
        validate::stream_name(name)?;
        validate::partition_count(to)?;
        let stream = self.broker.super_stream_now(name).await?;
        let from = match self.broker.routing(&stream).await? {
            None => {
                let listed = stream.partition_count();
                not_growing(name, listed, to)?;
                listed
            }
            Some(Routing::Over(count)) => {
                if count == to && self.finished(&stream, to).await? {
                    return Ok(());
                }
                not_growing(name, count, to)?;
                count
            }
            Some(Routing::Fenced { from, to: running }) if running == to => from,
            Some(Routing::Fenced { from, to: running }) => {
                return Err(in_progress(name, from, running));
            }
        };
        let change = EpochChange { from, to };
        tracing::info!(stream = name, from, to, "resizing");
        let fenced = Routing::Fenced { from, to };
        self.broker.set_routing(&stream, fenced).await?;
        let fenced_at = tokio::time::Instant::now();
        self.broker.add_partitions(&stream, to).await?;
        let grown = self.await_partitions(name, to).await?;
        tokio::time::sleep_until(fenced_at + self.leases.lease() * 5 / 4).await;
        match self.broker.routing(&grown).await? {
            Some(routing) if routing == fenced => {}
            // Finished meanwhile by the same resize on another instance.
            Some(Routing::Over(count)) if count == to && self.finished(&grown, to).await? => {
                return Ok(());
            }
            Some(Routing::Fenced { from, to: running }) => {
                return Err(in_progress(name, from, running))
            }
            other => {
                return Err(Error::new(
                    Reason::ResizeInProgress,
                    format!(
                        "the routing state of stream {name:?} changed to {other:?} while this \
                         resize to {to} partitions fenced it; describe the stream and repeat \
                         the resize"
                    ),
                ))
            }
        }
        for partition in grown.partitions.iter().take(from as usize) {
            self.mark(partition, change).await?;
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Once: a resize repeated keeps the first one's time.
        if !self.finished(&grown, to).await? {
            self.broker.record_epoch(&grown, from, to, at_ms).await?;
        }
        self.broker.set_routing(&grown, Routing::Over(to)).await?;
        self.leases.forget(name);
        crate::telemetry::stream(name).resized();
        tracing::info!(stream = name, from, to, "resized");
        Ok(())
    }

    /// Whether the stream's growth to `to` partitions was recorded.
    async fn finished(&self, stream: &SuperStream, to: u32) -> Result<bool> {
        let history = History::load(self.broker, stream).await?;
        Ok(history.growth_to(to).is_some())
    }

    /// The stream once the broker lists `to` partitions and each answers.
    async fn await_partitions(&self, name: &str, to: u32) -> Result<Arc<SuperStream>> {
        let deadline = self.broker.connector().deadline();
        loop {
            let stream = self.broker.super_stream_now(name).await?;
            if stream.partition_count() >= to {
                let mut answering = true;
                for partition in &stream.partitions {
                    answering &= self.broker.stream_stats(&partition.stream).await.is_ok();
                }
                if answering {
                    return Ok(stream);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    Reason::BrokerUnavailable,
                    format!(
                        "the broker did not list {to} running partitions of stream {name:?} within \
                         {:?}; repeat the resize",
                        self.broker.connector().timeout()
                    ),
                ));
            }
            tokio::time::sleep(LIST_POLL).await;
        }
    }

    /// Appends `change`'s epoch marker to `partition` and records its
    /// offset, unless that was done before.
    async fn mark(&self, partition: &Partition, change: EpochChange) -> Result<()> {
        if self
            .broker
            .marker(&partition.stream, change.to)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let after = partition_bounds(self.broker, partition)
            .await?
            .map_or(0, |b| b.last + 1);
        let leader = self.broker.leader(partition).await?;
        let producer =
            PartitionProducer::open(self.broker, &partition.stream, &leader, None).await?;
        let outcome = producer
            .submit(vec![NewRecord::epoch_marker(change)])
            .await
            .outcome()
            .await;
        producer.close().await;
        for result in outcome {
            result?;
        }
        let offset = self.find_marker(partition, change, after).await?;
        self.broker
            .record_marker(&partition.stream, change.to, offset)
            .await
    }

    /// The offset of the first marker of `change` at or after `from`.
    async fn find_marker(
        &self,
        partition: &Partition,
        change: EpochChange,
        mut from: u64,
    ) -> Result<u64> {
        let deadline = self.broker.connector().deadline();
        loop {
            let range = ReadRange {
                from,
                max_records: 1000,
                max_bytes: usize::MAX,
                max_wait: Duration::from_millis(100),
            };
            let read = read::read(self.broker, self.warm_readers, partition, range).await?;
            if let Some(marker) = read.markers.iter().find(|m| m.change == change) {
                return Ok(marker.offset);
            }
            from = read.next_offset;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    Reason::BrokerUnavailable,
                    format!(
                        "the epoch marker appended to {:?} could not be read back within {:?}; \
                         repeat the resize",
                        partition.stream,
                        self.broker.connector().timeout()
                    ),
                ));
            }
        }
    }
}

/// RESIZE_IN_PROGRESS: the stream is fenced for another resize.
fn in_progress(name: &str, from: u32, to: u32) -> Error {
    Error::new(
        Reason::ResizeInProgress,
        format!(
            "stream {name:?} is being resized from {from} to {to} partitions; repeat that resize \
             to finish it before another"
        ),
    )
}

/// RESIZE_NOT_GROWING unless `to` is more than the stream's `count`.
fn not_growing(name: &str, count: u32, to: u32) -> Result<()> {
    if to > count {
        return Ok(());
    }
    Err(Error::field(
        Reason::ResizeNotGrowing,
        "partitions",
        format!(
            "stream {name:?} has {count} partitions; a resize must add partitions (streams do not \
             shrink: the keys of a removed partition would lose their order)"
        ),
    ))
}
