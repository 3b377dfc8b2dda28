//! Publishing on partlog's own connections ([`super::link`]): declaring a
//! publisher, asking for the last sequence stored under its name, deleting
//! it, publish frames, and what the broker answers publishers with.
//!
//! A publish frame is the records' messages as [`crate::record::amqp`]
//! encodes them: each message's head is copied into the frame's buffer, and
//! so is a small value, but a value of [`INLINE_VALUE`] bytes or more is not
//! copied at all — it is a piece of its own in the frame, written to the
//! socket from the buffer the gRPC request arrived in by one vectored
//! write. A copy of a small value costs less than a piece of its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::link::{Asked, Link};
use super::wire::{Body, Frame, Reader, CODE_OK, METADATA_UPDATE};
use crate::error::{Error, Reason, Result};
use crate::record::amqp::Encoded;

pub const DECLARE_PUBLISHER: u16 = 0x0001;
pub const PUBLISH: u16 = 0x0002;
pub const PUBLISH_CONFIRM: u16 = 0x0003;
pub const PUBLISH_ERROR: u16 = 0x0004;
pub const QUERY_PUBLISHER_SEQUENCE: u16 = 0x0005;
pub const DELETE_PUBLISHER: u16 = 0x0006;

/// Values this large or larger are written from where they are, not
/// copied into the frame.
pub const INLINE_VALUE: usize = 4 * 1024;

/// A publish frame's header: size, key, version, publisher id, count.
const FRAME_HEADER: usize = 4 + 2 + 2 + 1 + 4;
/// Before each message in a publish frame: publishing id and length.
const ENTRY_HEADER: usize = 8 + 4;
/// A version 2 frame (RabbitMQ 3.13+) carries each message's filter value:
/// a string, its 16-bit length (-1: none) then its bytes.
const FILTER_HEADER: usize = 2;

/// What the broker tells a connection's publishers.
#[derive(Debug, PartialEq, Eq)]
pub enum PublisherEvent {
    /// These publishing ids are stored (or were stored before, for a named
    /// publisher's duplicates).
    Confirmed { publisher: u8, ids: Vec<u64> },
    /// These publishing ids were not stored: (id, response code).
    Refused {
        publisher: u8,
        errors: Vec<(u64, u16)>,
    },
    /// The stream moved to another leader or was deleted, and the broker
    /// dropped its publishers; `None`: every stream of the connection.
    Moved { stream: Option<String> },
}

/// Reads a frame the broker sends publishers; `None` for any other frame.
pub fn event(frame: Frame) -> Result<Option<PublisherEvent>> {
    let mut body = Reader::new(frame.body);
    Ok(Some(match frame.key {
        PUBLISH_CONFIRM => {
            let publisher = body.u8()?;
            let count = body.u32()?;
            let ids = (0..count).map(|_| body.u64()).collect::<Result<_>>()?;
            PublisherEvent::Confirmed { publisher, ids }
        }
        PUBLISH_ERROR => {
            let publisher = body.u8()?;
            let count = body.u32()?;
            let errors = (0..count)
                .map(|_| Ok((body.u64()?, body.u16()?)))
                .collect::<Result<_>>()?;
            PublisherEvent::Refused { publisher, errors }
        }
        METADATA_UPDATE => {
            body.u16()?;
            let stream = body.string()?;
            PublisherEvent::Moved {
                stream: Some(stream).filter(|s| !s.is_empty()),
            }
        }
        _ => return Ok(None),
    }))
}

/// Declares publisher `publisher` on `stream`, deduplicating under `name`
/// when given; answers the broker's response code.
pub async fn declare(link: &Link, publisher: u8, name: Option<&str>, stream: &str) -> Result<u16> {
    let body = Body::default()
        .u8(publisher)
        .string(name.unwrap_or_default())?
        .string(stream)?;
    let what = format!("declaring a publisher on {stream:?}");
    link.request(DECLARE_PUBLISHER, &body.0, &what).await?.u16()
}

/// The last publishing id stored under `name` on `stream` (0 when none).
pub async fn stored_sequence(link: &Link, name: &str, stream: &str) -> Result<u64> {
    SequenceQuery::send(link, name, stream)
        .await?
        .answer()
        .await
}

/// A question for the last publishing id stored under a name, sent and not
/// answered yet: frames sent after it are handled by the broker after it.
pub struct SequenceQuery<'a> {
    asked: Asked<'a>,
    name: String,
    stream: String,
}

impl SequenceQuery<'_> {
    pub async fn send<'a>(link: &'a Link, name: &str, stream: &str) -> Result<SequenceQuery<'a>> {
        let body = Body::default().string(name)?.string(stream)?;
        let what = format!("querying the last sequence of {name:?} on {stream:?}");
        Ok(SequenceQuery {
            asked: link.ask(QUERY_PUBLISHER_SEQUENCE, &body.0, &what).await?,
            name: name.to_owned(),
            stream: stream.to_owned(),
        })
    }

    /// The last publishing id stored (0 when none).
    pub async fn answer(self) -> Result<u64> {
        let mut answer = self.asked.answer().await?;
        match answer.u16()? {
            CODE_OK => answer.u64(),
            code => Err(Error::new(
                Reason::BrokerUnavailable,
                format!(
                    "the broker refused to say the last sequence of {:?} on {:?} (response code \
                 {code:#04x})",
                    self.name, self.stream
                ),
            )),
        }
    }
}

/// Deletes publisher `publisher`; answers the broker's response code.
pub async fn delete(link: &Link, publisher: u8) -> Result<u16> {
    let body = Body::default().u8(publisher);
    link.request(DELETE_PUBLISHER, &body.0, "deleting a publisher")
        .await?
        .u16()
}

/// One publish frame being filled: the pieces it is written as. A frame
/// whose first message has a filter value is a version 2 frame, which
/// carries one (or none) for every message; a version 1 frame takes no
/// message with a filter value ([`PublishFrame::takes`]).
pub struct PublishFrame {
    publisher: u8,
    /// Version 2: filter values beside the messages.
    filtered: bool,
    count: u32,
    /// Pieces complete so far, after the header.
    pieces: Vec<Bytes>,
    /// The piece being filled: entry headers, message heads, small values.
    open: BytesMut,
    /// The whole frame's size in bytes, header included.
    size: usize,
}

impl PublishFrame {
    pub fn new(publisher: u8) -> PublishFrame {
        PublishFrame {
            publisher,
            filtered: false,
            count: 0,
            pieces: Vec::new(),
            open: BytesMut::new(),
            size: FRAME_HEADER,
        }
    }

    /// The frame's size in bytes once it holds `message` too.
    pub fn size_with(&self, message: &Encoded) -> usize {
        self.size.saturating_add(self.entry_size(message))
    }

    /// What `message` adds to the frame's size.
    fn entry_size(&self, message: &Encoded) -> usize {
        let filter = match &message.filter {
            Some(filter) => FILTER_HEADER.saturating_add(filter.len()),
            None if self.filtered => FILTER_HEADER,
            None => 0,
        };
        ENTRY_HEADER
            .saturating_add(filter)
            .saturating_add(message.size())
    }

    /// False for a message with a filter value and a version 1 frame that
    /// holds messages already: it goes into the next frame.
    pub fn takes(&self, message: &Encoded) -> bool {
        self.filtered || self.count == 0 || message.filter.is_none()
    }

    /// The frame's size in bytes, as the broker counts it against its
    /// frame size limit.
    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Messages in the frame.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Adds `message` under `publishing_id`; the frame must take it
    /// ([`PublishFrame::takes`]).
    pub fn push(&mut self, publishing_id: u64, message: Encoded) {
        if self.count == 0 && message.filter.is_some() {
            self.filtered = true;
        }
        self.size = self.size_with(&message);
        self.count = self.count.saturating_add(1);
        let Encoded {
            head,
            value,
            filter,
        } = message;
        self.open.put_u64(publishing_id);
        if self.filtered {
            match filter {
                // Filter values are validated to at most 255 bytes.
                Some(filter) => {
                    self.open
                        .put_i16(i16::try_from(filter.len()).unwrap_or(i16::MAX));
                    self.open.put_slice(filter.as_bytes());
                }
                None => self.open.put_i16(-1),
            }
        }
        // A message is bounded by partlog's record limits, far below 4 GiB.
        let length = head.len().saturating_add(value.len());
        self.open.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
        self.open.put_slice(&head);
        if value.len() >= INLINE_VALUE {
            self.pieces.push(self.open.split().freeze());
            self.pieces.push(value);
        } else {
            self.open.put_slice(&value);
        }
    }

    /// The whole frame, to be written with [`Link::send_buf`].
    pub fn finish(mut self) -> Pieces {
        let mut header = BytesMut::with_capacity(FRAME_HEADER);
        // The size field counts what follows it.
        let size = self.size.saturating_sub(4);
        header.put_u32(u32::try_from(size).unwrap_or(u32::MAX));
        header.put_u16(PUBLISH);
        header.put_u16(if self.filtered { 2 } else { 1 });
        header.put_u8(self.publisher);
        header.put_u32(self.count);
        let mut pieces = Vec::with_capacity(self.pieces.len().saturating_add(2));
        pieces.push(header.freeze());
        pieces.append(&mut self.pieces);
        if !self.open.is_empty() {
            pieces.push(self.open.freeze());
        }
        Pieces { pieces, at: 0 }
    }
}

/// A frame held in pieces, as one [`Buf`] whose chunks are the pieces, so
/// that a vectored write takes them all at once.
pub struct Pieces {
    pieces: Vec<Bytes>,
    /// The first piece not yet written entirely.
    at: usize,
}

impl Buf for Pieces {
    fn remaining(&self) -> usize {
        self.pieces
            .get(self.at..)
            .unwrap_or_default()
            .iter()
            .map(Bytes::len)
            .sum()
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.get(self.at).map_or(&[], |piece| piece.as_ref())
    }

    fn chunks_vectored<'a>(&'a self, into: &mut [std::io::IoSlice<'a>]) -> usize {
        let pieces = self.pieces.get(self.at..).unwrap_or_default();
        let mut filled: usize = 0;
        for (slot, piece) in into.iter_mut().zip(pieces) {
            *slot = std::io::IoSlice::new(piece);
            filled = filled.saturating_add(1);
        }
        filled
    }

    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let Some(piece) = self.pieces.get_mut(self.at) else {
                return;
            };
            let step = count.min(piece.len());
            piece.advance(step);
            count = count.saturating_sub(step);
            if piece.is_empty() {
                self.at = self.at.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NewRecord;

    fn record(value: usize) -> NewRecord {
        NewRecord {
            key: "k".into(),
            value: Bytes::from(vec![7u8; value]),
            ..Default::default()
        }
    }

    /// The frame as one byte string, as the socket sees it.
    fn written(frame: PublishFrame) -> Vec<u8> {
        let mut pieces = frame.finish();
        let mut bytes = Vec::new();
        while pieces.has_remaining() {
            let chunk = pieces.chunk().to_vec();
            pieces.advance(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        bytes
    }

    #[test]
    fn a_frame_is_what_the_protocol_says_and_its_size_is_exact() {
        let records = [record(3), record(INLINE_VALUE), record(10), record(70_000)];
        let mut frame = PublishFrame::new(9);
        let mut expected_entries = Vec::new();
        for (id, record) in records.iter().enumerate() {
            let message = record.clone().encode();
            let mut bytes = message.head.clone();
            bytes.extend_from_slice(&message.value);
            expected_entries.push((id as u64 + 40, bytes));
            frame.push(id as u64 + 40, message);
        }
        let size = frame.size();
        let bytes = written(frame);
        assert_eq!(bytes.len(), size);
        let mut read = Reader::new(bytes);
        assert_eq!(read.u32().unwrap() as usize, size - 4);
        assert_eq!((read.u16().unwrap(), read.u16().unwrap()), (PUBLISH, 1));
        assert_eq!((read.u8().unwrap(), read.u32().unwrap()), (9, 4));
        for (id, message) in expected_entries {
            assert_eq!(read.u64().unwrap(), id);
            let length = read.u32().unwrap() as usize;
            assert_eq!(read.take(length).unwrap(), message);
        }
        assert_eq!(read.remaining(), 0);
    }

    #[test]
    fn a_frame_led_by_a_filter_value_is_version_2_with_a_filter_beside_each_message() {
        let filtered = |value, filter: Option<&str>| NewRecord {
            filter: filter.map(str::to_owned),
            ..record(value)
        };
        let records = [
            filtered(3, Some("eu")),
            filtered(INLINE_VALUE, None),
            filtered(10, Some("us-east")),
        ];
        let mut frame = PublishFrame::new(2);
        for (id, record) in records.iter().enumerate() {
            let message = record.clone().encode();
            assert!(frame.takes(&message));
            frame.push(id as u64, message);
        }
        let size = frame.size();
        let bytes = written(frame);
        assert_eq!(bytes.len(), size);
        let mut read = Reader::new(bytes);
        assert_eq!(read.u32().unwrap() as usize, size - 4);
        assert_eq!((read.u16().unwrap(), read.u16().unwrap()), (PUBLISH, 2));
        assert_eq!((read.u8().unwrap(), read.u32().unwrap()), (2, 3));
        for (id, record) in records.iter().enumerate() {
            assert_eq!(read.u64().unwrap(), id as u64);
            assert_eq!(
                read.string().unwrap(),
                record.filter.clone().unwrap_or_default()
            );
            let message = record.clone().encode();
            let length = read.u32().unwrap() as usize;
            assert_eq!(length, message.size());
            assert_eq!(read.take(length).unwrap().len(), length);
        }
        assert_eq!(read.remaining(), 0);

        // A version 1 frame with messages takes no filtered one.
        let mut plain = PublishFrame::new(2);
        plain.push(0, record(3).encode());
        assert!(!plain.takes(&filtered(3, Some("eu")).encode()));
        assert!(plain.takes(&record(3).encode()));
    }

    #[test]
    fn large_values_are_pieces_of_their_own_and_not_copied() {
        let value = Bytes::from(vec![1u8; 64 * 1024]);
        let message = NewRecord {
            value: value.clone(),
            ..Default::default()
        }
        .encode();
        let mut frame = PublishFrame::new(1);
        frame.push(0, message);
        frame.push(1, record(5).encode());
        let pieces = frame.finish();
        assert_eq!(pieces.pieces.len(), 4, "header, head, value, the rest");
        assert_eq!(pieces.pieces[2].as_ptr(), value.as_ptr(), "the same bytes");
        let mut slots = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(pieces.chunks_vectored(&mut slots), 4);
    }

    #[test]
    fn a_partly_written_frame_resumes_where_the_socket_stopped() {
        let mut frame = PublishFrame::new(1);
        frame.push(0, record(INLINE_VALUE * 2).encode());
        frame.push(1, record(5).encode());
        let whole = written({
            let mut again = PublishFrame::new(1);
            again.push(0, record(INLINE_VALUE * 2).encode());
            again.push(1, record(5).encode());
            again
        });
        let mut pieces = frame.finish();
        let mut bytes = Vec::new();
        // Short writes of odd sizes, across piece boundaries.
        while pieces.has_remaining() {
            let step = pieces.chunk().len().min(1000);
            bytes.extend_from_slice(&pieces.chunk()[..step]);
            pieces.advance(step);
        }
        assert_eq!(bytes, whole);
    }

    #[test]
    fn confirms_errors_and_moves_are_read() {
        let confirm = Body::default().u8(3).u32(2).u64(10).u64(11);
        let frame = |key, body: Body| Frame {
            key,
            version: 1,
            body: body.0.into(),
        };
        assert_eq!(
            event(frame(PUBLISH_CONFIRM, confirm)).unwrap(),
            Some(PublisherEvent::Confirmed {
                publisher: 3,
                ids: vec![10, 11]
            })
        );
        let refused = Body::default().u8(4).u32(1).u64(12).u16(0x10);
        assert_eq!(
            event(frame(PUBLISH_ERROR, refused)).unwrap(),
            Some(PublisherEvent::Refused {
                publisher: 4,
                errors: vec![(12, 0x10)]
            })
        );
        let moved = Body::default().u16(6).string("").unwrap();
        assert_eq!(
            event(frame(METADATA_UPDATE, moved)).unwrap(),
            Some(PublisherEvent::Moved { stream: None })
        );
        assert_eq!(event(frame(0x0017, Body::default())).unwrap(), None);
    }

    mod generative {
        use proptest::prelude::*;

        use super::*;
        use crate::generative::{check, damaged};

        fn frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
            let ids = prop::collection::vec(any::<u64>(), 0..5);
            let confirm = (any::<u8>(), ids.clone()).prop_map(|(publisher, ids)| {
                let mut body = Body::default().u8(publisher).u32(ids.len() as u32);
                for id in ids {
                    body = body.u64(id);
                }
                (PUBLISH_CONFIRM, body.0)
            });
            let refused = (any::<u8>(), ids).prop_map(|(publisher, ids)| {
                let mut body = Body::default().u8(publisher).u32(ids.len() as u32);
                for id in ids {
                    body = body.u64(id).u16(0x02);
                }
                (PUBLISH_ERROR, body.0)
            });
            let moved = "[a-z-]{0,10}".prop_map(|stream| {
                (
                    METADATA_UPDATE,
                    Body::default().u16(6).string(&stream).unwrap().0,
                )
            });
            prop_oneof![confirm, refused, moved]
        }

        #[test]
        fn damaged_frames_are_read_or_refused_never_a_panic() {
            let frames = frame()
                .prop_flat_map(|(key, body)| damaged(Just(body)).prop_map(move |b| (key, b)));
            check(frames, |(key, body)| {
                let _ = event(Frame {
                    key,
                    version: 1,
                    body: body.into(),
                });
                Ok(())
            });
        }
    }
}
