//! A chunk as the broker delivers it, read from its bytes.
//!
//! A delivery carries one osiris chunk: a 48-byte header (record count,
//! timestamp, first offset, the CRC-32 and length of its data), the chunk's
//! Bloom filter (skipped), then its entries. An entry is a record, or a
//! sub-entry batch of several records, uncompressed or compressed with one
//! of the [`Codec`]s. Records take consecutive offsets from the first.
//!
//! Everything is checked before it is used. A delivery whose header cannot
//! be read is refused by [`Chunk::parse`]; a chunk whose header reads but
//! whose data does not match its checksum, whose entries run past it, or
//! whose batches do not decompress is still a chunk — its offsets are known
//! (a reader can say where the damage is and where reading can go on) —
//! whose records are DATA_LOSS ([`data_loss`]). The records of a readable
//! chunk are slices of the delivery (or of a batch's decompressed bytes),
//! not copies.

use std::ops::RangeInclusive;

use bytes::Bytes;

use super::compression::Codec;
use super::wire::Reader;
use crate::broker::Partition;
use crate::error::{Error, Reason, Result};
use crate::record::StoredRecord;
use crate::telemetry;

/// One chunk as delivered: consecutive offsets from `first_offset`, each
/// record still the bytes of its message.
#[derive(Debug)]
pub struct Chunk {
    pub first_offset: u64,
    /// When the broker wrote the chunk, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Offset of the chunk's last record (`parse` checked that it fits).
    last_offset: u64,
    /// Bytes of the delivery.
    size: usize,
    /// Each record's message, in offset order; or why they cannot be read.
    entries: std::result::Result<Vec<Bytes>, String>,
}

/// Bytes of an osiris chunk header.
const CHUNK_HEADER: usize = 48;
/// The chunk type of user records (the others, offset tracking, are never
/// delivered).
const USER_CHUNK: u8 = 0;
/// The top bit of an entry's first byte marks a sub-entry batch.
const SUB_BATCH: u8 = 0x80;

impl Chunk {
    /// Offset of the chunk's last record.
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }

    /// Bytes of the delivery it came in.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The chunk's records from offset `from` on, as records of
    /// `partition`; DATA_LOSS when they cannot be read.
    pub fn records<'a>(
        &'a self,
        partition: &Partition,
        from: u64,
    ) -> Result<impl Iterator<Item = StoredRecord> + 'a> {
        let entries = self.entries.as_ref().map_err(|why| {
            let offsets = self.first_offset..=self.last_offset;
            data_loss(&partition.super_stream, partition.index, Some(offsets), why)
        })?;
        let skip = from.saturating_sub(self.first_offset);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let (index, timestamp_ms) = (partition.index, self.timestamp_ms);
        Ok((self.first_offset..)
            .zip(entries)
            .skip(skip)
            .map(move |(offset, message)| {
                StoredRecord::decode(message.clone(), index, offset, timestamp_ms)
            }))
    }

    /// Reads a chunk as a delivery carries it (after the subscription id);
    /// an error says why its header cannot be read.
    pub fn parse(delivery: Bytes) -> std::result::Result<Chunk, String> {
        let size = delivery.len();
        let mut header = Reader::new(delivery);
        if header.remaining() < CHUNK_HEADER {
            return Err("the delivery is shorter than a chunk header".into());
        }
        let field = |e: Error| e.message().to_owned();
        let _magic_version = header.u8().map_err(field)?;
        let chunk_type = header.u8().map_err(field)?;
        let _entries = header.u16().map_err(field)?;
        let records = header.u32().map_err(field)?;
        let timestamp_ms = header.i64().map_err(field)?;
        let _epoch = header.u64().map_err(field)?;
        let first_offset = header.u64().map_err(field)?;
        let crc = header.u32().map_err(field)?;
        let data_length = header.u32().map_err(field)?;
        // The Bloom filter of the chunk's filter values and the trailer
        // (tracking data) are on disk only: a delivery leaves them out
        // although the header gives their sizes (osiris's
        // select_amount_to_send for data consumers). The records start
        // right after the header.
        let _trailer_length = header.u32().map_err(field)?;
        let _filter_size = header.u8().map_err(field)?;
        header.take(3).map_err(field)?; // reserved
        let last_offset = u64::from(records)
            .checked_sub(1)
            .and_then(|more| first_offset.checked_add(more))
            .ok_or_else(|| {
                format!("its header claims {records} records from offset {first_offset}")
            })?;
        let entries = (|| {
            if chunk_type != USER_CHUNK {
                return Err(format!("it is of chunk type {chunk_type}, not records"));
            }
            let data = header
                .take(data_length as usize)
                .map_err(|_| "its data runs past the delivery")?;
            let computed = crc32fast::hash(&data);
            if computed != crc {
                return Err(format!(
                    "its data does not match its checksum (CRC-32 {computed:#010x}, the header \
                     says {crc:#010x})"
                ));
            }
            entries(data, records)
        })();
        Ok(Chunk {
            size,
            first_offset,
            timestamp_ms,
            last_offset,
            entries,
        })
    }
}

/// DATA_LOSS for records of `stream` partition `index` that partlog cannot
/// read (at `offsets`, when known), counted, with what a reader can do
/// about it. Reading on silently would skip them.
pub fn data_loss(
    stream: &str,
    index: u32,
    offsets: Option<RangeInclusive<u64>>,
    why: &str,
) -> Error {
    telemetry::stream(stream).chunk_unreadable();
    let Some(offsets) = offsets else {
        return Error::new(
            Reason::RecordsUnreadable,
            format!(
                "stream {stream:?} partition {index}: the broker delivered a chunk partlog cannot \
             read ({why}); see \"Unreadable records\" in partlog's README"
            ),
        );
    };
    let (first, last) = (offsets.start(), offsets.end());
    let next = last.saturating_add(1);
    Error::new(
        Reason::RecordsUnreadable,
        format!(
        "stream {stream:?} partition {index}: the records at offsets {first} to {last} cannot be \
         read ({why}); read on from offset {next}, or move a consumer group past them with \
         ResetOffsets (partlog reset {stream} --group GROUP --partitions {index} --to \
         offset:{next})"
    ),
    )
}

/// The records of a chunk's data: exactly `records` of them.
fn entries(data: Bytes, records: u32) -> Result<Vec<Bytes>, String> {
    // Every record takes at least 4 bytes of data: a lying count cannot
    // reserve more than the data.
    let mut entries = Vec::with_capacity((records as usize).min(data.len() / 4));
    let mut data = Reader::new(data);
    while data.remaining() > 0 {
        if entries.len() >= records as usize {
            return Err(format!(
                "its data holds more than the {records} records its header claims"
            ));
        }
        let first = data.peek_u8().ok_or("an empty entry")?;
        if first & SUB_BATCH == 0 {
            let size = data.u32().map_err(|_| "a truncated entry header")?;
            let record = data
                .take(size as usize)
                .map_err(|_| format!("an entry of {size} bytes runs past the chunk's data"))?;
            entries.push(record);
            continue;
        }
        // Sub-entry batch: 1 bit flag, 3 bits codec, 4 reserved; the record
        // count, the uncompressed and the stored length.
        let truncated = |_| "a truncated sub-entry batch header".to_string();
        let flags = data.u8().map_err(truncated)?;
        let in_batch = data.u16().map_err(truncated)?;
        let uncompressed = data.u32().map_err(truncated)?;
        let stored = data.u32().map_err(truncated)?;
        let code = (flags >> 4) & 0b111;
        let codec = Codec::of(code).ok_or_else(|| {
            format!("a sub-entry batch uses compression code {code}, which no client defines")
        })?;
        let batch = data.take(stored as usize).map_err(|_| {
            format!("a sub-entry batch of {stored} bytes runs past the chunk's data")
        })?;
        let batch = codec
            .decode(batch, uncompressed)
            .map_err(|why| format!("a {} sub-entry batch cannot be read: {why}", codec.name()))?;
        let mut batch = Reader::new(batch);
        for _ in 0..in_batch {
            let size = batch.u32().map_err(|_| {
                format!(
                    "a {} sub-entry batch holds fewer than its {in_batch} records",
                    codec.name()
                )
            })?;
            let record = batch.take(size as usize).map_err(|_| {
                format!(
                    "a record of {size} bytes runs past its {} sub-entry batch",
                    codec.name()
                )
            })?;
            entries.push(record);
        }
    }
    if entries.len() != records as usize {
        return Err(format!(
            "its data holds {} records, its header claims {records}",
            entries.len()
        ));
    }
    Ok(entries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::broker::protocol::compression;
    use crate::broker::protocol::wire::Body;
    use crate::error::Kind;

    /// A chunk as a delivery carries it: the header (which gives the size of
    /// a Bloom filter of `filter_size` bytes and of a trailer, both left
    /// out) and entries holding `records` records; the checksum is right.
    pub fn chunk(
        first_offset: u64,
        timestamp: i64,
        filter_size: u8,
        records: u32,
        entries: &[Vec<u8>],
    ) -> Bytes {
        let data = entries.concat();
        let mut chunk = Body::default()
            .u8(0x50)
            .u8(USER_CHUNK)
            .u16(entries.len() as u16)
            .u32(records)
            .u64(timestamp as u64)
            .u64(1)
            .u64(first_offset)
            .u32(crc32fast::hash(&data))
            .u32(data.len() as u32)
            .u32(if filter_size > 0 { 64 } else { 0 })
            .u8(filter_size)
            .u8(0)
            .u16(0);
        chunk.0.extend_from_slice(&data);
        chunk.0.into()
    }

    /// A simple entry: size and bytes.
    pub fn simple(record: &[u8]) -> Vec<u8> {
        let mut entry = (record.len() as u32).to_be_bytes().to_vec();
        entry.extend_from_slice(record);
        entry
    }

    /// A sub-entry batch of `records`, compressed with `codec` as the
    /// native clients compress.
    pub fn batch(codec: Codec, records: &[&[u8]]) -> Vec<u8> {
        let plain: Vec<u8> = records.iter().flat_map(|r| simple(r)).collect();
        let stored = compression::tests::compress(codec, &plain);
        let code = codec as u8;
        let mut entry = Body::default()
            .u8(SUB_BATCH | code << 4)
            .u16(records.len() as u16)
            .u32(plain.len() as u32)
            .u32(stored.len() as u32);
        entry.0.extend_from_slice(&stored);
        entry.0
    }

    /// Partition 3 of stream "orders".
    pub fn partition() -> Partition {
        let stream = crate::broker::SuperStream::new(
            "orders",
            (0..4).map(|i| format!("orders-{i}")).collect(),
        );
        stream.partitions.into_iter().nth(3).unwrap()
    }

    /// The records of a chunk read from `bytes`, as (offset, value).
    fn read(bytes: Bytes) -> Result<Vec<(u64, Bytes)>> {
        let chunk = Chunk::parse(bytes).unwrap();
        let records = chunk.records(&partition(), 0)?;
        Ok(records.map(|r| (r.offset, r.value)).collect())
    }

    fn data_loss_message(result: Result<Vec<(u64, Bytes)>>) -> String {
        match result {
            Err(e) if e.kind() == Kind::DataLoss => e.message().to_owned(),
            other => panic!("expected DATA_LOSS, got {other:?}"),
        }
    }

    #[test]
    fn a_chunk_yields_its_records_with_their_offsets() {
        let bytes = chunk(
            40,
            1234,
            16,
            3,
            &[simple(b"a"), simple(b"bb"), simple(b"ccc")],
        );
        let chunk = Chunk::parse(bytes).unwrap();
        assert_eq!(
            (chunk.first_offset, chunk.last_offset(), chunk.timestamp_ms),
            (40, 42, 1234)
        );
        let records: Vec<_> = chunk.records(&partition(), 41).unwrap().collect();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].offset, records[0].partition), (41, 3));
        // Not AMQP: the bytes are the value.
        assert_eq!(records[1].value, b"ccc".as_slice());
    }

    #[test]
    fn sub_entry_batches_of_every_codec_are_read() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let entries = [batch(codec, &[b"x", b"yy"]), simple(b"z")];
            let read =
                read(chunk(7, 0, 0, 3, &entries)).unwrap_or_else(|e| panic!("{codec:?}: {e:?}"));
            let read: Vec<_> = read.iter().map(|(o, v)| (*o, v.as_ref())).collect();
            assert_eq!(read, [(7, &b"x"[..]), (8, b"yy"), (9, b"z")], "{codec:?}");
        }
    }

    #[test]
    fn damage_is_data_loss_naming_stream_partition_and_offsets() {
        let good = chunk(100, 0, 0, 2, &[simple(b"abc"), simple(b"de")]);
        let damaged = Chunk::parse(damaged_bytes(&good)).unwrap();
        assert_eq!(damaged.last_offset(), 101, "its offsets are known");
        let message = data_loss_message(read(damaged_bytes(&good)));
        assert!(message.contains("checksum"), "{message}");
        assert!(
            message.starts_with("stream \"orders\" partition 3: the records at offsets 100 to 101"),
            "{message}"
        );
        assert!(message.contains("--to offset:102"), "{message}");

        let miscounted = chunk(100, 0, 0, 3, &[simple(b"abc"), simple(b"de")]);
        let message = data_loss_message(read(miscounted));
        assert!(message.contains("header claims 3"), "{message}");

        let mut gzip = batch(Codec::Gzip, &[b"one", b"two"]);
        let at = gzip.len() - 12;
        gzip[at] ^= 0xff;
        let message = data_loss_message(read(chunk(5, 0, 0, 2, &[gzip])));
        assert!(message.contains("offsets 5 to 6"), "{message}");
        assert!(
            message.contains("gzip sub-entry batch cannot be read"),
            "{message}"
        );

        assert!(Chunk::parse(good.slice(..20)).is_err(), "no header");
    }

    /// `good` with the last bit of its data flipped.
    fn damaged_bytes(good: &Bytes) -> Bytes {
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        flipped.into()
    }

    /// A sub-entry header cut after its sixth byte panicked the reading
    /// task before it was read field by field.
    #[test]
    fn a_sub_entry_header_cut_anywhere_is_data_loss() {
        let whole = batch(Codec::None, &[b"abc"]);
        for cut in 1..whole.len() {
            let message = data_loss_message(read(chunk(0, 0, 0, 1, &[whole[..cut].to_vec()])));
            assert!(
                message.contains("offsets 0 to 0"),
                "cut at {cut}: {message}"
            );
        }
    }

    #[test]
    fn offsets_that_overflow_are_refused() {
        let why =
            Chunk::parse(chunk(u64::MAX, 0, 0, 2, &[simple(b"a"), simple(b"b")])).unwrap_err();
        assert!(why.contains("claims 2 records"), "{why}");
        let why = Chunk::parse(chunk(0, 0, 0, 0, &[])).unwrap_err();
        assert!(why.contains("claims 0 records"), "{why}");
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::generative::{check, damaged};

        /// An entry of a chunk: a record, or a batch of records.
        #[derive(Debug, Clone)]
        enum Entry {
            Simple(Vec<u8>),
            Batch(Codec, Vec<Vec<u8>>),
        }

        fn entry() -> impl Strategy<Value = Entry> {
            let record = || prop::collection::vec(any::<u8>(), 0..40);
            let codec = prop_oneof![
                Just(Codec::None),
                Just(Codec::Gzip),
                Just(Codec::Snappy),
                Just(Codec::Lz4),
                Just(Codec::Zstd)
            ];
            prop_oneof![
                record().prop_map(Entry::Simple),
                (codec, prop::collection::vec(record(), 1..5))
                    .prop_map(|(codec, records)| Entry::Batch(codec, records)),
            ]
        }

        /// A chunk's model: first offset, Bloom filter size, entries.
        fn model() -> impl Strategy<Value = (u64, u8, Vec<Entry>)> {
            (
                0u64..1 << 40,
                prop_oneof![Just(0u8), 16u8..=255],
                prop::collection::vec(entry(), 1..6),
            )
        }

        /// The model's chunk as a delivery carries it, and its records.
        fn encode((first, filter_size, entries): &(u64, u8, Vec<Entry>)) -> (Bytes, Vec<Vec<u8>>) {
            let mut records = Vec::new();
            let encoded: Vec<Vec<u8>> = entries
                .iter()
                .map(|entry| match entry {
                    Entry::Simple(record) => {
                        records.push(record.clone());
                        simple(record)
                    }
                    Entry::Batch(codec, batch) => {
                        records.extend(batch.iter().cloned());
                        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                        super::batch(*codec, &refs)
                    }
                })
                .collect();
            let bytes = chunk(*first, 1, *filter_size, records.len() as u32, &encoded);
            (bytes, records)
        }

        #[test]
        fn a_chunk_reads_back_as_its_model() {
            check(model(), |model| {
                let (bytes, records) = encode(&model);
                let chunk = Chunk::parse(bytes).map_err(TestCaseError::fail)?;
                let read: Vec<_> = chunk
                    .records(&partition(), 0)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .collect();
                let offsets: Vec<u64> = read.iter().map(|r| r.offset).collect();
                let expected: Vec<u64> = (model.0..).take(records.len()).collect();
                prop_assert_eq!(offsets, expected);
                let values: Vec<&[u8]> = read.iter().map(|r| r.value.as_ref()).collect();
                let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                // Bytes that are not AMQP are the value, whole.
                prop_assert_eq!(values, records);
                Ok(())
            });
        }

        /// A model's chunk whose data (its entries) was damaged, with the
        /// checksum and length of the damaged data: the entries are read.
        fn damaged_entries() -> impl Strategy<Value = Vec<u8>> {
            let entries = model().prop_map(|model| {
                let (bytes, records) = encode(&model);
                (bytes.slice(CHUNK_HEADER..).to_vec(), records.len())
            });
            entries.prop_flat_map(|(data, records)| {
                damaged(Just(data))
                    .prop_map(move |data| chunk(0, 1, 0, records as u32, &[data]).to_vec())
            })
        }

        #[test]
        fn a_chunk_with_damaged_entries_is_data_loss_or_read_never_a_panic() {
            check(damaged_entries(), |bytes| {
                let chunk = Chunk::parse(bytes.into()).map_err(TestCaseError::fail)?;
                if let Err(e) = chunk.records(&partition(), 0) {
                    prop_assert!(e.kind() == Kind::DataLoss, "{e:?}");
                }
                Ok(())
            });
        }

        #[test]
        fn a_damaged_chunk_is_refused_or_read_never_a_panic() {
            check(
                damaged(model().prop_map(|m| encode(&m).0.to_vec())),
                |bytes| {
                    match Chunk::parse(bytes.into()) {
                        Err(why) => prop_assert!(!why.is_empty()),
                        Ok(chunk) => match chunk.records(&partition(), 0) {
                            Ok(records) => {
                                let count = records.count() as u64;
                                prop_assert!(count <= chunk.last_offset() - chunk.first_offset + 1);
                            }
                            Err(e) => prop_assert!(e.kind() == Kind::DataLoss, "{e:?}"),
                        },
                    }
                    Ok(())
                },
            );
        }
    }
}
