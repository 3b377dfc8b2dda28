//! Key → partition routing, identical to the hash routing strategy of
//! RabbitMQ's Java, Go and Rust stream clients.
//!
//! A keyed record goes to `partitions[murmur3_x86_32(utf8(key), 104729) % N]`,
//! the hash taken as unsigned and the partitions in the order the broker
//! reports them for the super stream. Records without a key are spread
//! round-robin by [`RoundRobin`].

use std::io::Cursor;
use std::sync::atomic::{AtomicU32, Ordering};

/// Seed of the native clients' `HashRoutingMurmurStrategy`.
pub const MURMUR3_SEED: u32 = 104_729;

/// The murmur3 x86_32 hash of the key's UTF-8 bytes with the native seed.
pub fn key_hash(key: &str) -> u32 {
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut Cursor::new(key.as_bytes()), MURMUR3_SEED)
        .expect("hashing an in-memory buffer cannot fail")
}

/// The partition index for a non-empty key among `partitions` partitions.
///
/// `partitions` must be at least 1; the caller owns a stream's validated
/// partition count.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    debug_assert!(partitions > 0, "a super stream has at least one partition");
    key_hash(key) % partitions
}

/// Round-robin partition choice for records without a key; one per stream,
/// shared by all requests so that concurrent unkeyed publishers spread evenly.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicU32,
}

impl RoundRobin {
    pub fn next(&self, partitions: u32) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) % partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = include_str!("../tests/data/routing-vectors.tsv");
    const COLUMNS_N: [u32; 5] = [1, 2, 3, 7, 16];

    /// (key, hash, partition for N = 1, 2, 3, 7, 16) rows of the reference file.
    fn vectors() -> Vec<(String, u32, Vec<u32>)> {
        VECTORS
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 7, "malformed vector line {line:?}");
                let numbers = fields[1..]
                    .iter()
                    .map(|f| f.parse::<u32>().expect("numeric column"))
                    .collect::<Vec<_>>();
                (fields[0].to_owned(), numbers[0], numbers[1..].to_vec())
            })
            .collect()
    }

    #[test]
    fn hashes_match_reference_implementation() {
        let vectors = vectors();
        assert!(vectors.len() > 200, "reference file lost its rows");
        for (key, hash, _) in &vectors {
            assert_eq!(key_hash(key), *hash, "hash of {key:?}");
        }
    }

    #[test]
    fn partitions_match_reference_for_every_count() {
        for (key, _, partitions) in vectors() {
            for (n, expected) in COLUMNS_N.iter().zip(&partitions) {
                assert_eq!(partition_for_key(&key, *n), *expected, "{key:?} with N={n}");
            }
        }
    }

    #[test]
    fn vectors_cover_non_ascii_keys_and_top_bit_hashes() {
        let vectors = vectors();
        assert!(vectors.iter().any(|(k, _, _)| !k.is_ascii()));
        assert!(vectors.iter().any(|(_, h, _)| h & 0x8000_0000 != 0));
        // A signed modulo would give a different answer for these.
        assert!(vectors
            .iter()
            .any(|(_, h, p)| h & 0x8000_0000 != 0 && (*h as i32 % 7).unsigned_abs() != p[3]));
    }

    #[test]
    fn round_robin_cycles_through_all_partitions() {
        let rr = RoundRobin::default();
        let picks: Vec<u32> = (0..6).map(|_| rr.next(3)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
