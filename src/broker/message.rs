//! Records as the client library's AMQP 1.0 messages: what partlog's
//! producers publish (the form is [`crate::record`]'s; this is its encoding
//! by the library). Reading goes the other way without the library
//! ([`crate::record::StoredRecord::decode`]); the tests here check the two
//! agree, and that partlog's reader agrees with the library's decoder.

use rabbitmq_stream_client::types::Message;

use crate::record::{NewRecord, KEY_PROPERTY};

/// The AMQP 1.0 message stored on the broker for `record`, numbered for
/// the publisher's confirms (and deduplication).
pub fn message(record: NewRecord, publishing_id: u64) -> Message {
    let mut properties = Message::builder()
        .body(record.value)
        .application_properties();
    if !record.key.is_empty() {
        properties = properties.insert(KEY_PROPERTY, record.key);
    }
    for (name, value) in record.headers {
        properties = properties.insert(name, value);
    }
    properties
        .message_builder()
        .publishing_id(publishing_id)
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use rabbitmq_stream_client::types::SimpleValue;
    use rabbitmq_stream_protocol::codec::{Decoder, Encoder};

    use super::*;
    use crate::record::StoredRecord;

    /// The message's bytes as the broker stores them.
    fn encoded(message: &Message) -> Bytes {
        let mut bytes = Vec::new();
        message.encode(&mut bytes).unwrap();
        bytes.into()
    }

    /// The message's bytes as the broker stores them, read back.
    fn read_back(message: &Message) -> StoredRecord {
        StoredRecord::decode(encoded(message), 2, 7, 1234)
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
        let stored = read_back(&message(record.clone(), 0));
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
        let message = message(record, 0);
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
    fn a_data_body_is_a_slice_of_the_message_not_a_copy() {
        let record = NewRecord {
            value: vec![1; 100],
            ..Default::default()
        };
        let bytes = encoded(&message(record, 0));
        let stored = StoredRecord::decode(bytes.clone(), 0, 0, 0);
        let inside = bytes.as_ptr_range();
        assert!(inside.contains(&stored.value.as_ptr()));
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::generative::{check, damaged};

        /// An application property's value and the text partlog reads it as.
        fn property() -> impl Strategy<Value = (SimpleValue, String)> {
            prop_oneof![
                ".{0,12}".prop_map(|s: String| (SimpleValue::String(s.clone()), s)),
                any::<i32>().prop_map(|v| (SimpleValue::Int(v), v.to_string())),
                any::<i64>().prop_map(|v| (SimpleValue::Long(v), v.to_string())),
                any::<u64>().prop_map(|v| (SimpleValue::Ulong(v), v.to_string())),
                any::<u32>().prop_map(|v| (SimpleValue::Uint(v), v.to_string())),
                any::<i16>().prop_map(|v| (SimpleValue::Short(v), v.to_string())),
                any::<u16>().prop_map(|v| (SimpleValue::Ushort(v), v.to_string())),
                any::<i8>().prop_map(|v| (SimpleValue::Byte(v), v.to_string())),
                any::<u8>().prop_map(|v| (SimpleValue::Ubyte(v), v.to_string())),
                any::<bool>().prop_map(|v| (SimpleValue::Boolean(v), v.to_string())),
                any::<char>().prop_map(|v| (SimpleValue::Char(v), v.to_string())),
                Just((SimpleValue::Null, String::new())),
                prop::collection::vec(any::<u8>(), 0..8).prop_map(|v| {
                    let hex = v.iter().map(|b| format!("{b:02x}")).collect();
                    (SimpleValue::Binary(v), hex)
                }),
            ]
        }

        /// A message as native clients write them: a data body,
        /// application properties of simple types (maybe the key), a
        /// subject and a message annotation to skip.
        #[derive(Debug, Clone)]
        struct Model {
            value: Vec<u8>,
            key: Option<String>,
            properties: BTreeMap<String, (SimpleValue, String)>,
            subject: Option<String>,
        }

        fn model() -> impl Strategy<Value = Model> {
            (
                prop::collection::vec(any::<u8>(), 0..64),
                prop::option::of(".{0,10}"),
                prop::collection::btree_map("[a-z.-]{1,8}", property(), 0..6),
                prop::option::of("[a-z ]{0,10}"),
            )
                .prop_map(|(value, key, mut properties, subject)| {
                    properties.remove(KEY_PROPERTY);
                    Model {
                        value,
                        key,
                        properties,
                        subject,
                    }
                })
        }

        fn build(model: &Model) -> Message {
            let mut builder = Message::builder().body(model.value.clone());
            if let Some(subject) = &model.subject {
                builder = builder
                    .properties()
                    .subject(subject.clone())
                    .message_builder()
                    .message_annotations()
                    .insert("x-note", subject.as_str())
                    .message_builder();
            }
            let mut properties = builder.application_properties();
            if let Some(key) = &model.key {
                properties = properties.insert(KEY_PROPERTY, key.as_str());
            }
            for (name, (value, _)) in &model.properties {
                properties = properties.insert(name.as_str(), value.clone());
            }
            properties.message_builder().build()
        }

        #[test]
        fn partlogs_reader_and_the_librarys_decoder_agree() {
            check(model(), |model| {
                let bytes = encoded(&build(&model));
                let stored = StoredRecord::decode(bytes.clone(), 0, 0, 0);
                prop_assert_eq!(stored.value.as_ref(), model.value.as_slice());
                prop_assert_eq!(&stored.key, model.key.as_deref().unwrap_or(""));
                let expected: BTreeMap<String, String> = model
                    .properties
                    .iter()
                    .map(|(name, (_, text))| (name.clone(), text.clone()))
                    .collect();
                prop_assert_eq!(&stored.headers, &expected);

                let (rest, library) = Message::decode(&bytes).map_err(|e| {
                    TestCaseError::fail(format!("the library cannot decode it: {e:?}"))
                })?;
                prop_assert!(rest.is_empty());
                prop_assert_eq!(library.data().unwrap_or_default(), stored.value.as_ref());
                let names: Vec<String> = library
                    .application_properties()
                    .map(|p| p.keys().map(|k| k.to_string()).collect())
                    .unwrap_or_default();
                let mut ours: Vec<String> = stored.headers.keys().cloned().collect();
                if model.key.is_some() {
                    ours.push(KEY_PROPERTY.into());
                }
                let (mut names, mut ours) = (names, ours);
                names.sort();
                ours.sort();
                prop_assert_eq!(names, ours);
                Ok(())
            });
        }

        #[test]
        fn every_record_survives_the_round_trip() {
            let record = (
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..100),
                prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
            );
            check(record, |(key, value, mut headers)| {
                headers.remove(KEY_PROPERTY);
                let record = NewRecord {
                    key,
                    value,
                    headers,
                    sequence: None,
                };
                let stored = read_back(&message(record.clone(), 7));
                prop_assert_eq!(stored.key, record.key);
                prop_assert_eq!(stored.value.as_ref(), record.value.as_slice());
                prop_assert_eq!(stored.headers, record.headers);
                Ok(())
            });
        }

        #[test]
        fn a_damaged_message_is_read_as_some_record_never_a_panic() {
            check(
                damaged(model().prop_map(|m| encoded(&build(&m)).to_vec())),
                |bytes| {
                    let _ = StoredRecord::decode(bytes.into(), 0, 0, 0);
                    Ok(())
                },
            );
        }
    }
}
