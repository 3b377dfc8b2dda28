//! Property tests over request validation and configuration: no input
//! makes them panic, and what they accept obeys the rules. (Routing is
//! checked against the reference vectors in `src/routing.rs`; the
//! record format's round trip beside its encoding, `src/broker/message.rs`.)

use partlog::config::Limits;
use partlog::record::{NewRecord, FILTER_PROPERTY, KEY_PROPERTY};
use partlog::validate;
use proptest::prelude::*;

fn small_limits() -> Limits {
    Limits {
        max_value_bytes: 64,
        max_batch_records: 8,
        max_batch_bytes: 256,
        ..Limits::default()
    }
}

fn record_strategy() -> impl Strategy<Value = NewRecord> {
    (
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..100),
        prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        prop::option::of(0u64..50),
        prop::option::of("[a-z]{0,300}"),
    )
        .prop_map(|(key, value, headers, sequence, filter)| NewRecord {
            key,
            value: value.into(),
            headers,
            sequence,
            filter,
        })
}

proptest! {
    #[test]
    fn accepted_stream_names_follow_rabbitmq_rules(name in any::<String>()) {
        if validate::stream_name(&name).is_ok() {
            prop_assert!(!name.is_empty());
            prop_assert!(name.len() <= validate::STREAM_NAME_MAX_BYTES);
            prop_assert!(!name.starts_with("amq."));
            prop_assert!(!name.chars().any(char::is_control));
        }
    }

    #[test]
    fn accepted_groups_fit_the_broker(name in any::<String>()) {
        if validate::group_name(&name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= validate::GROUP_NAME_MAX_BYTES);
            prop_assert!(!name.chars().any(char::is_control));
        }
    }

    #[test]
    fn accepted_batches_respect_every_limit(
        records in prop::collection::vec(record_strategy(), 0..12),
        producer in prop::option::of(any::<String>()),
    ) {
        let limits = small_limits();
        let batch = validate::publish_batch(&records, &limits);
        let sequences = validate::producer_sequences(producer.as_deref(), &records);
        if batch.is_ok() {
            prop_assert!(!records.is_empty());
            prop_assert!(records.len() as u64 <= limits.max_batch_records);
            prop_assert!(records.iter().map(NewRecord::size).sum::<u64>() <= limits.max_batch_bytes);
            for r in &records {
                prop_assert!(r.value.len() as u64 <= limits.max_value_bytes);
                prop_assert!(!r.headers.contains_key(KEY_PROPERTY));
                prop_assert!(!r.headers.contains_key(FILTER_PROPERTY));
                prop_assert!(r.filter.as_ref().is_none_or(|f| f.len() <= validate::MAX_FILTER_BYTES));
                prop_assert!(!r.headers.contains_key(""));
            }
        }
        if sequences.is_ok() {
            match producer {
                None => prop_assert!(records.iter().all(|r| r.sequence.is_none())),
                Some(_) => {
                    let seqs: Vec<u64> = records.iter().map(|r| r.sequence.unwrap()).collect();
                    prop_assert!(seqs.iter().all(|s| *s >= 1));
                    prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]));
                }
            }
        }
    }

    #[test]
    fn configuration_never_panics_on_environment_values(
        key in prop::sample::select(vec![
            "PARTLOG_BROKER_PORT", "PARTLOG_LIMITS_MAX_VALUE_BYTES", "PARTLOG_SERVER_LISTEN",
            "PARTLOG_OFFSETS_FALLBACK", "PARTLOG_BROKER_MAX_FRAME_BYTES", "PARTLOG_LIMITS_MAX_WINDOW",
        ]),
        value in any::<String>(),
    ) {
        let env = std::collections::HashMap::from([(key.to_string(), value)]);
        let _ = partlog::config::Config::load(None, &env);
    }
}
