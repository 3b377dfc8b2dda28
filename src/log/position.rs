//! Where reading starts in a partition, and how that becomes a broker
//! offset.

use crate::broker::ReadFrom;
use crate::config::Fallback;
use crate::error::{Error, Reason, Result};

/// Where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The group's committed offset + 1, else the configured fallback.
    Committed,
    First,
    /// The last chunk of records.
    Last,
    /// Only records written from now on.
    Next,
    Offset(u64),
    /// Milliseconds since the Unix epoch: the first chunk stored at or
    /// after this time.
    Timestamp(i64),
}

impl StartPosition {
    /// Rejects a position that needs a group when there is none.
    pub fn check(self, group: Option<&str>) -> Result<()> {
        if self == StartPosition::Committed && group.is_none() {
            return Err(Error::field(
                Reason::GroupRequired,
                "group",
                "start position COMMITTED needs a group; name one, or start at FIRST, LAST, \
                 NEXT, an offset or a timestamp",
            ));
        }
        Ok(())
    }
}

/// Where the broker attaches a reader at `position`, and the offset read
/// first when that is known in advance. `committed` is the group's
/// committed offset in the partition (`Committed` reads on after it, or
/// starts at `fallback` without one).
pub fn broker_offset(
    position: StartPosition,
    committed: Option<u64>,
    fallback: Fallback,
) -> (ReadFrom, Option<u64>) {
    match position {
        StartPosition::Committed => match committed {
            // A committed offset names a record: the one after it fits.
            Some(offset) => {
                let next = offset.saturating_add(1);
                (ReadFrom::Offset(next), Some(next))
            }
            None => broker_offset(fallback.into(), None, fallback),
        },
        StartPosition::First => (ReadFrom::First, None),
        StartPosition::Last => (ReadFrom::Last, None),
        StartPosition::Next => (ReadFrom::Next, None),
        StartPosition::Offset(offset) => (ReadFrom::Offset(offset), Some(offset)),
        StartPosition::Timestamp(ms) => (ReadFrom::Timestamp(ms), None),
    }
}

impl From<Fallback> for StartPosition {
    fn from(fallback: Fallback) -> StartPosition {
        match fallback {
            Fallback::First => StartPosition::First,
            Fallback::Last => StartPosition::Last,
            Fallback::Next => StartPosition::Next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(spec: &ReadFrom) -> Option<u64> {
        match spec {
            ReadFrom::Offset(o) => Some(*o),
            _ => None,
        }
    }

    #[test]
    fn committed_reads_on_after_the_commit_or_falls_back() {
        let (spec, next) = broker_offset(StartPosition::Committed, Some(41), Fallback::Last);
        assert_eq!((offset(&spec), next), (Some(42), Some(42)));
        let (spec, next) = broker_offset(StartPosition::Committed, None, Fallback::Last);
        assert!(matches!(spec, ReadFrom::Last));
        assert_eq!(next, None);
    }

    #[test]
    fn explicit_positions_ignore_commits() {
        let (spec, next) = broker_offset(StartPosition::Offset(7), Some(100), Fallback::First);
        assert_eq!((offset(&spec), next), (Some(7), Some(7)));
        let (spec, _) = broker_offset(StartPosition::First, Some(100), Fallback::Next);
        assert!(matches!(spec, ReadFrom::First));
        let (spec, next) = broker_offset(StartPosition::Timestamp(5), None, Fallback::First);
        assert!(matches!(spec, ReadFrom::Timestamp(5)));
        assert_eq!(next, None);
    }

    #[test]
    fn committed_needs_a_group() {
        assert!(StartPosition::Committed.check(None).is_err());
        assert!(StartPosition::Committed.check(Some("g")).is_ok());
        assert!(StartPosition::Next.check(None).is_ok());
    }
}
