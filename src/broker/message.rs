//! Records as AMQP 1.0 messages, checked against the client library (test
//! only): what partlog writes ([`NewRecord::encode`]) is what the native
//! clients decode, and what they write is what partlog reads
//! ([`StoredRecord::decode`]).

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use rabbitmq_stream_client::types::{Message, SimpleValue};
    use rabbitmq_stream_protocol::codec::{Decoder, Encoder};

    use crate::record::{NewRecord, StoredRecord, FILTER_PROPERTY, KEY_PROPERTY};

    /// A native client's message as the broker stores it.
    fn encoded(message: &Message) -> Bytes {
        let mut bytes = Vec::new();
        message.encode(&mut bytes).unwrap();
        bytes.into()
    }

    /// The message partlog writes for `record`, as the broker stores it.
    fn written(record: NewRecord) -> Bytes {
        let message = record.encode();
        let mut bytes = message.head;
        bytes.extend_from_slice(&message.value);
        bytes.into()
    }

    /// A native client's message as partlog reads it.
    fn read_native(message: &Message) -> StoredRecord {
        StoredRecord::decode(encoded(message), 2, 7, 1234)
    }

    /// `record` as partlog writes and then reads it.
    fn read_back(record: NewRecord) -> StoredRecord {
        StoredRecord::decode(written(record), 2, 7, 1234)
    }

    /// `record` as a native client decodes what partlog wrote: the body,
    /// and the application properties as strings.
    fn natively(record: NewRecord) -> (Vec<u8>, BTreeMap<String, String>) {
        let bytes = written(record);
        let (rest, message) = Message::decode(&bytes).unwrap();
        assert!(rest.is_empty());
        let properties = message
            .application_properties()
            .map(|p| {
                p.iter()
                    .map(|(name, value)| {
                        let SimpleValue::String(text) = value else {
                            panic!("{name} is not a string: {value:?}");
                        };
                        (name.to_string(), text.clone())
                    })
                    .collect()
            })
            .unwrap_or_default();
        (message.data().unwrap_or_default().to_vec(), properties)
    }

    #[test]
    fn record_survives_the_amqp_round_trip() {
        let record = NewRecord {
            key: "ключ-1".into(),
            value: Bytes::from_static(&[0, 1, 2, 255]),
            headers: BTreeMap::from([
                ("trace-id".to_string(), "abc".to_string()),
                ("ünïcode".to_string(), "✓".to_string()),
            ]),
            sequence: None,
            filter: Some("eu-west".into()),
        };
        let stored = read_back(record.clone());
        assert_eq!(stored.key, record.key);
        assert_eq!(stored.value, record.value);
        assert_eq!(stored.headers, record.headers);
        assert_eq!(stored.filter, "eu-west");
        assert_eq!(
            (stored.partition, stored.offset, stored.timestamp_ms),
            (2, 7, 1234)
        );
        let (value, mut properties) = natively(record.clone());
        assert_eq!(value, record.value);
        assert_eq!(properties.remove(KEY_PROPERTY).unwrap(), record.key);
        assert_eq!(properties.remove(FILTER_PROPERTY).unwrap(), "eu-west");
        assert_eq!(properties, record.headers);
    }

    #[test]
    fn empty_key_is_not_stored() {
        let record = NewRecord {
            value: Bytes::from_static(b"v"),
            ..Default::default()
        };
        let (_, properties) = natively(record.clone());
        assert!(!properties.contains_key(KEY_PROPERTY));
        assert_eq!(read_back(record).key, "");
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
        let stored = read_native(&message);
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
        assert_eq!(read_native(&message).value, [9u8, 8, 7].as_slice());
    }

    #[test]
    fn a_data_body_is_a_slice_of_the_message_not_a_copy() {
        let record = NewRecord {
            value: vec![1; 100].into(),
            ..Default::default()
        };
        let bytes = written(record);
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

        /// Every record partlog writes reads back as itself, in partlog
        /// and in the native clients — across the encodings' size steps
        /// (255 bytes: str8/str32, vbin8/vbin32, map8/map32).
        #[test]
        fn every_record_survives_the_round_trip() {
            let record = (
                ".{0,300}",
                prop::collection::vec(any::<u8>(), 0..300),
                prop::collection::btree_map(".{0,8}", ".{0,200}", 0..4),
            );
            check(record, |(key, value, mut headers)| {
                headers.remove(KEY_PROPERTY);
                let record = NewRecord {
                    key,
                    value: value.into(),
                    headers,
                    sequence: None,
                    filter: None,
                };
                let stored = read_back(record.clone());
                prop_assert_eq!(&stored.key, &record.key);
                prop_assert_eq!(&stored.value, &record.value);
                prop_assert_eq!(&stored.headers, &record.headers);
                let (value, mut properties) = natively(record.clone());
                prop_assert_eq!(value.as_slice(), record.value.as_ref());
                let key = properties.remove(KEY_PROPERTY).unwrap_or_default();
                prop_assert_eq!(key, record.key);
                prop_assert_eq!(properties, record.headers);
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
