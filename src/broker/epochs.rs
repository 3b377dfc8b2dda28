//! A stream's routing state and epoch history as the broker keeps them,
//! and growing a super stream by partitions.
//!
//! partlog keeps both as offset tracking references (the only state the
//! stream protocol lets every instance read and write, on any node, for as
//! long as the stream lives), under [`super::RESERVED_REFERENCE_PREFIX`]:
//!
//! | reference                     | on partition | value                          |
//! |-------------------------------|--------------|--------------------------------|
//! | `__partlog.routing`           | 0            | [`Routing`], encoded           |
//! | `__partlog.epoch.<M>.from`    | 0            | N: the count before growing to M |
//! | `__partlog.epoch.<M>.at`      | 0            | when it grew, ms since the Unix epoch |
//! | `__partlog.epoch.<M>.marker`  | each i < N   | offset of partition i's epoch marker |
//!
//! A stream without `__partlog.routing` never grew through partlog: it
//! is routed over the broker's partition list as it is. The history is
//! read backwards from the current count, one `from` at a time.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rabbitmq_stream_client::types::ResponseCode;

use super::cluster::Broker;
use super::super_stream::SuperStream;
use crate::error::{Error, Reason, Result};

/// Where a stream's routing state lives (on partition 0).
const ROUTING_REFERENCE: &str = "__partlog.routing";

fn from_reference(to: u32) -> String {
    format!("__partlog.epoch.{to}.from")
}

fn at_reference(to: u32) -> String {
    format!("__partlog.epoch.{to}.at")
}

fn marker_reference(to: u32) -> String {
    format!("__partlog.epoch.{to}.marker")
}

/// What partlog instances may route a stream's records over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The first `n` partitions of the broker's list.
    Over(u32),
    /// Nothing: a resize from `from` to `to` partitions is fencing the old
    /// count off.
    Fenced { from: u32, to: u32 },
}

const FENCED: u64 = 1 << 63;

impl Routing {
    /// The partition count this state routes over, or grows to.
    fn target(self) -> u32 {
        match self {
            Routing::Over(n) | Routing::Fenced { to: n, .. } => n,
        }
    }

    /// Whether this state comes after `earlier` in one resize: "over M"
    /// after "fenced from N to M".
    fn follows(self, earlier: Routing) -> bool {
        matches!((earlier, self), (Routing::Fenced { to, .. }, Routing::Over(n)) if n == to)
    }

    fn encode(self) -> u64 {
        match self {
            Routing::Over(n) => u64::from(n),
            Routing::Fenced { from, to } => FENCED | u64::from(from) << 32 | u64::from(to),
        }
    }

    /// `None` for a value partlog does not write.
    fn decode(value: u64) -> Option<Routing> {
        let low = u32::try_from(value & u64::from(u32::MAX)).ok()?;
        if value & FENCED == 0 {
            return (value >> 32 == 0).then_some(Routing::Over(low));
        }
        let from = u32::try_from((value & !FENCED) >> 32).ok()?;
        Some(Routing::Fenced { from, to: low })
    }
}

/// One growth of a stream, as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub from: u32,
    pub to: u32,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `markers[i]`: partition i's marker offset, for i < `from`.
    pub markers: Vec<u64>,
}

/// References asked at once.
const QUERIES_AT_ONCE: usize = 16;

impl Broker {
    /// The stream's routing state; `None` when it never grew through
    /// partlog (route over the broker's list).
    pub async fn routing(&self, stream: &SuperStream) -> Result<Option<Routing>> {
        let first = first_partition(stream)?;
        let Some(value) = self.query_offset(ROUTING_REFERENCE, first).await? else {
            return Ok(None);
        };
        Routing::decode(value).map(Some).ok_or_else(|| {
            Error::new(
                Reason::Internal,
                format!(
                    "partition stream {first:?} holds {ROUTING_REFERENCE:?} = {value}, which \
                     partlog does not write"
                ),
            )
        })
    }

    /// Makes `routing` the stream's routing state; returns once the broker
    /// reads it back, or a state that follows it (another instance ran the
    /// same resize further). RESIZE_IN_PROGRESS when it reads a fence of
    /// another resize.
    pub async fn set_routing(&self, stream: &SuperStream, routing: Routing) -> Result<()> {
        let first = first_partition(stream)?;
        let deadline = self.connector().deadline();
        self.store_offset(ROUTING_REFERENCE, first, routing.encode())
            .await?;
        loop {
            match self.routing(stream).await? {
                Some(now) if now == routing || now.follows(routing) => return Ok(()),
                Some(Routing::Fenced { from, to }) if routing.target() != to => {
                    return Err(Error::new(
                        Reason::ResizeInProgress,
                        format!(
                            "stream {:?} is being resized from {from} to {to} partitions by \
                             another call; repeat that resize to finish it before another",
                            stream.name
                        ),
                    ))
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    Reason::BrokerUnavailable,
                    format!(
                        "the broker did not keep the routing state of {:?} within {:?}",
                        stream.name,
                        self.connector().timeout()
                    ),
                ));
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }

    /// The stream's growths, oldest first, up to the count `current`.
    pub async fn epochs(&self, stream: &SuperStream, current: u32) -> Result<Vec<Epoch>> {
        let first = first_partition(stream)?;
        let mut epochs = Vec::new();
        let mut to = current;
        while let Some(from) = self.query_offset(&from_reference(to), first).await? {
            let Ok(from) = u32::try_from(from) else { break };
            if from >= to {
                break;
            }
            let at_ms = self.query_offset(&at_reference(to), first).await?;
            let marker = marker_reference(to);
            let partitions = stream.partitions.get(..from as usize).unwrap_or_default();
            let queries: Vec<_> = partitions
                .iter()
                .map(|p| self.query_offset(&marker, &p.stream))
                .collect();
            let markers: Vec<Option<u64>> = futures::stream::iter(queries)
                .buffered(QUERIES_AT_ONCE)
                .try_collect()
                .await?;
            epochs.push(Epoch {
                from,
                to,
                at_ms: at_ms.unwrap_or_default(),
                markers: markers.into_iter().map(Option::unwrap_or_default).collect(),
            });
            to = from;
        }
        epochs.reverse();
        Ok(epochs)
    }

    /// The offset of partition stream `partition`'s marker of the growth
    /// to `to` partitions; `None` before it was recorded.
    pub async fn marker(&self, partition: &str, to: u32) -> Result<Option<u64>> {
        self.query_offset(&marker_reference(to), partition).await
    }

    /// Records partition stream `partition`'s marker of the growth to `to`;
    /// returns once the broker holds a marker offset (this one, or that of
    /// a concurrent run of the same resize, whose marker is as good).
    pub async fn record_marker(&self, partition: &str, to: u32, offset: u64) -> Result<()> {
        self.store_until(&marker_reference(to), partition, offset, |_| true)
            .await
    }

    /// Records that the stream grew from `from` to `to` partitions at
    /// `at_ms` (or at the time a concurrent run of the same resize
    /// recorded): the last step of a growth before routing over `to`.
    pub async fn record_epoch(
        &self,
        stream: &SuperStream,
        from: u32,
        to: u32,
        at_ms: u64,
    ) -> Result<()> {
        let first = first_partition(stream)?;
        self.store_until(&at_reference(to), first, at_ms, |_| true)
            .await?;
        self.store_and_confirm(&from_reference(to), first, u64::from(from))
            .await
    }

    /// Adds partitions `from..to` to the super stream `stream` (which has
    /// `from`): creates each partition stream `<stream>-<i>` with the
    /// arguments of partition 0 (and its `max_chunk_records`), then binds
    /// it to the super stream's exchange with the binding key `i` and the
    /// partition order `i`, so that the broker lists it (and native
    /// clients route to it) in place `i`. Every step may have been done
    /// before (by a resize cut short, or one running on another instance).
    pub async fn add_partitions(&self, stream: &SuperStream, to: u32) -> Result<()> {
        let first = first_partition(stream)?;
        let arguments = super::management::stream_arguments(self.connector(), first).await?;
        let chunk_records = self.max_chunk_records(first).await?;
        for index in stream.partition_count()..to {
            let name = format!("{}-{index}", stream.name);
            self.create_partition_stream(&name, arguments.clone())
                .await?;
            if let Some(records) = chunk_records {
                let records = u32::try_from(records).unwrap_or(u32::MAX);
                self.set_max_chunk_records(std::slice::from_ref(&name), records)
                    .await?;
            }
            super::management::bind_partition(self.connector(), &stream.name, &name, index).await?;
        }
        Ok(())
    }

    /// Creates one partition stream; one that exists already is taken as
    /// made before by a resize to the same count.
    async fn create_partition_stream(
        &self,
        name: &str,
        arguments: HashMap<String, String>,
    ) -> Result<()> {
        let response = self
            .with_admin(
                &format!("creating partition stream {name:?}"),
                |c| async move { c.create_stream(name, arguments).await },
            )
            .await?;
        match response.code() {
            ResponseCode::Ok | ResponseCode::StreamAlreadyExists => Ok(()),
            ResponseCode::AccessRefused => Err(Error::new(
                Reason::BrokerAccessRefused,
                format!(
                    "user {:?} may not create partition stream {name:?}",
                    self.connector().config().user
                ),
            )),
            code => Err(Error::new(
                Reason::Internal,
                format!("the broker answered creating partition stream {name:?} with {code:?}"),
            )),
        }
    }

    /// Stores `value` under `reference` on `stream` and returns once the
    /// broker reads it back (a stored offset is written asynchronously).
    pub async fn store_and_confirm(&self, reference: &str, stream: &str, value: u64) -> Result<()> {
        self.store_until(reference, stream, value, |kept| kept == value)
            .await
    }

    /// Stores `value` under `reference` on `stream` and returns once the
    /// broker holds `value` or another value that `accept`s (one a
    /// concurrent run of the same resize stored: the last write wins).
    async fn store_until(
        &self,
        reference: &str,
        stream: &str,
        value: u64,
        accept: impl Fn(u64) -> bool,
    ) -> Result<()> {
        let deadline = self.connector().deadline();
        self.store_offset(reference, stream, value).await?;
        while !self
            .query_offset(reference, stream)
            .await?
            .is_some_and(&accept)
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(
                    Reason::BrokerUnavailable,
                    format!(
                        "the broker did not keep {reference:?} of {stream:?} within {:?}",
                        self.connector().timeout()
                    ),
                ));
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
        Ok(())
    }
}

/// How often a stored reference is read back until the broker has it.
const CONFIRM_POLL: Duration = Duration::from_millis(20);

fn first_partition(stream: &SuperStream) -> Result<&str> {
    stream
        .partitions
        .first()
        .map(|p| p.stream.as_str())
        .ok_or_else(|| {
            Error::new(
                Reason::Internal,
                format!("stream {:?} has no partitions", stream.name),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_states_survive_their_encoding() {
        for routing in [
            Routing::Over(1),
            Routing::Over(256),
            Routing::Fenced { from: 3, to: 5 },
            Routing::Fenced { from: 255, to: 256 },
        ] {
            assert_eq!(Routing::decode(routing.encode()), Some(routing));
        }
        assert_eq!(Routing::Over(3).encode(), 3, "readable on the broker");
        let fenced = Routing::Fenced { from: 3, to: 5 };
        assert!(Routing::Over(5).follows(fenced));
        assert!(!Routing::Over(6).follows(fenced) && !fenced.follows(Routing::Over(5)));
        // Values partlog does not write.
        assert_eq!(Routing::decode(1 << 40), None);
    }
}
