//! Request validation that needs no broker: names, counts and limits.
//!
//! Each check returns [`Error::InvalidArgument`] or
//! [`Error::ResourceExhausted`] with a message naming the field at fault, so
//! a client can fix its request without reading partlog's source.

use crate::broker::RESERVED_REFERENCE_PREFIX;
use crate::config::{Limits, MAX_PARTITIONS};
use crate::error::{Error, Reason, Result};
use crate::record::{NewRecord, RecordFilter, EPOCH_PROPERTY, FILTER_PROPERTY, KEY_PROPERTY};

/// RabbitMQ's limit on queue and stream names, in bytes.
const RABBITMQ_NAME_MAX_BYTES: usize = 255;

/// Longest super stream name: its partitions are named `<name>-<index>` and
/// must stay within RabbitMQ's limit for every index below [`MAX_PARTITIONS`].
pub const STREAM_NAME_MAX_BYTES: usize =
    RABBITMQ_NAME_MAX_BYTES - 1 - digits(MAX_PARTITIONS as usize - 1);

const fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// A super stream name RabbitMQ accepts for the exchange and every partition.
pub fn stream_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::field(
            Reason::FieldRequired,
            "stream",
            "stream name must not be empty",
        ));
    }
    if name.len() > STREAM_NAME_MAX_BYTES {
        return Err(Error::field(
            Reason::NameTooLong,
            "stream",
            format!(
                "stream name is {} bytes long; at most {STREAM_NAME_MAX_BYTES} bytes are allowed \
             so that partition names \"<stream>-<index>\" fit RabbitMQ's 255-byte limit",
                name.len()
            ),
        ));
    }
    if name.starts_with("amq.") {
        return Err(Error::field(
            Reason::NameReserved,
            "stream",
            format!("stream name {name:?} starts with \"amq.\", which RabbitMQ reserves"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::field(
            Reason::NameInvalid,
            "stream",
            format!("stream name {name:?} contains the control character {c:?}"),
        ));
    }
    Ok(())
}

/// File names on the broker's disk (the common file system limit, in bytes).
const FILE_NAME_MAX_BYTES: usize = 255;

/// What RabbitMQ adds around a stream's name to name its data directory:
/// `<vhost>_<stream>_<timestamp>`, the timestamp being the 19 digits of
/// `erlang:system_time()` in nanoseconds. (The vhost's length is added by
/// [`created_stream_name`].)
const DATA_DIRECTORY_DECORATION: usize = 1 + 1 + 19;

/// Longest name, in characters, of a new super stream with `partitions`
/// partitions on `vhost`: its longest partition stream `<name>-<N-1>` must
/// leave room for the decoration of the partition's data directory.
///
/// RabbitMQ names the directory by replacing every character but ASCII
/// letters, digits, `-` and `=` with one `_` (one per grapheme cluster,
/// so counting characters is exact for ASCII and errs on the safe side
/// otherwise). A longer name is accepted by the broker, whose partition
/// writers then fail with `enametoolong` for ever: the stream never runs
/// and its coordinator retries the broken members until the node's data
/// is wiped.
pub fn max_created_stream_name_chars(partitions: u32, vhost: &str) -> usize {
    let index = digits(partitions.saturating_sub(1) as usize);
    let vhost = vhost.chars().count();
    FILE_NAME_MAX_BYTES.saturating_sub(DATA_DIRECTORY_DECORATION + vhost + 1 + index)
}

/// The name of a super stream about to be created with `partitions`
/// partitions on `vhost`: a valid [`stream_name`] whose partitions' data
/// directories fit the broker's file system.
pub fn created_stream_name(name: &str, partitions: u32, vhost: &str) -> Result<()> {
    stream_name(name)?;
    let max = max_created_stream_name_chars(partitions, vhost);
    let chars = name.chars().count();
    if chars > max {
        return Err(Error::field(
            Reason::NameTooLong,
            "stream",
            format!(
            "stream name is {chars} characters long; with {partitions} partitions at most {max} \
             are allowed, because RabbitMQ names each partition's data directory \
             \"<vhost>_<stream>-<index>_<19-digit timestamp>\" and file names have at most \
             {FILE_NAME_MAX_BYTES} bytes"
        ),
        ));
    }
    Ok(())
}

/// A count a request may leave at 0 for the server's `default`; above `max`
/// it is INVALID_ARGUMENT naming the request's `field` and the
/// configuration key `limit` that sets `max`.
pub fn amount(field: &str, value: u32, default: u32, max: u32, limit: &str) -> Result<u32> {
    match value {
        0 => Ok(default.min(max)),
        n if n > max => Err(Error::field(
            Reason::ValueOutOfRange,
            field,
            format!("{field} is {n}; at most {max} are allowed ({limit})"),
        )),
        n => Ok(n),
    }
}

/// Longest group name: RabbitMQ's limit on consumer and offset references.
pub const GROUP_NAME_MAX_BYTES: usize = 255;

/// A consumer group name, used by the broker as the single active consumer
/// name and the offset reference.
pub fn group_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::field(
            Reason::FieldRequired,
            "group",
            "group must not be empty",
        ));
    }
    if name.len() > GROUP_NAME_MAX_BYTES {
        return Err(Error::field(
            Reason::NameTooLong,
            "group",
            format!(
                "group is {} bytes long; at most {GROUP_NAME_MAX_BYTES} bytes are allowed",
                name.len()
            ),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::field(
            Reason::NameInvalid,
            "group",
            format!("group {name:?} contains the control character {c:?}"),
        ));
    }
    // A group's offsets are kept under its name, beside partlog's own
    // settings.
    if name.starts_with(RESERVED_REFERENCE_PREFIX) {
        return Err(Error::field(
            Reason::NameReserved,
            "group",
            format!(
                "group {name:?} starts with {RESERVED_REFERENCE_PREFIX:?}, which partlog reserves \
             for the settings it keeps on the broker"
            ),
        ));
    }
    Ok(())
}

/// A partition index within a stream of `count` partitions.
pub fn partition(index: u32, count: usize, stream: &str) -> Result<usize> {
    let index = index as usize;
    if index >= count {
        return Err(Error::field(
            Reason::PartitionOutOfRange,
            "partition",
            format!(
                "partition {index} is out of range: stream {stream:?} has partitions 0..={}",
                count.saturating_sub(1)
            ),
        ));
    }
    Ok(index)
}

/// Partition indexes named by a request: each within the stream, none
/// twice. An empty list means all partitions.
pub fn partition_selection(selected: &[u32], count: usize, stream: &str) -> Result<Vec<u32>> {
    if selected.is_empty() {
        return Ok((0..count as u32).collect());
    }
    let mut seen = vec![false; count];
    for &p in selected {
        let slot = &mut seen[partition(p, count, stream)?];
        if std::mem::replace(slot, true) {
            return Err(Error::field(
                Reason::PartitionRepeated,
                "partitions",
                format!("partition {p} is named twice"),
            ));
        }
    }
    Ok(selected.to_vec())
}

pub fn partition_count(partitions: u32) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(Error::field(
            Reason::ValueOutOfRange,
            "partitions",
            format!("partitions is {partitions}; a stream has 1 to {MAX_PARTITIONS} partitions"),
        ));
    }
    Ok(())
}

/// Longest producer id; it names the broker's deduplicating publishers,
/// whose references RabbitMQ limits to 255 bytes.
pub const PRODUCER_ID_MAX_BYTES: usize = 200;
/// What the producer ids of sources begin with (`crate::log`'s source
/// module); no client's may.
pub const SOURCE_PRODUCER_PREFIX: &str = "source:";

/// A producer id and the sequences of its records: at least 1, strictly
/// increasing; or no sequences at all without a producer id.
pub fn producer_sequences(producer_id: Option<&str>, records: &[NewRecord]) -> Result<()> {
    let Some(producer_id) = producer_id else {
        return match records.iter().position(|r| r.sequence.is_some()) {
            Some(index) => Err(Error::field(
                Reason::SequenceInvalid,
                format!("records[{index}].sequence"),
                format!(
                    "records[{index}].sequence is set but producer_id is empty; sequences belong \
                 to a producer"
                ),
            )),
            None => Ok(()),
        };
    };
    if producer_id.len() > PRODUCER_ID_MAX_BYTES {
        return Err(Error::field(
            Reason::NameTooLong,
            "producer_id",
            format!(
                "producer_id is {} bytes long; at most {PRODUCER_ID_MAX_BYTES} are allowed",
                producer_id.len()
            ),
        ));
    }
    if let Some(c) = producer_id.chars().find(|c| c.is_control()) {
        return Err(Error::field(
            Reason::NameInvalid,
            "producer_id",
            format!("producer_id {producer_id:?} contains the control character {c:?}"),
        ));
    }
    if producer_id.starts_with(SOURCE_PRODUCER_PREFIX) {
        return Err(Error::field(
            Reason::NameReserved,
            "producer_id",
            format!(
            "producer_id {producer_id:?} begins with {SOURCE_PRODUCER_PREFIX:?}, which partlog \
             keeps for the producers of sources (PublishRequest.source)"
        ),
        ));
    }
    let mut previous = 0;
    for (index, record) in records.iter().enumerate() {
        match record.sequence {
            None => {
                return Err(Error::field(
                    Reason::SequenceInvalid,
                    format!("records[{index}].sequence"),
                    format!(
                        "records[{index}].sequence is missing; with a producer_id every record \
                     carries a sequence of at least 1"
                    ),
                ))
            }
            Some(sequence) if sequence <= previous => {
                return Err(Error::field(
                    Reason::SequenceInvalid,
                    format!("records[{index}].sequence"),
                    format!(
                        "records[{index}].sequence is {sequence}, not above the previous record's \
                     {previous}; a producer's sequences strictly increase"
                    ),
                ))
            }
            Some(sequence) => previous = sequence,
        }
    }
    Ok(())
}

/// A Publish batch: its size against the limits, then every record.
/// Nothing of an invalid batch is written.
pub fn publish_batch(records: &[NewRecord], limits: &Limits) -> Result<()> {
    if records.is_empty() {
        return Err(Error::field(
            Reason::FieldRequired,
            "records",
            "records is empty; a Publish carries at least one record",
        ));
    }
    if records.len() as u64 > limits.max_batch_records {
        return Err(Error::new(
            Reason::BatchTooLarge,
            format!(
                "the batch has {} records; at most {} are allowed per Publish \
             (limits.max_batch_records)",
                records.len(),
                limits.max_batch_records
            ),
        ));
    }
    let bytes: u64 = records.iter().map(NewRecord::size).sum();
    if bytes > limits.max_batch_bytes {
        return Err(Error::new(
            Reason::BatchTooLarge,
            format!(
            "the batch holds {bytes} bytes of keys, values and headers; at most {} are allowed \
             per Publish (limits.max_batch_bytes)",
            limits.max_batch_bytes
        ),
        ));
    }
    for (index, record) in records.iter().enumerate() {
        publish_record(index, record, limits)?;
    }
    Ok(())
}

fn publish_record(index: usize, record: &NewRecord, limits: &Limits) -> Result<()> {
    if record.value.len() as u64 > limits.max_value_bytes {
        return Err(Error::field(
            Reason::ValueTooLarge,
            format!("records[{index}].value"),
            format!(
            "records[{index}].value is {} bytes; at most {} are allowed (limits.max_value_bytes)",
            record.value.len(),
            limits.max_value_bytes
        ),
        ));
    }
    if let Some(filter) = record.filter.as_deref() {
        if filter.len() > MAX_FILTER_BYTES {
            return Err(Error::field(
                Reason::FilterInvalid,
                format!("records[{index}].filter"),
                format!(
                    "records[{index}].filter is {} bytes; at most {MAX_FILTER_BYTES} are allowed",
                    filter.len()
                ),
            ));
        }
    }
    // Keys and headers share the frame headroom above the value limit.
    let extras = record.size() - record.value.len() as u64;
    if extras > MAX_KEY_AND_HEADER_BYTES {
        return Err(Error::field(
            Reason::KeyTooLarge,
            format!("records[{index}]"),
            format!(
                "records[{index}] has {extras} bytes of key and headers; at most \
             {MAX_KEY_AND_HEADER_BYTES} are allowed"
            ),
        ));
    }
    for name in record.headers.keys() {
        if name.is_empty() {
            return Err(Error::field(
                Reason::HeaderInvalid,
                format!("records[{index}].headers"),
                format!("records[{index}].headers has an empty header name"),
            ));
        }
        if name == EPOCH_PROPERTY {
            return Err(Error::field(
                Reason::HeaderInvalid,
                format!("records[{index}].headers"),
                format!(
                    "records[{index}].headers uses {name:?}, which partlog reserves for the epoch                      markers of resized streams"
                ),
            ));
        }
        if name == KEY_PROPERTY || name == FILTER_PROPERTY {
            let field = if name == KEY_PROPERTY {
                "key"
            } else {
                "filter"
            };
            return Err(Error::field(
                Reason::HeaderInvalid,
                format!("records[{index}].headers"),
                format!(
                    "records[{index}].headers uses {name:?}, which is reserved for the record's \
                 {field}; set its {field} field instead"
                ),
            ));
        }
    }
    Ok(())
}

/// Longest filter value: the broker hashes it into each chunk's Bloom
/// filter, and a short value (a tenant, a region, an event type) is what
/// filtering is for.
pub const MAX_FILTER_BYTES: usize = 255;

/// Most filter values one read names: each is a property of the broker
/// subscription and a Bloom filter lookup per chunk; a reader that wants
/// more values than this wants most of the stream.
pub const MAX_READ_FILTERS: usize = 64;

/// The filter of a read (`Read`, `Subscribe`, `Consume`) from its request
/// fields, named `{field}` and `include_unfiltered` beside it: `None`
/// without values (every record is read). Values are 1..=255 bytes, at
/// most [`MAX_READ_FILTERS`]; a value named twice counts once.
pub fn record_filter(
    field: &str,
    values: Vec<String>,
    include_unfiltered: bool,
) -> Result<Option<RecordFilter>> {
    if values.is_empty() {
        if include_unfiltered {
            return Err(Error::field(
                Reason::FilterInvalid,
                "include_unfiltered",
                format!(
                    "include_unfiltered is set but {field} is empty: without filter values every \
                 record is read; name the values to read besides unfiltered records"
                ),
            ));
        }
        return Ok(None);
    }
    if values.len() > MAX_READ_FILTERS {
        return Err(Error::field(
            Reason::FilterInvalid,
            field,
            format!(
                "{field} names {} values; at most {MAX_READ_FILTERS} are allowed",
                values.len()
            ),
        ));
    }
    for (index, value) in values.iter().enumerate() {
        if value.is_empty() {
            return Err(Error::field(
                Reason::FilterInvalid,
                format!("{field}[{index}]"),
                format!(
                    "{field}[{index}] is empty; records without a filter value are read with \
                 include_unfiltered"
                ),
            ));
        }
        if value.len() > MAX_FILTER_BYTES {
            return Err(Error::field(
                Reason::FilterInvalid,
                format!("{field}[{index}]"),
                format!(
                    "{field}[{index}] is {} bytes; filter values are at most {MAX_FILTER_BYTES}",
                    value.len()
                ),
            ));
        }
    }
    Ok(Some(RecordFilter::new(
        values.into_iter().collect(),
        include_unfiltered,
    )))
}

/// Keys and headers of one record together; well inside the frame headroom
/// that the configuration keeps above `limits.max_value_bytes`.
pub const MAX_KEY_AND_HEADER_BYTES: u64 = 32 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use std::collections::BTreeMap;

    fn record(key: &str, value_len: usize) -> NewRecord {
        NewRecord {
            key: key.into(),
            value: vec![7; value_len].into(),
            headers: BTreeMap::new(),
            sequence: None,
            filter: None,
        }
    }

    fn sequenced(sequences: &[Option<u64>]) -> Vec<NewRecord> {
        sequences
            .iter()
            .map(|s| NewRecord {
                sequence: *s,
                ..record("k", 1)
            })
            .collect()
    }

    #[test]
    fn producer_sequences_rules() {
        assert!(producer_sequences(None, &sequenced(&[None, None])).is_ok());
        assert!(producer_sequences(Some("p"), &sequenced(&[Some(1), Some(5)])).is_ok());
        for (producer, sequences) in [
            (None, vec![Some(1)]),
            (Some("p"), vec![Some(1), None]),
            (Some("p"), vec![Some(0)]),
            (Some("p"), vec![Some(3), Some(3)]),
            (Some("p"), vec![Some(3), Some(2)]),
            (Some("p\n"), vec![Some(1)]),
            (Some("source:1234"), vec![Some(1)]),
        ] {
            assert!(
                matches!(
                    producer_sequences(producer, &sequenced(&sequences)),
                    Err(ref e) if e.kind() == Kind::InvalidArgument
                ),
                "{producer:?} {sequences:?}"
            );
        }
        let long = "p".repeat(PRODUCER_ID_MAX_BYTES + 1);
        assert!(producer_sequences(Some(&long), &sequenced(&[Some(1)])).is_err());
    }

    #[test]
    fn stream_names() {
        assert!(stream_name("orders").is_ok());
        assert!(stream_name("orders.eu-west_1").is_ok());
        assert!(stream_name("заказы").is_ok());
        assert!(stream_name(&"a".repeat(STREAM_NAME_MAX_BYTES)).is_ok());
        for bad in ["", "amq.orders", "tab\there", "nul\0"] {
            assert!(
                matches!(stream_name(bad), Err(ref e) if e.kind() == Kind::InvalidArgument),
                "{bad:?}"
            );
        }
        let long = "a".repeat(STREAM_NAME_MAX_BYTES + 1);
        let err = stream_name(&long).unwrap_err();
        assert!(err.message().contains("255"), "{err}");
        // The longest partition name stays within RabbitMQ's limit.
        let longest_partition = format!(
            "{}-{}",
            "a".repeat(STREAM_NAME_MAX_BYTES),
            MAX_PARTITIONS - 1
        );
        assert_eq!(longest_partition.len(), RABBITMQ_NAME_MAX_BYTES);
    }

    #[test]
    fn created_stream_names_leave_room_for_the_data_directory() {
        // (partitions, longest name) on the default vhost "/": the partition
        // index takes 1, 2 or 3 digits. 231 and 232 were probed on RabbitMQ
        // 4.0 with single-digit indexes: 232 fails with enametoolong.
        for (partitions, longest) in [(1, 231), (10, 231), (11, 230), (101, 229), (256, 229)] {
            assert_eq!(max_created_stream_name_chars(partitions, "/"), longest);
            assert!(created_stream_name(&"a".repeat(longest), partitions, "/").is_ok());
            let err = created_stream_name(&"a".repeat(longest + 1), partitions, "/").unwrap_err();
            assert!(err.kind() == Kind::InvalidArgument, "{err}");
            assert!(
                err.message().contains(&format!("at most {longest}")),
                "{err}"
            );
        }
        // A longer vhost takes its length off the name.
        assert_eq!(max_created_stream_name_chars(3, "production"), 222);
        // Characters, not bytes: each becomes one byte of the directory
        // name (250 bytes here, within RabbitMQ's 255-byte name limit).
        assert!(created_stream_name(&"é".repeat(125), 3, "/").is_ok());
        // The general rules still apply.
        assert!(created_stream_name("amq.x", 3, "/").is_err());
    }

    #[test]
    fn amounts_default_at_zero_and_stop_at_the_limit() {
        assert_eq!(amount("window", 0, 100, 1000, "limits.max_window"), Ok(100));
        assert_eq!(
            amount("window", 0, 5000, 1000, "limits.max_window"),
            Ok(1000)
        );
        assert_eq!(
            amount("window", 1000, 100, 1000, "limits.max_window"),
            Ok(1000)
        );
        let err = amount("window", 1001, 100, 1000, "limits.max_window").unwrap_err();
        assert_eq!(
            err.message(),
            "window is 1001; at most 1000 are allowed (limits.max_window)"
        );
    }

    #[test]
    fn group_names() {
        assert!(group_name("billing").is_ok());
        assert!(group_name(&"g".repeat(GROUP_NAME_MAX_BYTES)).is_ok());
        assert!(group_name("").is_err());
        assert!(group_name(&"g".repeat(GROUP_NAME_MAX_BYTES + 1)).is_err());
        assert!(group_name("a\nb").is_err());
        assert!(group_name("__partlog.max_chunk_records").is_err());
        assert!(group_name("__partlogs").is_ok());
    }

    #[test]
    fn partition_selections() {
        assert_eq!(partition_selection(&[], 3, "s").unwrap(), vec![0, 1, 2]);
        assert_eq!(partition_selection(&[2, 0], 3, "s").unwrap(), vec![2, 0]);
        assert!(partition_selection(&[3], 3, "s").is_err());
        assert!(partition_selection(&[1, 1], 3, "s").is_err());
    }

    #[test]
    fn partition_counts() {
        assert!(partition_count(1).is_ok());
        assert!(partition_count(256).is_ok());
        assert!(partition_count(0).is_err());
        assert!(partition_count(257).is_err());
    }

    #[test]
    fn batch_limits() {
        let limits = Limits {
            max_value_bytes: 10,
            max_batch_records: 3,
            max_batch_bytes: 25,
            ..Limits::default()
        };
        assert!(publish_batch(&[record("a", 10), record("", 0)], &limits).is_ok());
        assert!(matches!(
            publish_batch(&[], &limits),
            Err(ref e) if e.kind() == Kind::InvalidArgument
        ));
        assert!(matches!(
            publish_batch(&vec![record("", 1); 4], &limits),
            Err(ref e) if e.kind() == Kind::ResourceExhausted
        ));
        assert!(matches!(
            publish_batch(&vec![record("", 9); 3], &limits),
            Err(ref e) if e.kind() == Kind::ResourceExhausted
        ));
        let err = publish_batch(&[record("", 1), record("", 11)], &limits).unwrap_err();
        assert!(err.message().starts_with("records[1].value"), "{err}");
    }

    #[test]
    fn header_rules() {
        let limits = Limits::default();
        for (reserved, field) in [(KEY_PROPERTY, "key"), (FILTER_PROPERTY, "filter")] {
            let mut r = record("k", 1);
            r.headers.insert(reserved.into(), "x".into());
            let err = publish_batch(&[r], &limits).unwrap_err();
            assert!(
                err.message()
                    .ends_with(&format!("set its {field} field instead")),
                "{err}"
            );
        }
        let mut r = record("k", 1);
        r.filter = Some("f".repeat(MAX_FILTER_BYTES + 1));
        let err = publish_batch(&[r.clone()], &limits).unwrap_err();
        assert!(
            err.message().starts_with("records[0].filter is 256 bytes"),
            "{err}"
        );
        r.filter = Some("f".repeat(MAX_FILTER_BYTES));
        publish_batch(&[r], &limits).unwrap();
        let mut r = record("k", 1);
        r.headers.insert(String::new(), "x".into());
        assert!(matches!(
            publish_batch(&[r], &limits),
            Err(ref e) if e.kind() == Kind::InvalidArgument
        ));
        let mut r = record("k", 1);
        r.headers
            .insert("big".into(), "x".repeat(MAX_KEY_AND_HEADER_BYTES as usize));
        assert!(matches!(
            publish_batch(&[r], &limits),
            Err(ref e) if e.kind() == Kind::InvalidArgument
        ));
    }

    #[test]
    fn read_filters_are_bounded_and_name_the_field() {
        let values = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(record_filter("filters", vec![], false).unwrap(), None);
        let message = |r: Result<Option<RecordFilter>>| r.unwrap_err().to_string();
        assert!(message(record_filter("filters", vec![], true)).contains("filters is empty"));
        assert!(
            message(record_filter("open.filters", values(&["eu", ""]), false))
                .contains("open.filters[1] is empty")
        );
        let long = "f".repeat(MAX_FILTER_BYTES + 1);
        assert!(message(record_filter("filters", vec![long], false))
            .contains("filters[0] is 256 bytes"));
        let many = (0..=MAX_READ_FILTERS).map(|i| i.to_string()).collect();
        assert!(message(record_filter("filters", many, false)).contains("at most 64"));
        let filter = record_filter("filters", values(&["us", "eu", "us"]), true)
            .unwrap()
            .unwrap();
        assert_eq!(filter.values().collect::<Vec<_>>(), ["eu", "us"]);
        assert!(filter.include_unfiltered());
    }
}
