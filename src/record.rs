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

use rabbitmq_stream_client::types::{Message, SimpleValue};

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
    pub value: Vec<u8>,
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

    /// Decodes a message that partlog or a native client wrote.
    pub fn from_message(message: &Message, partition: u32, offset: u64, timestamp_ms: i64) -> Self {
        let value = match message.data() {
            Some(data) => data.to_vec(),
            None => {
                if let Ok(Some(text)) = message.value_ref::<&String>() {
                    text.clone().into_bytes()
                } else if let Ok(Some(bytes)) = message.value_ref::<&Vec<u8>>() {
                    bytes.clone()
                } else {
                    Vec::new()
                }
            }
        };
        let mut key = String::new();
        let mut headers = BTreeMap::new();
        if let Some(properties) = message.application_properties() {
            for (name, value) in properties.iter() {
                let text = simple_value_text(value);
                if name == KEY_PROPERTY {
                    key = text;
                } else {
                    headers.insert(name.clone(), text);
                }
            }
        }
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

/// An application property value as header text.
fn simple_value_text(value: &SimpleValue) -> String {
    match value {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.to_string(),
        SimpleValue::Null => String::new(),
        SimpleValue::Boolean(v) => v.to_string(),
        SimpleValue::Ubyte(v) => v.to_string(),
        SimpleValue::Ushort(v) => v.to_string(),
        SimpleValue::Uint(v) => v.to_string(),
        SimpleValue::Ulong(v) => v.to_string(),
        SimpleValue::Byte(v) => v.to_string(),
        SimpleValue::Short(v) => v.to_string(),
        SimpleValue::Int(v) => v.to_string(),
        SimpleValue::Long(v) => v.to_string(),
        SimpleValue::Char(v) => v.to_string(),
        SimpleValue::Uuid(v) => v.to_string(),
        // Floats, timestamps and binaries have no canonical text form in the
        // protocol crate; their debug form keeps the information visible.
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rabbitmq_stream_protocol::codec::{Decoder, Encoder};

    /// Encodes and decodes like the broker round trip does.
    fn over_the_wire(message: &Message) -> Message {
        let mut bytes = Vec::new();
        message.encode(&mut bytes).unwrap();
        let (rest, decoded) = Message::decode(&bytes).unwrap();
        assert!(rest.is_empty());
        decoded
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
        let stored =
            StoredRecord::from_message(&over_the_wire(&record.clone().into_message(0)), 2, 7, 1234);
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
        let message = over_the_wire(&record.into_message(0));
        let has_key = message
            .application_properties()
            .is_some_and(|p| p.contains_key(KEY_PROPERTY));
        assert!(!has_key);
        assert_eq!(StoredRecord::from_message(&message, 0, 0, 0).key, "");
    }

    #[test]
    fn native_messages_are_readable() {
        let message = Message::builder()
            .body("native body")
            .application_properties()
            .insert("count", 42i32)
            .insert("flag", true)
            .message_builder()
            .build();
        let stored = StoredRecord::from_message(&over_the_wire(&message), 0, 0, 0);
        assert_eq!(stored.value, b"native body");
        assert_eq!(stored.key, "");
        assert_eq!(stored.headers["count"], "42");
        assert_eq!(stored.headers["flag"], "true");
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
}
