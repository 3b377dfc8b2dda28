//! Which records a reader wants, by their filter values.
//!
//! A reader that filters names the filter values it wants and whether it
//! also wants records without one. The broker is asked to send only the
//! chunks that may hold them (its Bloom filter per chunk can answer "maybe"
//! for a chunk that holds none, and a chunk holds records of other values
//! too), so partlog keeps exactly the records that match: by the
//! `partlog.filter` property each record carries ([`super::FILTER_PROPERTY`]).

use std::collections::BTreeSet;

use super::StoredRecord;

/// The filter values a reader wants; built by
/// [`crate::validate::record_filter`], which checks the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFilter {
    values: BTreeSet<String>,
    include_unfiltered: bool,
    /// Also ask the broker for chunks that hold epoch markers (their own
    /// filter value, [`super::EPOCH_PROPERTY`]).
    epoch_markers: bool,
}

impl RecordFilter {
    /// A filter on `values` (at least one, each non-empty); with
    /// `include_unfiltered`, records without a filter value match too.
    pub(crate) fn new(values: BTreeSet<String>, include_unfiltered: bool) -> RecordFilter {
        RecordFilter {
            values,
            include_unfiltered,
            epoch_markers: false,
        }
    }

    /// The same filter, asking the broker for the chunks of epoch markers
    /// too: every group member needs them, and a reader of a stream that
    /// grew. (A Bloom filter answers "maybe" for some other chunks too:
    /// about 2 % more chunks with 16-byte filters.)
    pub(crate) fn with_epoch_markers(self, epoch_markers: bool) -> RecordFilter {
        RecordFilter {
            epoch_markers,
            ..self
        }
    }

    /// The filter values the broker is asked for: the reader's, and the
    /// epoch markers' when asked.
    pub fn broker_values(&self) -> impl Iterator<Item = &str> {
        let markers = self.epoch_markers.then_some(super::EPOCH_PROPERTY);
        self.values().chain(markers)
    }

    /// The values, in a stable order (the broker's subscription names them
    /// `filter.0`, `filter.1`, …).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(String::as_str)
    }

    /// Whether records without a filter value match.
    pub fn include_unfiltered(&self) -> bool {
        self.include_unfiltered
    }

    /// Whether the reader wants `record`. Epoch markers are kept: every
    /// reader is told where they are.
    pub fn keeps(&self, record: &StoredRecord) -> bool {
        if record.filter == super::EPOCH_PROPERTY {
            record.epoch_marker().is_some()
        } else if record.filter.is_empty() {
            self.include_unfiltered
        } else {
            self.values.contains(&record.filter)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(filter: &str) -> StoredRecord {
        StoredRecord {
            partition: 0,
            offset: 0,
            key: String::new(),
            value: Default::default(),
            headers: Default::default(),
            filter: filter.into(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn keeps_its_values_and_unfiltered_records_only_when_asked() {
        let values = BTreeSet::from(["eu".to_string(), "us".to_string()]);
        let strict = RecordFilter::new(values.clone(), false);
        assert!(strict.keeps(&record("eu")) && strict.keeps(&record("us")));
        assert!(!strict.keeps(&record("apac")));
        assert!(!strict.keeps(&record("")));
        assert!(!strict.keeps(&record("EU")), "values are compared exactly");
        let lenient = RecordFilter::new(values, true);
        assert!(lenient.keeps(&record("")));
        assert!(!lenient.keeps(&record("apac")));
        assert_eq!(lenient.values().collect::<Vec<_>>(), ["eu", "us"]);
    }
}
