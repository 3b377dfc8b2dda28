//! Super streams as partlog knows them: the partitions in routing order,
//! looked up once and shared by every operation.
//!
//! Lifetime of a cached [`SuperStream`]: until partlog deletes the stream or
//! an operation finds one of its partition streams gone (the owner calls
//! [`SuperStreams::forget`]). After [`MAX_AGE`] the next lookup asks the
//! broker again — a bound on how long a stream deleted and created again by
//! another client with other partitions can go unnoticed — and keeps the
//! same entry when the partitions are the same, so that what hangs on it
//! (a stream's producers) lives on. A replaced or forgotten entry lives on
//! in the hands of operations that took it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How long a looked-up partition list is trusted without news.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// A super stream and its partitions in routing order.
#[derive(Debug)]
pub struct SuperStream {
    pub name: String,
    /// `partitions[i].index == i`.
    pub partitions: Vec<Partition>,
    /// When the broker last confirmed the partition list.
    confirmed: Mutex<Instant>,
}

/// One partition of a super stream.
#[derive(Debug)]
pub struct Partition {
    /// The name of the super stream (partlog stream) it belongs to.
    pub super_stream: Arc<str>,
    pub index: u32,
    /// The RabbitMQ stream that holds the partition.
    pub stream: String,
    /// Highest offset known to hold a record (seen by a subscription, a
    /// Read or a bounds query); `NONE_SEEN` before any. Commits up to it
    /// need no broker round trip to prove their record exists.
    last_record: AtomicU64,
}

const NONE_SEEN: u64 = u64::MAX;

impl SuperStream {
    /// The stream `name` with partition streams `partitions` (routing order).
    pub fn new(name: &str, partitions: Vec<String>) -> SuperStream {
        let super_stream: Arc<str> = name.into();
        SuperStream {
            name: name.to_owned(),
            partitions: partitions
                .into_iter()
                .enumerate()
                .map(|(index, stream)| Partition {
                    super_stream: super_stream.clone(),
                    index: index as u32,
                    stream,
                    last_record: AtomicU64::new(NONE_SEEN),
                })
                .collect(),
            confirmed: Mutex::new(Instant::now()),
        }
    }

    /// The broker confirmed the partition list less than [`MAX_AGE`] ago.
    pub fn is_fresh(&self) -> bool {
        lock(&self.confirmed).elapsed() < MAX_AGE
    }

    /// True when `partitions` (routing order) are this stream's partitions;
    /// then the list counts as confirmed now.
    pub fn confirm(&self, partitions: &[String]) -> bool {
        let same = self.partitions.len() == partitions.len()
            && self
                .partitions
                .iter()
                .zip(partitions)
                .all(|(p, s)| p.stream == *s);
        if same {
            *lock(&self.confirmed) = Instant::now();
        }
        same
    }

    /// Number of partitions, at least 1.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }
}

impl Partition {
    /// `offset` holds a record.
    pub fn saw_record(&self, offset: u64) {
        // NONE_SEEN is the largest value: replace it, or keep the maximum.
        let _ = self
            .last_record
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                (last == NONE_SEEN || offset > last).then_some(offset)
            });
    }

    /// The highest offset known to hold a record.
    pub fn last_record_seen(&self) -> Option<u64> {
        match self.last_record.load(Ordering::Acquire) {
            NONE_SEEN => None,
            offset => Some(offset),
        }
    }
}

/// Super streams looked up before, by name; one per broker handle.
#[derive(Default)]
pub struct SuperStreams {
    by_name: Mutex<HashMap<String, Arc<SuperStream>>>,
}

impl SuperStreams {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Arc<SuperStream>>> {
        lock(&self.by_name)
    }

    /// The cached stream, fresh or not (see [`SuperStream::is_fresh`]).
    pub fn get(&self, name: &str) -> Option<Arc<SuperStream>> {
        self.entries().get(name).cloned()
    }

    /// Caches a stream just looked up; returns it.
    pub fn insert(&self, stream: SuperStream) -> Arc<SuperStream> {
        let stream = Arc::new(stream);
        self.entries().insert(stream.name.clone(), stream.clone());
        stream
    }

    /// Drops `stream` from the cache (if it is still the cached one): the
    /// next lookup asks the broker.
    pub fn forget(&self, stream: &Arc<SuperStream>) {
        let mut entries = self.entries();
        if entries
            .get(&stream.name)
            .is_some_and(|cached| Arc::ptr_eq(cached, stream))
        {
            entries.remove(&stream.name);
        }
    }

    /// Drops whatever is cached under `name`.
    pub fn forget_name(&self, name: &str) {
        self.entries().remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_numbered_in_routing_order() {
        let stream = SuperStream::new("s", vec!["s-0".into(), "s-1".into()]);
        assert_eq!(stream.partition_count(), 2);
        assert_eq!(stream.partitions[1].index, 1);
        assert_eq!(stream.partitions[1].stream, "s-1");
    }

    #[test]
    fn the_last_record_seen_only_grows() {
        let stream = SuperStream::new("s", vec!["s-0".into()]);
        let partition = &stream.partitions[0];
        assert_eq!(partition.last_record_seen(), None);
        partition.saw_record(0);
        assert_eq!(partition.last_record_seen(), Some(0));
        partition.saw_record(7);
        partition.saw_record(3);
        assert_eq!(partition.last_record_seen(), Some(7));
    }

    #[test]
    fn only_the_same_partitions_confirm_a_stream() {
        let stream = SuperStream::new("s", vec!["s-0".into(), "s-1".into()]);
        assert!(stream.is_fresh());
        assert!(stream.confirm(&["s-0".into(), "s-1".into()]));
        assert!(!stream.confirm(&["s-0".into()]));
        assert!(!stream.confirm(&["s-1".into(), "s-0".into()]));
    }

    #[test]
    fn a_forgotten_or_replaced_entry_is_looked_up_again() {
        let cache = SuperStreams::default();
        let first = cache.insert(SuperStream::new("s", vec!["s-0".into()]));
        assert!(Arc::ptr_eq(&cache.get("s").unwrap(), &first));
        let second = cache.insert(SuperStream::new("s", vec!["s-0".into(), "s-1".into()]));
        // Forgetting the replaced entry keeps the new one.
        cache.forget(&first);
        assert!(Arc::ptr_eq(&cache.get("s").unwrap(), &second));
        cache.forget(&second);
        assert!(cache.get("s").is_none());
        cache.insert(SuperStream::new("s", vec!["s-0".into()]));
        cache.forget_name("s");
        assert!(cache.get("s").is_none());
    }
}
