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
//!
//! Reading a message that a native producer wrote, the value is its `data`
//! section (or an `amqp-value` body holding a string or binary), the key is
//! its `partlog.key` property if present, and every other application
//! property becomes a header, non-string values rendered as text.

use std::collections::BTreeMap;

mod amqp;

use bytes::Bytes;
use rabbitmq_stream_client::types::Message;

/// Application property that carries the record key.
pub const KEY_PROPERTY: &str = "partlog.key";

/// Bytes of a record's key, value and header names and values: what
/// partlog's size limits count, written and read alike.
fn payload_size(key: &str, value: &[u8], headers: &BTreeMap<String, String>) -> usize {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    key.len() + value.len() + headers
}

/// A record as a client hands it to partlog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// The producer's sequence number, for idempotent publishing.
    pub sequence: Option<u64>,
}

impl NewRecord {
    /// Bytes the record contributes to a batch's size limit.
    pub fn size(&self) -> u64 {
        payload_size(&self.key, &self.value, &self.headers) as u64
    }

    /// The AMQP 1.0 message stored on the broker, numbered for the
    /// publisher's confirms (and deduplication).
    pub fn into_message(self, publishing_id: u64) -> Message {
        let mut properties = Message::builder().body(self.value).application_properties();
        if !self.key.is_empty() {
            properties = properties.insert(KEY_PROPERTY, self.key);
        }
        for (name, value) in self.headers {
            properties = properties.insert(name, value);
        }
        properties
            .message_builder()
            .publishing_id(publishing_id)
            .build()
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
    /// Milliseconds since the Unix epoch at which the broker stored the
    /// chunk holding this record.
    pub timestamp_ms: i64,
}

impl StoredRecord {
    /// Bytes of key, value and headers: what a Read's size limit counts.
    pub fn payload_bytes(&self) -> usize {
        payload_size(&self.key, &self.value, &self.headers)
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
        StoredRecord {
            partition,
            offset,
            key,
            value,
            headers,
            timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rabbitmq_stream_client::types::SimpleValue;
    use rabbitmq_stream_protocol::codec::Encoder;

    /// The message's bytes as the broker stores them, read back.
    fn read_back(message: &Message) -> StoredRecord {
        let mut bytes = Vec::new();
        message.encode(&mut bytes).unwrap();
        StoredRecord::decode(bytes.into(), 2, 7, 1234)
    }

    #[test]
    fn record_survives_the_amqp_round_trip() {
        let record = NewRecord {
            key: "ключ-1".into(),
            value: vec![0, 1, 2, 255],
            headers: BTreeMap::from([
                ("trace-id".to_string(), "abc".to_string()),
                ("ünïcode".to_string(), "✓".to_string()),
            ]),
            sequence: None,
        };
        let stored = read_back(&record.clone().into_message(0));
        assert_eq!(stored.key, record.key);
        assert_eq!(stored.value, record.value);
        assert_eq!(stored.headers, record.headers);
        assert_eq!(
            (stored.partition, stored.offset, stored.timestamp_ms),
            (2, 7, 1234)
        );
    }

    #[test]
    fn empty_key_is_not_stored() {
        let record = NewRecord {
            value: b"v".to_vec(),
            ..Default::default()
        };
        let message = record.into_message(0);
        let has_key = message
            .application_properties()
            .is_some_and(|p| p.contains_key(KEY_PROPERTY));
        assert!(!has_key);
        assert_eq!(read_back(&message).key, "");
    }

    #[test]
    fn native_messages_are_readable() {
        let message = Message::builder()
            .body("native body")
            .application_properties()
            .insert("count", 42i32)
            .insert("flag", true)
            .insert("big", u64::MAX)
            .insert("small", -5i8)
            .insert("letter", SimpleValue::Char('λ'))
            .insert("nothing", SimpleValue::Null)
            .insert("bytes", SimpleValue::Binary(vec![0xca, 0xfe]))
            .insert(KEY_PROPERTY, "customer-7")
            .message_builder()
            .build();
        let stored = read_back(&message);
        assert_eq!(stored.value, b"native body".as_slice());
        assert_eq!(stored.key, "customer-7");
        let text = |name: &str| stored.headers[name].as_str();
        assert_eq!(text("count"), "42");
        assert_eq!(text("flag"), "true");
        assert_eq!(text("big"), u64::MAX.to_string());
        assert_eq!(text("small"), "-5");
        assert_eq!(text("letter"), "λ");
        assert_eq!(text("nothing"), "");
        assert_eq!(text("bytes"), "cafe");
        assert!(!stored.headers.contains_key(KEY_PROPERTY));
    }

    #[test]
    fn a_binary_amqp_value_body_is_the_value() {
        let message = Message::builder().body(vec![9u8, 8, 7]).build();
        assert_eq!(read_back(&message).value, [9u8, 8, 7].as_slice());
    }

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
    fn a_data_body_is_a_slice_of_the_message_not_a_copy() {
        let mut bytes = Vec::new();
        NewRecord {
            value: vec![1; 100],
            ..Default::default()
        }
        .into_message(0)
        .encode(&mut bytes)
        .unwrap();
        let message = Bytes::from(bytes);
        let stored = StoredRecord::decode(message.clone(), 0, 0, 0);
        let inside = message.as_ptr_range();
        assert!(inside.contains(&stored.value.as_ptr()));
    }

    #[test]
    fn size_counts_key_value_and_headers() {
        let record = NewRecord {
            key: "ab".into(),
            value: vec![0; 10],
            headers: BTreeMap::from([("h".to_string(), "xyz".to_string())]),
            sequence: None,
        };
        assert_eq!(record.size(), 2 + 10 + 1 + 3);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No bytes make reading a record panic.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = StoredRecord::decode(bytes.into(), 0, 0, 0);
            }
        }
    }
}
