"""Publishes records in compressed sub-entry batches as RabbitMQ's native
stream clients do, for tests/compressed_batches.rs.

rstream (RabbitMQ's Python stream client) writes each batch: gzip with its
own codec; snappy, lz4 and zstd with codecs registered through rstream's
codec registry that compress as the Java client, the reference for the
formats, does: Snappy's framing format (xerial SnappyFramedOutputStream),
LZ4 frames of independent 64 KiB blocks (lz4-java LZ4FrameOutputStream) and
zstd frames (zstd-jni ZstdOutputStream).

Usage: compressed_batches.py HOST PORT STREAM CODEC:COUNT...
Writes, for each CODEC:COUNT in turn, one batch of COUNT records to the
(partition) stream STREAM; record i of a batch has the key "CODEC-i", the
body "CODEC record i" and the application property codec=CODEC. CODEC is
none, gzip, snappy, lz4 or zstd, or broken-gzip: a batch marked gzip whose
bytes are not gzip (what a faulty producer could store: the broker stores a
batch as it comes). Waits for the broker's confirms; exits 1 if a batch is
not confirmed.
"""

import asyncio
import sys

import lz4.frame
import snappy
import zstandard
from rstream import AMQPMessage, CompressionType, Producer
from rstream.compression import (
    GzipCompressionCodec,
    NoneCompressionCodec,
    StreamCompressionCodecs,
)


class FramedCodec(NoneCompressionCodec):
    """rstream's codec protocol: the records, each framed by its size (as
    the uncompressed codec frames them), then compressed by `compress_bytes`."""

    code = 0

    def compress(self, messages):
        super().compress(messages)
        self.buffer = self.compress_bytes(self.buffer)
        self.compressed_data_size = len(self.buffer)

    def compression_type(self):
        return self.code


class SnappyCodec(FramedCodec):
    code = CompressionType.Snappy.value

    @staticmethod
    def compress_bytes(data):
        return snappy.StreamCompressor().add_chunk(data)


class Lz4Codec(FramedCodec):
    code = CompressionType.Lz4.value

    @staticmethod
    def compress_bytes(data):
        return lz4.frame.compress(
            data,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
        )


class ZstdCodec(FramedCodec):
    code = CompressionType.Zstd.value

    @staticmethod
    def compress_bytes(data):
        # A streaming frame, as ZstdOutputStream writes it (no content size).
        compressor = zstandard.ZstdCompressor().compressobj()
        return compressor.compress(data) + compressor.flush()


class BrokenGzipCodec(FramedCodec):
    code = CompressionType.Gzip.value

    @staticmethod
    def compress_bytes(data):
        return b"not gzip: " + data


CODECS = {
    "none": CompressionType.No,
    "gzip": CompressionType.Gzip,
    "snappy": CompressionType.Snappy,
    "lz4": CompressionType.Lz4,
    "zstd": CompressionType.Zstd,
    "broken-gzip": CompressionType.Gzip,
}
StreamCompressionCodecs.register_codec(CompressionType.Snappy, SnappyCodec())
StreamCompressionCodecs.register_codec(CompressionType.Lz4, Lz4Codec())
StreamCompressionCodecs.register_codec(CompressionType.Zstd, ZstdCodec())


async def main(host, port, stream, batches):
    confirmed = asyncio.Queue()

    async def on_confirm(status):
        await confirmed.put(status.is_confirmed)

    async with Producer(
        host,
        port,
        username="guest",
        password="guest",
        default_batch_publishing_delay=0.01,
    ) as producer:
        for codec, count in batches:
            messages = [
                AMQPMessage(
                    body=f"{codec} record {i}".encode(),
                    application_properties={"partlog.key": f"{codec}-{i}", "codec": codec},
                )
                for i in range(count)
            ]
            # The batch is compressed in this call, with the codec
            # registered for its type now.
            gzip = BrokenGzipCodec() if codec == "broken-gzip" else GzipCompressionCodec()
            StreamCompressionCodecs.register_codec(CompressionType.Gzip, gzip)
            await producer.send_sub_entry(
                stream,
                messages,
                compression_type=CODECS[codec],
                on_publish_confirm=on_confirm,
            )
            if not await asyncio.wait_for(confirmed.get(), timeout=30):
                print(f"the {codec} batch was not confirmed", file=sys.stderr)
                sys.exit(1)


if __name__ == "__main__":
    host, port, stream, *specs = sys.argv[1:]
    batches = [(codec, int(count)) for codec, count in (s.split(":") for s in specs)]
    asyncio.run(main(host, int(port), stream, batches))
