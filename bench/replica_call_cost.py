"""CPU per call of the replica's data plane in one process: a `ReplicaServer` serving a
no-op deployment and a `ReplicaTransport` calling it over loopback gRPC, both on one
event loop, so `time.process_time()` counts both ends (server, client, gRPC's threads).

No cluster, no etcd, no proxy: it isolates the channel between a caller and a replica
(`Replica.Channel`, frames, the replica's per-call work), which is what the data plane's
changes touch, and disturbs a shared machine less than a cluster under wrk.

    python bench/replica_call_cost.py           # HTTP calls, c=64: gRPC stream vs socket
    python bench/replica_call_cost.py --kind handle --concurrency 5 --calls 5000
    python bench/replica_call_cost.py --option grpc.minimal_stack=1   # against without

`--kind remote` calls through `DeploymentHandle.remote()` and the data plane (router,
retry loop, handle metrics) with a route table set by hand: the inner hop of a composed
app, as an ingress replica makes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cloudpickle

from weir import auth, context
from weir.dataplane.caller import DataPlane
from weir.dataplane.frame_socket import FrameSocketServer
from weir.dataplane.route_table import LeaderLocator
from weir.dataplane.transport import CHANNEL_OPTIONS, ReplicaTransport
from weir.handle import DeploymentHandle
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc
from weir.replica.server import ReplicaServer
from weir.replica.user_callable import UserCallable
from weir.runtime import install_event_loop_policy


class Noop:
    """The bench's no-op deployment, sync as `bench.noop_app.Noop`."""

    def __call__(self, request: Any = None) -> str:
        return "ok"


def http_request(i: int) -> pb.CallRequest:
    """A GET / as the proxy forwards it."""
    return pb.CallRequest(request_id=f"r{i}", http=pb.HttpRequest(
        method="GET", path="/", scheme="http", http_version="1.1", root_path="",
        headers=[pb.Header(name=b"host", value=b"127.0.0.1"),
                 pb.Header(name=b"user-agent", value=b"wrk")]))


def handle_request(i: int) -> pb.CallRequest:
    """A handle call `remote(None)`, as `bench.composition_app.Forward` makes."""
    return pb.CallRequest(request_id=f"r{i}", caller="handle",
                          pickled_args=cloudpickle.dumps(((None,), {})))


class Setup:
    """One replica server and one caller (transport, data plane, handle) built with
    `options` added to the gRPC channel options on both ends; calls go on the replica's
    frame socket if `socket`, else on its gRPC stream."""

    def __init__(self, options: list[tuple[str, int]], socket: bool) -> None:
        self.options = options
        self.socket = socket

    @property
    def name(self) -> str:
        """How its calls travel."""
        return " ".join([f"{k}={v}" for k, v in self.options]
                        + ["frame socket" if self.socket else "gRPC stream"])

    async def start(self, concurrency: int) -> None:
        self.user = UserCallable(cloudpickle.dumps((Noop, (), {})), max_threads=concurrency)
        await self.user.construct()
        replica = ReplicaServer(lambda: None)
        replica.user, replica.state, replica.max_ongoing = self.user, pb.RUNNING, concurrency
        saved = list(CHANNEL_OPTIONS)
        CHANNEL_OPTIONS.extend(self.options)  # the list both ends are built from
        try:
            # Not start_server: it registers the process's metrics, once per process.
            self.server = auth.server(options=list(CHANNEL_OPTIONS))
            pb_grpc.add_ReplicaServicer_to_server(replica, self.server)
            self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
            await self.server.start()
            if self.socket:
                replica.channel_socket = FrameSocketServer(
                    lambda frames: replica.Channel(frames, None))
                await replica.channel_socket.start("127.0.0.1")
            self.transport = ReplicaTransport()
            await self.transport.call(self.address, handle_request(0), None)  # channel up
        finally:
            CHANNEL_OPTIONS[:] = saved
        self.plane = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "bench")
        self.plane.router("app", "Noop").update(concurrency, -1, [("r1", self.address, 0)])
        self.plane.transport = self.transport
        self.handle = DeploymentHandle("Noop", "app")

    async def measure(self, kind: str, concurrency: int, calls: int) -> float:
        """CPU µs per call of `calls` calls, `concurrency` at a time."""
        context.use_local_plane(self.plane)
        context.bind_loop(asyncio.get_running_loop())
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if kind == "http":
                    async for reply in self.transport.stream(self.address, http_request(left),
                                                             None):
                        assert reply.outcome == pb.OK, reply
                elif kind == "remote":
                    assert await self.handle.remote(None) == "ok"
                else:
                    reply = await self.transport.call(self.address, handle_request(left), None)
                    assert reply.outcome == pb.OK, reply

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.process_time() - cpu) / calls * 1e6

    async def stop(self) -> None:
        await self.transport.close()
        await self.server.stop(0)
        self.user.shutdown()


async def rounds(kind: str, concurrency: int, calls: int, count: int,
                 setups: list[Setup]) -> list[list[float]]:
    """CPU µs per call of each setup, `count` rounds each, the setups taking turns so that
    the machine's other work falls on all of them alike."""
    for setup in setups:
        await setup.start(concurrency)
    try:
        results: list[list[float]] = [[] for _ in setups]
        for _ in range(count):
            for setup, result in zip(setups, results, strict=True):
                result.append(await setup.measure(kind, concurrency, calls))
        return results
    finally:
        for setup in setups:
            await setup.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["http", "handle", "remote"], default="http")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a gRPC channel option (integer value) to compare against the "
                             "channel without it (on the gRPC stream); repeat to add several "
                             "to the one setup")
    args = parser.parse_args()
    options = [(name, int(value)) for name, _, value in
               (option.partition("=") for option in args.option)]
    os.environ.setdefault("WEIR_TOKEN", "")
    install_event_loop_policy()  # uvloop, as every Weir process
    setups = ([Setup([], False), Setup(options, False)] if options
              else [Setup([], False), Setup([], True)])
    results = asyncio.run(rounds(args.kind, args.concurrency, args.calls, args.rounds,
                                 setups))
    for setup, cpus in zip(setups, results, strict=True):
        print(f"{args.kind} c={args.concurrency} {setup.name}: CPU µs/call median "
              f"{statistics.median(cpus):.1f}, min {min(cpus):.1f} over {len(cpus)} rounds "
              f"of {args.calls}")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
