//! The codecs of compressed sub-entry batches, as RabbitMQ's stream clients
//! write them.
//!
//! A producer may pack records into one sub-entry batch of a chunk and
//! compress the batch. The codec is three bits of the batch's header; the
//! formats are those of the Java client (the reference the Go, .NET,
//! Python and Rust clients follow): gzip (RFC 1952), Snappy in its framing
//! format, LZ4 in its frame format, zstd frames. Each is read with the
//! maintained Rust implementation of that format.
//!
//! The batch header declares the uncompressed size; a batch must come out
//! exactly that large, and no batch may declare more than
//! [`MAX_BATCH_BYTES`] (the Java client's default limit): a few bytes of
//! compressed input must not make partlog allocate without bound.

use std::io::Read;

use bytes::Bytes;

/// Largest uncompressed sub-entry batch partlog reads (64 MiB, as the Java
/// client and RabbitMQ 4.3's `stream.max_uncompressed_sub_entry_batch_size`).
pub const MAX_BATCH_BYTES: u32 = 64 * 1024 * 1024;

/// A sub-entry batch codec, by its code in the batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The codec of header code `code` (0 to 7); `None` for the codes no
    /// client defines.
    pub fn of(code: u8) -> Option<Codec> {
        Some(match code {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// The batch's records as bytes: `data` itself when uncompressed, else
    /// decompressed, which must give exactly `declared` bytes.
    pub fn decode(self, data: Bytes, declared: u32) -> Result<Bytes, String> {
        if self != Codec::None && declared > MAX_BATCH_BYTES {
            return Err(format!(
                "the batch declares {declared} uncompressed bytes, more than the {MAX_BATCH_BYTES} \
                 partlog reads"
            ));
        }
        let input = data.as_ref();
        let decoder: Box<dyn Read + '_> = match self {
            Codec::None => return Ok(data.clone()),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Codec::Snappy => Box::new(snap::read::FrameDecoder::new(input)),
            Codec::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
            Codec::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| e.to_string())?,
            ),
        };
        // One byte more than declared reads whether the batch is longer.
        let mut out = Vec::with_capacity(declared as usize);
        decoder
            .take(u64::from(declared).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| format!("it does not decompress: {e}"))?;
        if out.len() != declared as usize {
            return Err(format!(
                "it decompresses to {}{} bytes, its header declares {declared}",
                out.len(),
                if out.len() > declared as usize {
                    " or more"
                } else {
                    ""
                }
            ));
        }
        Ok(out.into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// `data` compressed as the Java client's codecs write it.
    pub(crate) fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
        match codec {
            Codec::None => data.to_vec(),
            Codec::Gzip => {
                let mut out =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                out.write_all(data).unwrap();
                out.finish().unwrap()
            }
            Codec::Snappy => {
                let mut out = snap::write::FrameEncoder::new(Vec::new());
                out.write_all(data).unwrap();
                out.into_inner().unwrap()
            }
            Codec::Lz4 => {
                // 64 KiB blocks, independent, as the Java client's LZ4 codec.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB);
                let mut out = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
                out.write_all(data).unwrap();
                out.finish().unwrap()
            }
            Codec::Zstd => zstd::stream::encode_all(data, 3).unwrap(),
        }
    }

    const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    #[test]
    fn every_codec_reads_what_its_format_writes() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in ALL {
            let compressed = compress(codec, &data);
            let read = codec
                .decode(compressed.into(), data.len() as u32)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(read, data, "{codec:?}");
        }
    }

    #[test]
    fn a_batch_must_be_as_large_as_declared() {
        let data = b"sixteen bytes!!!".repeat(4);
        for codec in ALL.into_iter().skip(1) {
            let compressed = Bytes::from(compress(codec, &data));
            let len = data.len() as u32;
            let shorter = codec.decode(compressed.clone(), len + 1).unwrap_err();
            assert!(shorter.contains("declares"), "{codec:?}: {shorter}");
            let longer = codec.decode(compressed.clone(), len - 1).unwrap_err();
            assert!(longer.contains("or more"), "{codec:?}: {longer}");
            let huge = codec.decode(compressed, MAX_BATCH_BYTES + 1).unwrap_err();
            assert!(huge.contains("more than"), "{codec:?}: {huge}");
        }
    }

    #[test]
    fn damaged_input_is_an_error() {
        let data = b"a record, and another record, and a third".repeat(20);
        for codec in ALL.into_iter().skip(1) {
            let compressed = compress(codec, &data);
            // (Not the last byte: LZ4's end mark is cut there, after the
            // data came out whole.)
            for cut in [0, 1, compressed.len() / 2] {
                let cut = Bytes::copy_from_slice(&compressed[..cut]);
                assert!(codec.decode(cut, data.len() as u32).is_err(), "{codec:?}");
            }
        }
        assert_eq!(Codec::of(5), None);
    }
}
