"""A partlog client from generated Python stubs.

Generates the stubs of proto/partlog/v1/partlog.proto with grpcio-tools, then
creates a stream, publishes keyed records, reads them as a member of a
consumer group (its assignment and its records), commits what it read, shows
the group's offsets and lag, deletes the stream, and branches on the reason
partlog gives when the stream is asked for again (google.rpc.ErrorInfo).

    python partlog_example.py [--server 127.0.0.1:50051] [--stream python-example]
"""

import argparse
import importlib
import json
import os
import pathlib
import sys
import tempfile

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "partlog/v1/partlog.proto"

# Key -> value; the key picks the partition (murmur3, as RabbitMQ's clients).
ORDERS = [
    ("customer-1001", {"total": 12}),
    ("customer-1002", {"total": 7}),
    ("customer-1003", {"total": 30}),
    ("customer-1001", {"total": 5}),
]
GROUP = "python-example"


def generate_stubs(out_dir):
    """Compiles the proto into out_dir and imports partlog_pb2(_grpc)."""
    # grpc_tools ships protoc and Google's well-known protos (duration,
    # timestamp), which partlog.proto imports.
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_ROOT / PROTO),
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT / PROTO} (status {status})")
    sys.path.insert(0, str(out_dir))
    return (
        importlib.import_module("partlog.v1.partlog_pb2"),
        importlib.import_module("partlog.v1.partlog_pb2_grpc"),
    )


def reason(error):
    """The stable reason (google.rpc.ErrorInfo) partlog put on a failed call,
    e.g. "STREAM_NOT_FOUND"; None when the status carries none."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("PARTLOG_SERVER", "127.0.0.1:50051"),
        help="partlog's host:port (default: $PARTLOG_SERVER or 127.0.0.1:50051)",
    )
    parser.add_argument("--stream", default="python-example")
    args = parser.parse_args()
    server = args.server.removeprefix("http://")

    with tempfile.TemporaryDirectory() as out_dir:
        pb, pb_grpc = generate_stubs(out_dir)
        run(pb, pb_grpc, server, args.stream)


def run(pb, pb_grpc, server, stream):
    with grpc.insecure_channel(server) as channel, grpc.insecure_channel(server) as commits:
        log = pb_grpc.PartLogStub(channel)
        # Commits go over a channel of their own: a unary call behind a busy
        # Subscribe on one HTTP/2 connection can wait on its flow control.
        committer = pb_grpc.PartLogStub(commits)

        created = log.CreateStream(pb.CreateStreamRequest(stream=stream, partitions=3))
        print(f"created {stream} with {len(created.stream.partitions)} partitions")

        answer = log.Publish(
            pb.PublishRequest(
                stream=stream,
                records=[
                    pb.PublishRecord(key=key, value=json.dumps(value).encode())
                    for key, value in ORDERS
                ],
            )
        )
        for (key, _), result in zip(ORDERS, answer.results):
            if result.HasField("error"):
                sys.exit(f"{key} was not stored: {result.error.message}")
            print(f"published {key} to partition {result.partition}")

        # A group member starts at the group's committed offset + 1, or at the
        # first record when the group never committed.
        subscription = log.Subscribe(pb.SubscribeRequest(stream=stream, group=GROUP))
        last_offsets = {}
        read = 0
        for event in subscription:
            if event.HasField("assignment"):
                state = pb.AssignmentState.Name(event.assignment.state)
                print(f"assignment: partition {event.assignment.partition} {state}")
            else:
                record = event.record
                print(
                    f"record: partition {record.partition} offset {record.offset} "
                    f"key {record.key} value {record.value.decode()}"
                )
                last_offsets[record.partition] = record.offset
                read += 1
                if read == len(ORDERS):
                    break
        # Committed while still a member: the offset of the last record read.
        committed = committer.Commit(
            pb.CommitRequest(group=GROUP, stream=stream, offsets=last_offsets)
        )
        for result in sorted(committed.results, key=lambda r: r.partition):
            print(f"committed: partition {result.partition} offset {result.committed}")
        subscription.cancel()

        offsets = log.GetOffsets(pb.GetOffsetsRequest(group=GROUP, stream=stream))
        for p in offsets.partitions:
            print(
                f"offsets: partition {p.partition} committed {p.committed} "
                f"tail {p.tail} lag {p.lag}"
            )

        log.DeleteStream(pb.DeleteStreamRequest(stream=stream))
        print(f"deleted {stream}")

        # A program branches on the reason, not on the message's words.
        try:
            log.DescribeStream(pb.DescribeStreamRequest(stream=stream))
            sys.exit(f"{stream} still exists after its deletion")
        except grpc.RpcError as error:
            if reason(error) != "STREAM_NOT_FOUND":
                raise
            print(f"describe {stream}: {error.code().name} (STREAM_NOT_FOUND)")


if __name__ == "__main__":
    main()
