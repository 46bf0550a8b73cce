"""CPU per call of the replica's data plane in one process: a `ReplicaServer` serving a
no-op deployment and a `ReplicaTransport` calling it over loopback gRPC, both on one
event loop, so `time.process_time()` counts both ends (server, client, gRPC's threads).

No cluster, no etcd, no proxy: it isolates the channel between a caller and a replica
(`Replica.Channel`, frames, the replica's per-call work), which is what the data plane's
changes touch, and disturbs a shared machine less than a cluster under wrk.

    python bench/replica_call_cost.py                       # HTTP calls, c=64, 3 rounds
    python bench/replica_call_cost.py --kind handle --concurrency 5 --calls 5000

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

from weir import context
from weir.dataplane.caller import DataPlane
from weir.dataplane.route_table import LeaderLocator
from weir.dataplane.transport import ReplicaTransport
from weir.handle import DeploymentHandle
from weir.protos import weir_pb2 as pb
from weir.replica.server import ReplicaServer, start_server
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


async def rounds(kind: str, concurrency: int, calls: int,
                 count: int) -> list[tuple[float, float]]:
    """CPU µs and wall µs per call of `count` rounds of `calls` calls each."""
    user = UserCallable(cloudpickle.dumps((Noop, (), {})), max_threads=concurrency)
    await user.construct()
    replica = ReplicaServer(lambda: None)
    replica.user, replica.state, replica.max_ongoing = user, pb.RUNNING, concurrency
    server, address = await start_server(replica, "127.0.0.1")
    transport = ReplicaTransport()
    plane = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "bench")
    plane.router("app", "Noop").update(concurrency, -1, [("r1", address, 0)])
    plane.transport = transport
    context.bind_loop(asyncio.get_running_loop())
    context.use_local_plane(plane)
    handle = DeploymentHandle("Noop", "app")
    left = 0

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if kind == "http":
                async for reply in transport.stream(address, http_request(left), None):
                    assert reply.outcome == pb.OK, reply
            elif kind == "remote":
                assert await handle.remote(None) == "ok"
            else:
                reply = await transport.call(address, handle_request(left), None)
                assert reply.outcome == pb.OK, reply
    try:
        await transport.call(address, handle_request(0), None)  # the channel is up
        results = []
        for _ in range(count):
            left = calls
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            results.append((cpu / calls * 1e6, wall / calls * 1e6))
    finally:
        await transport.close()
        await server.stop(0)
        user.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["http", "handle", "remote"], default="http")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WEIR_TOKEN", "")
    install_event_loop_policy()  # uvloop, as every Weir process
    results = asyncio.run(rounds(args.kind, args.concurrency, args.calls, args.rounds))
    cpus, walls = [c for c, _ in results], [w for _, w in results]
    print(f"{args.kind} c={args.concurrency} calls={args.calls}: CPU µs/call "
          f"{' '.join(f'{c:.1f}' for c in cpus)} (median {statistics.median(cpus):.1f}); "
          f"wall µs/call median {statistics.median(walls):.1f}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
