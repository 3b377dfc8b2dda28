//! Records and their AMQP 1.0 form on the broker.
//!
//! partlog stores each record as one AMQP 1.0 message so that RabbitMQ's
//! native stream clients read partlog's records and partlog reads theirs:
//!
//! | record part | AMQP 1.0 message                                   |
//! |-------------|----------------------------------------------------|
//! | value       | the body, one `data` section                       |
//! | key         | application property `partlog.key` (string), only when non-empty |
//! | headers     | application properties, string values             |
//! | filter      | application property `partlog.filter` (string), and the message's filter value in the publish frame, only when set |
//!
//! An *epoch marker* (see [`crate::log`]'s resizing) is a message with an
//! empty body, the application property `partlog.epoch` = `"N>M"` (the
//! partition counts before and after a growth) and the filter value
//! `partlog.epoch`, so that filtered readers receive its chunk too.
//!
//! Reading a message that a native producer wrote, the value is its `data`
//! section (or an `amqp-value` body holding a string or binary), the key is
//! its `partlog.key` property if present, the filter its `partlog.filter`
//! property, and every other application property becomes a header,
//! non-string values rendered as text.
//!
//! Records are read from the bytes the broker delivers: indexing, unchecked
//! arithmetic and unwraps are denied here, as in [`crate::broker`].
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
// Not for tests, which compute their inputs (clippy.toml lets tests index
// and unwrap).
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::collections::BTreeMap;

pub mod amqp;
mod filter;

pub use filter::RecordFilter;

use bytes::Bytes;

/// Application property that carries the record key.
pub const KEY_PROPERTY: &str = "partlog.key";
/// Application property that carries the record's filter value.
pub const FILTER_PROPERTY: &str = "partlog.filter";
/// Application property of an epoch marker, `"N>M"`; also its filter
/// value, which every filtered reader asks the broker for.
pub const EPOCH_PROPERTY: &str = "partlog.epoch";

/// A growth of a stream from `from` to `to` partitions, as an epoch
/// marker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochChange {
    pub from: u32,
    pub to: u32,
}

impl EpochChange {
    fn parse(text: &str) -> Option<EpochChange> {
        let (from, to) = text.split_once('>')?;
        Some(EpochChange {
            from: from.parse().ok()?,
            to: to.parse().ok()?,
        })
    }
}

/// Bytes of a record's key, value, filter and header names and values:
/// what partlog's size limits count, written and read alike.
fn payload_size(
    key: &str,
    value: &[u8],
    filter: &str,
    headers: &BTreeMap<String, String>,
) -> usize {
    // Sizes of values in memory: their sum fits.
    headers.iter().flat_map(|(k, v)| [k.len(), v.len()]).fold(
        key.len()
            .saturating_add(value.len())
            .saturating_add(filter.len()),
        usize::saturating_add,
    )
}

/// A record as a client hands it to partlog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    pub key: String,
    /// As the request carried it (a slice of its buffer, not a copy).
    pub value: Bytes,
    pub headers: BTreeMap<String, String>,
    /// The producer's sequence number, for idempotent publishing.
    pub sequence: Option<u64>,
    /// The filter value (1..=255 bytes when set).
    pub filter: Option<String>,
}

impl NewRecord {
    /// The epoch marker of a growth (see [`EPOCH_PROPERTY`]).
    pub fn epoch_marker(change: EpochChange) -> NewRecord {
        NewRecord {
            headers: BTreeMap::from([(
                EPOCH_PROPERTY.to_owned(),
                format!("{}>{}", change.from, change.to),
            )]),
            filter: Some(EPOCH_PROPERTY.to_owned()),
            ..NewRecord::default()
        }
    }

    /// Bytes the record contributes to a batch's size limit.
    pub fn size(&self) -> u64 {
        let filter = self.filter.as_deref().unwrap_or_default();
        payload_size(&self.key, &self.value, filter, &self.headers) as u64
    }

    /// The AMQP 1.0 message stored on the broker: the key as the
    /// `partlog.key` property, the filter as `partlog.filter`, the headers
    /// as properties, the value as the body (not copied: see
    /// [`amqp::Encoded`]); with the filter value for the publish frame.
    pub fn encode(self) -> amqp::Encoded {
        let NewRecord {
            key,
            value,
            headers,
            filter,
            ..
        } = self;
        let key = (!key.is_empty()).then_some((KEY_PROPERTY, key.as_str()));
        let filtered = filter.as_deref().map(|f| (FILTER_PROPERTY, f));
        let headers = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        let properties = key.into_iter().chain(filtered).chain(headers);
        let encoded = amqp::encode(properties, value);
        amqp::Encoded { filter, ..encoded }
    }
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    /// A slice of the chunk it was read from.
    pub value: Bytes,
    pub headers: BTreeMap<String, String>,
    /// Its `partlog.filter` property; empty for none.
    pub filter: String,
    /// Milliseconds since the Unix epoch at which the broker stored the
    /// chunk holding this record.
    pub timestamp_ms: i64,
}

impl StoredRecord {
    /// The growth this record marks, when it is an epoch marker.
    pub fn epoch_marker(&self) -> Option<EpochChange> {
        if self.filter != EPOCH_PROPERTY {
            return None;
        }
        self.headers
            .get(EPOCH_PROPERTY)
            .and_then(|text| EpochChange::parse(text))
    }

    /// Bytes of key, value and headers: what a Read's size limit counts.
    pub fn payload_bytes(&self) -> usize {
        payload_size(&self.key, &self.value, &self.filter, &self.headers)
    }

    /// The record a message (one entry of a chunk) holds, written by
    /// partlog or a native client: see [`amqp`] for what is kept. Bytes
    /// that are not an AMQP 1.0 message are the value, whole.
    pub fn decode(message: Bytes, partition: u32, offset: u64, timestamp_ms: i64) -> Self {
        let (value, mut headers) = match amqp::decode(&message) {
            Ok(decoded) => (decoded.value, decoded.properties),
            Err(amqp::NotAmqp(why)) => {
                tracing::debug!(
                    partition,
                    offset,
                    why,
                    "not an AMQP 1.0 message; its bytes are the value"
                );
                (message, BTreeMap::new())
            }
        };
        let key = headers.remove(KEY_PROPERTY).unwrap_or_default();
        let filter = headers.remove(FILTER_PROPERTY).unwrap_or_default();
        StoredRecord {
            partition,
            offset,
            key,
            value,
            headers,
            filter,
            timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_amqp_are_the_value_whole() {
        for bytes in [
            &b"plain text"[..],
            &[0x00, 0x53][..],
            &[0x00, 0x53, 0x75, 0xa0, 9, 1][..],
        ] {
            let stored = StoredRecord::decode(Bytes::copy_from_slice(bytes), 0, 0, 0);
            assert_eq!(stored.value, bytes);
            assert!(stored.key.is_empty() && stored.headers.is_empty());
        }
    }

    #[test]
    fn an_epoch_marker_reads_back_as_one() {
        let change = EpochChange { from: 3, to: 5 };
        let encoded = NewRecord::epoch_marker(change).encode();
        let mut message = encoded.head;
        message.extend_from_slice(&encoded.value);
        let stored = StoredRecord::decode(message.into(), 1, 7, 0);
        assert_eq!(stored.epoch_marker(), Some(change));
        // A record that merely names the property is none.
        let mut plain = stored.clone();
        plain.filter = String::new();
        assert_eq!(plain.epoch_marker(), None);
    }

    #[test]
    fn size_counts_key_value_and_headers() {
        let record = NewRecord {
            key: "ab".into(),
            value: vec![0; 10].into(),
            headers: BTreeMap::from([("h".to_string(), "xyz".to_string())]),
            sequence: None,
            filter: Some("eu".into()),
        };
        assert_eq!(record.size(), 2 + 10 + 2 + 1 + 3);
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;

        #[test]
        fn arbitrary_bytes_are_read_as_some_record_never_a_panic() {
            crate::generative::check(prop::collection::vec(any::<u8>(), 0..200), |bytes| {
                let _ = StoredRecord::decode(bytes.into(), 0, 0, 0);
                Ok(())
            });
        }
    }
}
