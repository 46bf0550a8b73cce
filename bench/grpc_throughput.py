"""gRPC throughput through Weir's gRPC ingress beside a bare grpc.aio server, in one run.

Systems, each on loopback:
  bare-grpc   a grpc.aio server (its own process) with the servicer itself;
  weir-grpc   the same two methods as a deployment behind a local Weir cluster's gRPC
              ingress (proxy and replica processes; schema-free passthrough).
For each: unary req/s and p50 at concurrency 1 and 32, and server-streaming messages/s
(STREAMS concurrent streams of STREAM_LEN messages). The client is one grpc.aio process;
on a 2-core machine it competes with the servers, so read the ratio, not the absolutes.

    python bench/grpc_throughput.py                  # 3 s per point
    python bench/grpc_throughput.py --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench.processes import free_port
from tests.e2e.apps.streamer_pb2 import Number
from tests.e2e.apps.streamer_pb2_grpc import StreamerStub

REPO = Path(__file__).resolve().parent.parent
STREAMS = 4
STREAM_LEN = 2000


async def _unary(target: str, concurrency: int, duration: float) -> tuple[float, float]:
    """(req/s, p50 ms) of Echo calls from `concurrency` callers for `duration` s."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = StreamerStub(channel)
        await stub.Echo(Number(value=1), timeout=10)  # warm: connection and route learned
        latencies: list[float] = []
        end = time.perf_counter() + duration

        async def caller() -> None:
            while (now := time.perf_counter()) < end:
                await stub.Echo(Number(value=1), timeout=10)
                latencies.append(time.perf_counter() - now)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


async def _streaming(target: str, duration: float) -> float:
    """Messages/s of Count streams, STREAMS at a time, for about `duration` s."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = StreamerStub(channel)
        end = time.perf_counter() + duration
        received = 0

        async def reader() -> None:
            nonlocal received
            while time.perf_counter() < end:
                async for _ in stub.Count(Number(value=STREAM_LEN), timeout=60):
                    received += 1

        started = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(STREAMS)))
        return received / (time.perf_counter() - started)


async def _measure(target: str, duration: float) -> dict[str, float]:
    one, p50_one = await _unary(target, 1, duration)
    many, p50_many = await _unary(target, 32, duration)
    return {"unary c=1 req/s": one, "p50 ms (c=1)": p50_one,
            "unary c=32 req/s": many, "p50 ms (c=32)": p50_many,
            "stream msg/s": await _streaming(target, duration)}


def _serve_bare(port: int) -> None:
    """The bare baseline's process: the servicer on a grpc.aio server, until killed."""
    from bench.grpc_app import BenchServicer
    from tests.e2e.apps.streamer_pb2_grpc import add_StreamerServicer_to_server

    async def serve() -> None:
        server = grpc.aio.server()
        add_StreamerServicer_to_server(BenchServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


def _bare(duration: float) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)], cwd=REPO)
    try:
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        return asyncio.run(_measure(target, duration))
    finally:
        proc.terminate()
        proc.wait(10)


def _weir(duration: float) -> dict[str, float]:
    from bench.grpc_app import SERVICER_FUNCTION
    from weir.cli.admin_client import AdminClient
    from weir.cli.local_cluster import LocalCluster

    os.environ["WEIR_HOME"] = tempfile.mkdtemp(prefix="weir-bench-home-")
    cluster = LocalCluster(http_port=free_port(), admin_port=0, grpc_port=0)
    info = cluster.start()
    try:
        client = AdminClient(info.address, timeout=10, token=info.token)
        client.deploy({"grpc_options": {"grpc_servicer_functions": [SERVICER_FUNCTION]},
                       "applications": [{"name": "bench", "import_path": "bench.grpc_app:app",
                                         "route_prefix": None,
                                         "runtime_env": {"working_dir": str(REPO)}}]})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get_status("bench").get("applications", {}).get("bench", {})
            if status.get("app_status", {}).get("status") == "RUNNING":
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the bench app did not reach RUNNING within 60 s")
        return asyncio.run(_measure(info.grpc, duration))
    finally:
        cluster.stop()


def main() -> None:
    """Measure both systems and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point")
    parser.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        _serve_bare(args.serve_bare)
        return
    rows = {"bare-grpc": _bare(args.duration), "weir-grpc": _weir(args.duration)}
    columns = list(rows["bare-grpc"])
    print(f"{'system':<10} " + " ".join(f"{c:>17}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<10} " + " ".join(f"{row[c]:>17.1f}" for c in columns))
    ratio = {c: rows["weir-grpc"][c] / rows["bare-grpc"][c] for c in columns}
    print(f"{'weir/bare':<10} " + " ".join(f"{ratio[c]:>17.2f}" for c in columns))


if __name__ == "__main__":
    main()
