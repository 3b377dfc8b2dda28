//! A consumer group's committed offsets: this instance's store, mirrored to
//! the broker's offset tracking under the group's name so that any
//! instance (and native consumers of the group) resume from them.
//!
//! Commits are group-committed: a background committer takes every commit
//! waiting, keeps the highest offset per (stream, group, partition), makes
//! them durable with one store flush, then stores each on the broker and
//! reads it back there (so that a member the broker activates next, on any
//! instance, sees it), and only then answers each commit. Many concurrent
//! commits cost one flush and one broker round trip per partition.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, Partition, SuperStream};
use crate::error::{Error, Reason, Result};
use crate::offsets::{Committed, Local, OffsetStore};

/// A group's committed offset in one partition and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: Option<u64>,
    pub source: Option<OffsetSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSource {
    /// This instance's offset store.
    Local,
    /// The broker's offset tracking (committed through another instance).
    Broker,
}

/// Commits taken at once by the committer.
const MAX_BATCH: usize = 4096;
/// Partitions whose broker offsets are read or written at once.
const BROKER_CALLS_AT_ONCE: usize = 16;

/// Reads and writes committed offsets; one per process.
pub struct CommittedOffsets {
    store: Arc<OffsetStore>,
    broker: Arc<Broker>,
    committer: mpsc::UnboundedSender<Order>,
}

/// One commit waiting for the committer.
struct Order {
    stream: Arc<SuperStream>,
    group: String,
    partition: u32,
    offset: u64,
    answer: oneshot::Sender<Result<Committed>>,
}

/// What the committer writes for one (stream, group, partition).
struct Target {
    stream: Arc<SuperStream>,
    group: String,
    partition: u32,
    /// The highest offset asked for.
    requested: u64,
    /// The offset committed before, here or on the broker.
    before: Option<u64>,
    /// The offset committed once done, or why not.
    result: Result<u64>,
}

impl CommittedOffsets {
    /// Starts the committer; it ends when this is dropped.
    pub fn new(store: OffsetStore, broker: Arc<Broker>) -> CommittedOffsets {
        let store = Arc::new(store);
        let (committer, orders) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(orders, store.clone(), broker.clone()));
        CommittedOffsets {
            store,
            broker,
            committer,
        }
    }

    /// The group's committed offset in `partition` of `stream`: the larger
    /// of this instance's and the broker's.
    pub async fn get(
        &self,
        stream: &str,
        group: &str,
        partition: &Partition,
    ) -> Result<CommittedOffset> {
        let local = self.store.get(stream, group, partition.index)?;
        if local == Some(Local::ResetToStart) {
            // Reset to the start here; the broker cannot express it.
            return Ok(CommittedOffset {
                offset: None,
                source: Some(OffsetSource::Local),
            });
        }
        let local = local.and_then(Local::committed);
        let broker = self.broker.query_offset(group, &partition.stream).await?;
        Ok(match (local, broker) {
            (None, None) => CommittedOffset {
                offset: None,
                source: None,
            },
            (Some(l), b) if b.is_none_or(|b| l >= b) => CommittedOffset {
                offset: Some(l),
                source: Some(OffsetSource::Local),
            },
            (_, b) => CommittedOffset {
                offset: b,
                source: Some(OffsetSource::Broker),
            },
        })
    }

    /// Commits `offset` (the last processed record) for the group in
    /// `partition`: never backwards — also not below what the broker holds
    /// — durable in the store, stored on the broker and visible there
    /// before this returns.
    pub async fn commit(
        &self,
        stream: &Arc<SuperStream>,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Committed> {
        let (answer, answered) = oneshot::channel();
        let order = Order {
            stream: stream.clone(),
            group: group.to_owned(),
            partition,
            offset,
            answer,
        };
        let gone = || Error::new(Reason::ShuttingDown, "partlog is shutting down");
        self.committer.send(order).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }

    /// Sets positions unconditionally (the admin reset): in the store, and
    /// on the broker where it can express them (not "before the first
    /// record").
    pub async fn reset(
        &self,
        stream: &SuperStream,
        group: &str,
        positions: &std::collections::BTreeMap<u32, Option<u64>>,
    ) -> Result<()> {
        self.store.reset(&stream.name, group, positions).await?;
        for (&partition, position) in positions {
            if let Some(offset) = position {
                let partition = &stream.partitions[partition as usize];
                self.broker
                    .store_offset(group, &partition.stream, *offset)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every (stream, group) with offsets in this instance's store.
    pub fn stream_groups(&self) -> Result<Vec<(String, String)>> {
        self.store.stream_groups()
    }

    /// Groups with offsets in this instance's store for `stream`.
    pub fn groups(&self, stream: &str) -> Result<Vec<String>> {
        self.store.groups(stream)
    }

    /// Writes the store to disk.
    pub async fn flush(&self) -> Result<()> {
        self.store.flush().await
    }
}

/// The committer: takes the commits waiting, writes each partition's
/// highest once, answers each.
async fn commit_loop(
    mut orders: mpsc::UnboundedReceiver<Order>,
    store: Arc<OffsetStore>,
    broker: Arc<Broker>,
) {
    let mut taken = Vec::new();
    while orders.recv_many(&mut taken, MAX_BATCH).await > 0 {
        let mut targets: Vec<Target> = Vec::new();
        let mut index: HashMap<(String, String, u32), usize> = HashMap::new();
        let mut waiting = Vec::with_capacity(taken.len());
        for order in taken.drain(..) {
            let key = (
                order.stream.name.clone(),
                order.group.clone(),
                order.partition,
            );
            let at = *index.entry(key).or_insert_with(|| {
                targets.push(Target {
                    stream: order.stream.clone(),
                    group: order.group.clone(),
                    partition: order.partition,
                    requested: order.offset,
                    before: None,
                    result: Ok(order.offset),
                });
                targets.len() - 1
            });
            targets[at].requested = targets[at].requested.max(order.offset);
            waiting.push((at, order.offset, order.answer));
        }
        write(&store, &broker, &mut targets).await;
        // A commit is ignored when an offset committed before it — before
        // this batch or earlier in it — is higher.
        let mut highest: Vec<Option<u64>> = targets.iter().map(|t| t.before).collect();
        for (at, requested, answer) in waiting {
            let target = &targets[at];
            let ignored_lower = highest[at].is_some_and(|h| requested < h);
            highest[at] = Some(highest[at].map_or(requested, |h| h.max(requested)));
            let _ = answer.send(target.result.clone().map(|offset| Committed {
                partition: target.partition,
                offset,
                ignored_lower,
            }));
        }
    }
}

/// Commits every target: not below the broker's offset, durably in the
/// store (one flush), then on the broker, read back there.
async fn write(store: &OffsetStore, broker: &Broker, targets: &mut [Target]) {
    let on_broker: Vec<Result<Option<u64>>> = {
        let targets = &*targets;
        futures::stream::iter(0..targets.len())
            .map(|i| async move {
                let t = &targets[i];
                let partition = &t.stream.partitions[t.partition as usize];
                broker.query_offset(&t.group, &partition.stream).await
            })
            .buffered(BROKER_CALLS_AT_ONCE)
            .collect()
            .await
    };
    for (target, on_broker) in targets.iter_mut().zip(&on_broker) {
        let advanced = on_broker.clone().and_then(|b| {
            let requested = b.map_or(target.requested, |b| b.max(target.requested));
            let (local, now) = store.advance(
                &target.stream.name,
                &target.group,
                target.partition,
                requested,
            )?;
            Ok((local.max(b), now))
        });
        target.result = advanced.clone().map(|(_, now)| now);
        target.before = advanced.ok().and_then(|(before, _)| before);
    }
    if let Err(e) = store.flush().await {
        for target in targets.iter_mut() {
            target.result = Err(e.clone());
        }
        return;
    }
    let on_broker = &on_broker;
    let targets_read = &*targets;
    let mirrored: Vec<Result<()>> = futures::stream::iter(0..targets_read.len())
        .map(|i| async move {
            let (t, on_broker) = (&targets_read[i], &on_broker[i]);
            let offset = t.result.clone()?;
            if on_broker
                .as_ref()
                .is_ok_and(|b| b.is_some_and(|b| b >= offset))
            {
                return Ok(());
            }
            let partition = &t.stream.partitions[t.partition as usize];
            broker
                .store_offset(&t.group, &partition.stream, offset)
                .await?;
            confirm_on_broker(broker, &t.group, partition, offset).await
        })
        .buffered(BROKER_CALLS_AT_ONCE)
        .collect()
        .await;
    for (target, mirrored) in targets.iter_mut().zip(mirrored) {
        if let Err(e) = mirrored {
            target.result = Err(e);
        }
    }
}

/// Reads an offset just stored back from the broker, on the connection
/// that stored it (the broker applies a connection's commands in order):
/// once it answers, a member activated next anywhere sees the offset.
async fn confirm_on_broker(
    broker: &Broker,
    group: &str,
    partition: &Partition,
    offset: u64,
) -> Result<()> {
    match broker.query_offset(group, &partition.stream).await? {
        Some(stored) if stored >= offset => Ok(()),
        stored => Err(Error::new(
            Reason::BrokerUnavailable,
            format!(
                "the broker holds offset {stored:?} for group {group:?} on {:?} right after \
             offset {offset} was stored; retry the commit",
                partition.stream
            ),
        )),
    }
}
