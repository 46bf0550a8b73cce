"""What one route version costs each subscriber, in-process: the leader's serialization of
the delta, the subscriber's parse and apply (`RouteTable.with_delta`), and what a proxy's
data plane does after (`DataPlane._on_table`: its routers take the changed deployments,
a change of load alone as the changed replicas' counts, anything else whole).

Two changes per size: one replica added (a change of the replica set, as a probe or a
rolling update makes) and 5 % of the replicas with a new load (what the leader publishes
every LOAD_PUBLISH_INTERVAL_S), each sent whole (`ReplicaTarget`s) and, for the load, in
the compact form (`compact_load`: positions and counts). `copy_us` is one copy of the
changed deployment: the floor of an apply that makes a new deployment object (a change of
the replicas, or whole targets); a compact change of load alone is set in place and copies
nothing (`apply_delta`'s `loads_in_place`).
CPU time (`time.process_time`), the median of `--repeat` runs, in microseconds.

    python -m bench.route_fanout --replicas 1000 2000 5000 10000 [--grpc]

With `--grpc`, `receive_us` is a grpc.aio stream's CPU per message received and parsed
(a server in another process sends the delta every 2 ms): what a subscriber pays per
version before it applies anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from weir.dataplane.caller import DataPlane
from weir.dataplane.route_delta import (
    compact_load,
    index_table,
    replica_order,
    targets_delta,
    whole_table,
)
from weir.dataplane.route_table import LeaderLocator, RouteTable
from weir.processes import free_port
from weir.protos import weir_pb2 as pb

KEY = ("app", "model")


def table_of(replicas: int) -> pb.RouteTable:
    """A whole table: one deployment of `replicas` replicas, sorted by id."""
    table = pb.RouteTable(version=1)
    table.routes.add(route_prefix="/", app=KEY[0], deployment=KEY[1])
    d = table.deployments.add(app=KEY[0], deployment=KEY[1], max_ongoing_requests=5,
                              max_queued_requests=-1)
    for i in range(replicas):
        d.replicas.add(replica_id=f"replica-{i:06d}", address=f"10.0.{i // 250}.{i % 250}:9000",
                       ongoing=i % 5)
    return table


def changes(table: pb.RouteTable, share: float, rng: random.Random
            ) -> dict[tuple[str, str], dict[str, pb.ReplicaTarget | None]]:
    """New loads for `share` of the replicas (0: one replica added instead)."""
    replicas = table.deployments[0].replicas
    if not share:
        return {KEY: {"replica-zz": pb.ReplicaTarget(replica_id="replica-zz",
                                                      address="10.9.9.9:9000", ongoing=1)}}
    chosen = rng.sample(range(len(replicas)), max(1, int(len(replicas) * share)))
    return {KEY: {replicas[i].replica_id: pb.ReplicaTarget(
        replica_id=replicas[i].replica_id, address=replicas[i].address,
        ongoing=replicas[i].ongoing + 1) for i in chosen}}


def cpu_us(run: Callable[[], Any], repeat: int) -> float:
    """The median CPU time of `run`, in microseconds."""
    times = []
    for _ in range(repeat):
        start = time.process_time_ns()
        run()
        times.append((time.process_time_ns() - start) / 1000)
    return statistics.median(times)


def measure(replicas: int, share: float, compact: bool, repeat: int) -> dict[str, Any]:
    """The costs of one version's delta at `replicas`, for `share` of them changed."""
    rng = random.Random(replicas)
    whole = table_of(replicas)
    old = index_table(whole)
    delta, index = targets_delta(1, old, whole, changes(whole, share, rng))
    if compact:
        delta = compact_load(delta, old, lambda key: replica_order(index[key].targets))
    wire = delta.SerializeToString()
    # The subscriber's positions warm, as after a stream's first two deltas (5 % of the
    # replicas' load up, then back: the table is `whole` again).
    bump = changes(whole, 0.05, rng)
    up, bumped = targets_delta(1, old, whole, bump)
    back, _ = targets_delta(2, bumped, whole, {KEY: {rid: old[KEY].targets[rid]
                                                     for rid in bump[KEY]}})
    base = RouteTable.from_proto(whole).with_delta(up).with_delta(back)
    plane = DataPlane(LeaderLocator(controllers=["127.0.0.1:1"]), "bench")
    plane._on_table(base)  # the proxy's own callback, measured as it is
    parsed = pb.RouteTable.FromString(wire)
    applied = base.with_delta(parsed)
    if applied.deployments[KEY] != whole_table(whole, index).deployments[0]:
        raise AssertionError(f"the {'compact' if compact else 'whole'} delta at {replicas} "
                             "replicas did not give the leader's table")

    def on_table() -> None:
        plane._applied = dict(base.deployments)  # as after the table before
        plane._on_table(applied)

    on_table()
    router = plane.routers[KEY]
    if [(s.replica_id, s.reported) for s in router._slots.values()] != [
            (t.replica_id, t.ongoing) for t in applied.deployments[KEY].replicas]:
        raise AssertionError(f"the proxy's router at {replicas} replicas did not take the "
                             "table's loads")

    def copy() -> None:
        pb.DeploymentTargets().CopyFrom(base.deployments[KEY])

    return {
        "replicas": replicas, "change": f"{share:.0%} load" if share else "1 replica added",
        "form": "compact" if compact else "whole", "bytes": len(wire),
        "serialize_us": round(cpu_us(delta.SerializeToString, repeat), 1),
        "parse_us": round(cpu_us(lambda: pb.RouteTable.FromString(wire), repeat), 1),
        "apply_us": round(cpu_us(lambda: base.with_delta(parsed), repeat), 1),
        # The floor of an apply: the changed deployment copied, as the new table needs.
        "copy_us": round(cpu_us(copy, repeat), 1),
        "on_table_us": round(cpu_us(on_table, repeat), 1),
        "wire": wire,
    }


#: The stream `receive_us` measures: a server in a process of its own sends the same bytes.
_METHOD = "/bench.RouteFanout/Stream"


def _serve(port: int, wire: bytes, count: int, gap_s: float) -> None:
    async def stream(_request: bytes, _context: Any) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield wire
            await asyncio.sleep(gap_s)

    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "bench.RouteFanout", {"Stream": grpc.unary_stream_rpc_method_handler(stream)})])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def receive_us(wire: bytes, count: int = 400, gap_s: float = 0.002) -> float:
    """The CPU a subscriber's event loop spends per message of a grpc.aio stream, the
    message parsed (as the subscriber's stub does) and nothing else done with it: one
    message every `gap_s`, as versions come, each waking the loop on its own."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, wire, count, gap_s), daemon=True)
    server.start()

    async def read() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            call = channel.unary_stream(_METHOD, response_deserializer=pb.RouteTable.FromString)
            stream, got = call(b""), 0
            start = time.process_time_ns()
            async for _ in stream:
                got += 1
            spent = time.process_time_ns() - start
        if got != count:
            raise AssertionError(f"the stream sent {got} of {count} messages")
        return spent / count / 1000

    try:
        return asyncio.run(read())
    finally:
        server.kill()
        server.join(10)


def main() -> None:
    """Print one JSON line per size, change and form."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--grpc", action="store_true",
                        help="also time receiving each delta on a grpc.aio stream")
    args = parser.parse_args()
    for replicas in args.replicas:
        for share, compact in ((0.0, False), (0.05, False), (0.05, True)):
            row = measure(replicas, share, compact, args.repeat)
            if args.grpc:
                row["receive_us"] = round(receive_us(row.pop("wire")), 1)
            row.pop("wire", None)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
