"""CPU per message round trip on a channel's connection: a grpc.aio bidi stream against the
frame socket (`weir.dataplane.frame_socket`), both ends in one process, an echo replying to
every message with one, `--in-flight` messages outstanding.

It isolates what a message costs the transport itself (no replica work, no routing), the
number behind moving the channel's frames off gRPC.

    python bench/channel_message_cost.py
    python bench/channel_message_cost.py --messages 20000 --in-flight 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from weir.dataplane.frame_socket import FrameSocketServer, connect
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.runtime import install_event_loop_policy

#: A GET as the proxy sends it, and a small whole response, each one frame of a batch.
REQUEST = pb.Frame(batch=[pb.Frame(call_id=1, stream=True, request=pb.CallRequest(
    request_id="0" * 32, http=pb.HttpRequest(method="GET", path="/", scheme="http")))])
REPLY = pb.Frame(batch=[pb.Frame(call_id=1, last=True, reply=pb.CallReply(
    status=200, body=b"ok", headers=[pb.Header(name=b"content-length", value=b"2")]))])


async def echo(frames: AsyncIterator[pb.Frame]) -> AsyncIterator[pb.Frame]:
    """The replica's side: one reply per message."""
    async for _ in frames:
        yield REPLY


class _EchoServicer(pb_grpc.ReplicaServicer):
    async def Channel(self, frames: AsyncIterator[pb.Frame],
                      context: Any) -> AsyncIterator[pb.Frame]:
        async for reply in echo(frames):
            yield reply


async def _round_trips(call: Any, messages: int, in_flight: int) -> float:
    """CPU µs per round trip of `messages` round trips on `call`."""
    replies = aiter(call)
    for _ in range(in_flight):
        await call.write(REQUEST)
    cpu = time.process_time()
    for _ in range(messages):
        await anext(replies)
        await call.write(REQUEST)
    cpu = time.process_time() - cpu
    for _ in range(in_flight):
        await anext(replies)
    return cpu / messages * 1e6


async def grpc_stream(messages: int, in_flight: int) -> float:
    """Round trips on a `Replica.Channel` stream."""
    server = grpc.aio.server()
    pb_grpc.add_ReplicaServicer_to_server(_EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = pb_grpc.ReplicaStub(channel).Channel()
    try:
        return await _round_trips(call, messages, in_flight)
    finally:
        call.cancel()
        await channel.close()
        await server.stop(0)


async def frame_socket(messages: int, in_flight: int) -> float:
    """Round trips on a frame socket."""
    server = FrameSocketServer(echo, token="")
    port = await server.start("127.0.0.1")
    call = await connect("127.0.0.1", port, 5, token="")
    try:
        return await _round_trips(call, messages, in_flight)
    finally:
        call.cancel()
        await server.stop()


async def compare(messages: int, in_flight: int, rounds: int) -> dict[str, list[float]]:
    """Both connections, taking turns."""
    results: dict[str, list[float]] = {"gRPC stream": [], "frame socket": []}
    for _ in range(rounds):
        results["gRPC stream"].append(await grpc_stream(messages, in_flight))
        results["frame socket"].append(await frame_socket(messages, in_flight))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    install_event_loop_policy()  # uvloop, as every Weir process
    results = asyncio.run(compare(args.messages, args.in_flight, args.rounds))
    for name, cpus in results.items():
        print(f"{name}: CPU µs per round trip median {statistics.median(cpus):.1f}, "
              f"min {min(cpus):.1f} ({args.rounds} rounds of {args.messages}, "
              f"{args.in_flight} in flight)")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
