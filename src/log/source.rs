//! Exactly-once outputs of a consumer group's inputs.
//!
//! A pipeline member reads a partition of a stream in a consumer group,
//! turns each input record into outputs and publishes them to another
//! stream. When it dies after publishing and before committing, the member
//! that takes the partition over publishes the same outputs again. Tagged
//! with their [`Source`], they are stored once: the outputs of one (group,
//! input stream, input partition) to one target stream go through one
//! deduplicating producer ([`Source::producer_id`], its caller's like a
//! client's producer id), and each output's publishing id comes from its
//! input's offset and its index among that input's outputs
//! ([`Output::publishing_id`]). The broker drops what it stored before under
//! the name, on whichever partlog instance the member runs, and partlog
//! reports those records as duplicates.
//!
//! What this assumes: the same input gives the same outputs (in number,
//! order and routing keys), and nothing else writes to the target under
//! the same source. A source's publishing ids increase with the inputs'
//! offsets, so the outputs of one input partition are published in input
//! order.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::publish::Appended;
use crate::error::{Error, Kind, Reason, Result};
use crate::record::NewRecord;
use crate::validate::{self, SOURCE_PRODUCER_PREFIX};

/// Outputs one input may have: the index takes the low 16 bits of the
/// publishing id.
pub const MAX_OUTPUTS_PER_INPUT: u32 = 1 << 16;
/// Largest input offset: the offset takes the high 48 bits, and the
/// largest (offset, index) must still have a successor, its publishing id.
pub const MAX_SOURCE_OFFSET: u64 = (1 << 48) - 2;

/// Where a batch's records come from: one input partition of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub group: String,
    pub stream: String,
    pub partition: u32,
    /// The input offset to commit for the group once every record of the
    /// batch is stored.
    pub commit_offset: Option<u64>,
}

/// Which output of which input a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Output {
    pub source_offset: u64,
    pub index: u32,
}

impl Output {
    /// The record's publishing id: (offset, index) in order, from 1 (the
    /// broker's "nothing stored yet" is 0).
    pub fn publishing_id(self) -> u64 {
        (self.source_offset << 16 | u64::from(self.index)) + 1
    }
}

impl Source {
    /// The producer id the source's outputs to `target` are written under:
    /// a digest of the group, the input stream and partition and the target
    /// (fixed length, whatever the names), the same on every instance.
    pub fn producer_id(&self, target: &str) -> String {
        let mut digest = Sha256::new();
        for field in [
            self.group.as_bytes(),
            self.stream.as_bytes(),
            &self.partition.to_be_bytes(),
            target.as_bytes(),
        ] {
            // Length-prefixed: no two tuples give the same bytes.
            digest.update((field.len() as u64).to_be_bytes());
            digest.update(field);
        }
        let digest = digest.finalize();
        let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
        format!("{SOURCE_PRODUCER_PREFIX}{hex}")
    }

    /// Checks the source and its records' outputs, and numbers the records
    /// with their outputs' publishing ids.
    pub fn number(&self, records: &mut [NewRecord], outputs: &[Output]) -> Result<()> {
        validate::group_name(&self.group).map_err(|e| prefixed("source", e))?;
        validate::stream_name(&self.stream).map_err(|e| prefixed("source.stream", e))?;
        let mut previous: Option<Output> = None;
        for (index, (record, output)) in records.iter_mut().zip(outputs).enumerate() {
            if record.sequence.is_some() {
                return Err(Error::field(
                    Reason::SequenceInvalid,
                    format!("records[{index}].sequence"),
                    format!(
                        "records[{index}].sequence is set; with a source a record is numbered by \
                     its source_offset and output_index"
                    ),
                ));
            }
            if output.source_offset > MAX_SOURCE_OFFSET {
                return Err(Error::field(
                    Reason::ValueOutOfRange,
                    format!("records[{index}].source_offset"),
                    format!(
                    "records[{index}].source_offset is {}; at most {MAX_SOURCE_OFFSET} (2^48 - 2) \
                     is allowed",
                    output.source_offset
                ),
                ));
            }
            if output.index >= MAX_OUTPUTS_PER_INPUT {
                return Err(Error::field(
                    Reason::ValueOutOfRange,
                    format!("records[{index}].output_index"),
                    format!(
                        "records[{index}].output_index is {}; an input has at most \
                     {MAX_OUTPUTS_PER_INPUT} outputs (0..={})",
                        output.index,
                        MAX_OUTPUTS_PER_INPUT - 1
                    ),
                ));
            }
            if let Some(previous) = previous.filter(|p| *output <= *p) {
                return Err(Error::field(
                    Reason::SequenceInvalid,
                    format!("records[{index}]"),
                    format!(
                    "records[{index}] is output {} of input {}, not after the previous record's \
                     output {} of input {}; a source's (source_offset, output_index) strictly \
                     increase",
                    output.index, output.source_offset, previous.index, previous.source_offset
                ),
                ));
            }
            previous = Some(*output);
            record.sequence = Some(output.publishing_id());
        }
        Ok(())
    }
}

/// The commits of one call's source batches. The caller hands each batch's
/// results in the batches' order, so a batch's commit comes after every
/// earlier batch of its source was answered; once one of them had a record
/// not stored, no later batch of the source commits: an output before the
/// commit would be missing.
#[derive(Debug, Default)]
pub struct SourceCommits {
    /// (group, stream, partition) of the sources with a batch not stored.
    failed: HashSet<(String, String, u32)>,
}

impl SourceCommits {
    /// What to commit after a batch of `source` was answered with
    /// `results`: its commit_offset (`None` without one), or why not.
    pub fn decide(&mut self, source: &Source, results: &[Appended]) -> Result<Option<u64>> {
        let key = (
            source.group.clone(),
            source.stream.clone(),
            source.partition,
        );
        if let Some((index, failed)) = results
            .iter()
            .enumerate()
            .find_map(|(i, appended)| appended.result.as_ref().err().map(|e| (i, e)))
        {
            self.failed.insert(key);
            return Err(Error::new(
                Reason::SourceNotCommitted,
                format!(
                    "not committed: records[{index}] was not stored ({failed}); publish the batch \
                 again (what was stored before is reported as duplicates), then commit"
                ),
            ));
        }
        if self.failed.contains(&key) {
            return Err(Error::new(
                Reason::SourceNotCommitted,
                format!(
                "not committed: an earlier batch of group {:?} from partition {} of {:?} in this \
                 call was not stored; publish it again, then commit",
                source.group, source.partition, source.stream
            ),
            ));
        }
        Ok(source.commit_offset)
    }
}

/// `error` about the field `field`.
fn prefixed(field: &str, error: Error) -> Error {
    if error.kind() != Kind::InvalidArgument {
        return error;
    }
    let message = format!("{field}: {error}");
    error.at(field).with_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            group: "billing".into(),
            stream: "orders".into(),
            partition: 2,
            commit_offset: None,
        }
    }

    fn output(source_offset: u64, index: u32) -> Output {
        Output {
            source_offset,
            index,
        }
    }

    fn answered(results: &[bool]) -> Vec<Appended> {
        results
            .iter()
            .map(|stored| Appended {
                partition: 0,
                sequence: None,
                result: if *stored {
                    Ok(crate::broker::Stored::Written)
                } else {
                    Err(Error::new(
                        Reason::BrokerUnavailable,
                        "the connection broke",
                    ))
                },
            })
            .collect()
    }

    #[test]
    fn a_commit_waits_for_every_output_and_never_passes_a_failed_batch() {
        let mut commits = SourceCommits::default();
        let committing = Source {
            commit_offset: Some(10),
            ..source()
        };
        assert_eq!(
            commits
                .decide(&committing, &answered(&[true, true]))
                .unwrap(),
            Some(10)
        );
        assert_eq!(commits.decide(&source(), &answered(&[true])).unwrap(), None);
        let why = commits
            .decide(&committing, &answered(&[true, false]))
            .unwrap_err();
        assert!(
            why.to_string().contains("records[1] was not stored"),
            "{why}"
        );
        // A later batch of the same source, all stored, still does not
        // commit past the failed one.
        let why = commits.decide(&committing, &answered(&[true])).unwrap_err();
        assert!(why.kind() == Kind::FailedPrecondition, "{why}");
        // Another partition of the group is another source.
        let other = Source {
            partition: 3,
            ..committing.clone()
        };
        assert_eq!(
            commits.decide(&other, &answered(&[true])).unwrap(),
            Some(10)
        );
    }

    #[test]
    fn publishing_ids_follow_inputs_then_outputs_and_start_at_one() {
        assert_eq!(output(0, 0).publishing_id(), 1);
        assert_eq!(output(0, 1).publishing_id(), 2);
        assert_eq!(output(1, 0).publishing_id(), (1 << 16) + 1);
        let max = output(MAX_SOURCE_OFFSET, MAX_OUTPUTS_PER_INPUT - 1);
        assert_eq!(max.publishing_id(), u64::MAX - (1 << 16) + 1);
        let mut outputs = [output(3, 1), output(2, 9), output(3, 0), output(2, 65_535)];
        outputs.sort();
        let ids: Vec<u64> = outputs.iter().map(|o| o.publishing_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn the_producer_id_is_the_same_for_the_same_source_and_target_only() {
        let id = source().producer_id("invoices");
        assert_eq!(id, source().producer_id("invoices"));
        assert_eq!(id.len(), "source:".len() + 40);
        assert_ne!(id, source().producer_id("invoices2"));
        let other_partition = Source {
            partition: 3,
            ..source()
        };
        assert_ne!(id, other_partition.producer_id("invoices"));
        // The fields are delimited: moving a byte from one to the next is
        // another source.
        let a = Source {
            group: "ab".into(),
            stream: "c".into(),
            ..source()
        };
        let b = Source {
            group: "a".into(),
            stream: "bc".into(),
            ..source()
        };
        assert_ne!(a.producer_id("t"), b.producer_id("t"));
    }

    #[test]
    fn outputs_are_checked_and_number_the_records() {
        let mut records = vec![NewRecord::default(); 3];
        let outputs = [output(7, 0), output(7, 1), output(9, 0)];
        source().number(&mut records, &outputs).unwrap();
        let ids: Vec<_> = records.iter().map(|r| r.sequence.unwrap()).collect();
        assert_eq!(
            ids,
            outputs
                .iter()
                .map(|o| o.publishing_id())
                .collect::<Vec<_>>()
        );

        let refused = |outputs: &[Output], records: &mut [NewRecord]| match source()
            .number(records, outputs)
        {
            Err(e) if e.kind() == Kind::InvalidArgument => e.message().to_owned(),
            other => panic!("{other:?}"),
        };
        let mut two = vec![NewRecord::default(); 2];
        let why = refused(&[output(7, 1), output(7, 1)], &mut two);
        assert!(
            why.starts_with("records[1] is output 1 of input 7"),
            "{why}"
        );
        let why = refused(
            &[output(8, 0), output(7, 0)],
            &mut vec![NewRecord::default(); 2],
        );
        assert!(why.contains("strictly increase"), "{why}");
        let why = refused(
            &[output(MAX_SOURCE_OFFSET + 1, 0)],
            &mut [NewRecord::default()],
        );
        assert!(why.starts_with("records[0].source_offset"), "{why}");
        let mut last = [NewRecord::default()];
        let largest = output(MAX_SOURCE_OFFSET, MAX_OUTPUTS_PER_INPUT - 1);
        source().number(&mut last, &[largest]).unwrap();
        let why = refused(&[output(1, 1 << 16)], &mut [NewRecord::default()]);
        assert!(why.starts_with("records[0].output_index"), "{why}");
        let mut sequenced = vec![NewRecord {
            sequence: Some(4),
            ..Default::default()
        }];
        let why = refused(&[output(1, 0)], &mut sequenced);
        assert!(why.starts_with("records[0].sequence"), "{why}");
        let bad_stream = Source {
            stream: String::new(),
            ..source()
        };
        match bad_stream.number(&mut [], &[]) {
            Err(e) => {
                assert_eq!(e.field_path(), Some("source.stream"), "{e:?}");
                assert!(e.message().starts_with("source.stream"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
