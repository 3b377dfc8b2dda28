//! A resized stream's epochs as readers see them.
//!
//! A growth from N to M partitions ends the old epoch in each old partition
//! with an epoch marker (see [`super::resize`]). Readers never get markers
//! as records: [`split_markers`] takes them out and says where they were.
//! A group member delivers a record only once the group *crossed* every
//! growth the record comes after ([`History::after`]): committed every old
//! partition up to its marker. So a key's records routed over N partitions
//! (in one partition, before its marker) are processed before its records
//! routed over M (after the markers, or in a new partition), whichever
//! members on whichever instances read them.

use crate::broker::{Broker, Epoch, Routing, SuperStream};
use crate::error::Result;
use crate::record::{EpochChange, StoredRecord};

/// Where an epoch marker sits in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochMarker {
    pub partition: u32,
    pub offset: u64,
    pub change: EpochChange,
}

/// Takes the epoch markers out of `records` (in offset order); returns
/// them in offset order.
pub fn split_markers(records: &mut Vec<StoredRecord>) -> Vec<EpochMarker> {
    let mut markers = Vec::new();
    records.retain(|record| match record.epoch_marker() {
        Some(change) => {
            markers.push(EpochMarker {
                partition: record.partition,
                offset: record.offset,
                change,
            });
            false
        }
        None => true,
    });
    markers
}

/// A stream's growths as the broker records them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The partitions records are routed over now (while a resize fences
    /// the stream: the count it grows from).
    pub count: u32,
    /// Oldest first.
    pub epochs: Vec<Epoch>,
}

impl History {
    pub async fn load(broker: &Broker, stream: &SuperStream) -> Result<History> {
        let count = match broker.routing(stream).await? {
            None => stream.partition_count(),
            Some(Routing::Over(count)) => count,
            Some(Routing::Fenced { from, .. }) => from,
        };
        let epochs = broker.epochs(stream, count).await?;
        Ok(History { count, epochs })
    }

    /// Whether records of `partition` are routed yet: a partition a resize
    /// is adding holds none until the history names it.
    pub fn covers(&self, partition: u32) -> bool {
        partition < self.count
    }

    /// How many of the growths (oldest first) a record of `partition` at
    /// `offset` comes after: those whose marker in the partition precedes
    /// it, and those that added the partition or an earlier one.
    pub fn after(&self, partition: u32, offset: u64) -> usize {
        self.epochs
            .iter()
            .take_while(|epoch| {
                partition >= epoch.from
                    || epoch
                        .markers
                        .get(partition as usize)
                        .is_some_and(|&marker| offset > marker)
            })
            .count()
    }

    /// The offsets of `partition`'s markers, oldest first.
    pub fn markers_of(&self, partition: u32) -> Vec<u64> {
        self.epochs
            .iter()
            .filter_map(|epoch| epoch.markers.get(partition as usize).copied())
            .collect()
    }

    /// The growth to `to` partitions, when recorded.
    pub fn growth_to(&self, to: u32) -> Option<&Epoch> {
        self.epochs.iter().find(|epoch| epoch.to == to)
    }
}

/// Whether `committed` (the group's committed offset per old partition, in
/// partition order) crossed `epoch`: every old partition committed up to
/// its marker.
pub fn crossed(epoch: &Epoch, committed: &[Option<u64>]) -> bool {
    epoch
        .markers
        .iter()
        .zip(committed)
        .all(|(&marker, &committed)| committed.is_some_and(|c| c >= marker))
        && committed.len() >= epoch.markers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        // 3 → 5 (markers at 10, 20, 30), then 5 → 8.
        History {
            count: 8,
            epochs: vec![
                Epoch {
                    from: 3,
                    to: 5,
                    at_ms: 1,
                    markers: vec![10, 20, 30],
                },
                Epoch {
                    from: 5,
                    to: 8,
                    at_ms: 2,
                    markers: vec![40, 50, 60, 5, 6],
                },
            ],
        }
    }

    #[test]
    fn a_record_comes_after_the_markers_before_it_and_the_growths_that_added_it() {
        let history = history();
        assert_eq!(history.after(0, 3), 0);
        assert_eq!(history.after(0, 10), 0, "the marker itself is no record");
        assert_eq!(history.after(0, 11), 1);
        assert_eq!(history.after(0, 41), 2);
        // Partition 3 was added by the first growth.
        assert_eq!(history.after(3, 0), 1);
        assert_eq!(history.after(3, 6), 2);
        // Partition 6 by the second.
        assert_eq!(history.after(6, 0), 2);
        assert!(history.covers(7) && !history.covers(8));
        assert_eq!(history.growth_to(8).map(|e| e.from), Some(5));
    }

    #[test]
    fn a_group_crosses_a_growth_once_every_old_partition_is_committed_to_its_marker() {
        let epoch = &history().epochs[0];
        assert!(crossed(epoch, &[Some(10), Some(25), Some(30)]));
        assert!(!crossed(epoch, &[Some(10), Some(19), Some(30)]));
        assert!(!crossed(epoch, &[Some(10), None, Some(30)]));
        assert!(!crossed(epoch, &[Some(10), Some(20)]));
    }

    #[test]
    fn markers_are_taken_out_of_the_records() {
        let record = |offset, marker: bool| {
            let mut r = StoredRecord::decode(bytes::Bytes::new(), 2, offset, 0);
            if marker {
                r.filter = crate::record::EPOCH_PROPERTY.into();
                r.headers
                    .insert(crate::record::EPOCH_PROPERTY.into(), "3>5".into());
            }
            r
        };
        let mut records = vec![record(1, false), record(2, true), record(3, false)];
        let markers = split_markers(&mut records);
        assert_eq!(
            markers,
            [EpochMarker {
                partition: 2,
                offset: 2,
                change: EpochChange { from: 3, to: 5 }
            }]
        );
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 3]);
    }
}
