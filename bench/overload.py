"""Overload: ten times the capacity for 30 s against a deployment with bounded queues.

The deployment (bench/overload_app.py) takes 20 ms a request (--service-ms), 2 replicas with
max_ongoing_requests=4 and max_queued_requests=8: it admits 8 at once plus 8 queued in the
proxy. The benchmark measures it unloaded (one connection), then offers ten times its
capacity in req/s over 200 keep-alive connections and checks what load shedding promises:
every response is 200 or 503; admitted requests' p99 stays within twice the unloaded p99
plus the queue's wait bound; the proxy's memory stays flat. Offered load is paced (open
loop): a shed request does not make its client send the next one sooner.

    python bench/overload.py                  # 30 s of overload
    python bench/overload.py --duration 10
    python bench/overload.py --service-ms 100 # a model-sized request: 10x is 800 req/s

With 20 ms requests, 10x capacity is 4,000 req/s: more than one proxy process can take on a
machine whose cores it shares with the load client and the replicas. The proxy then queues
in its own event loop, and admitted requests wait there, not in the bounded queue.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_client import read_response
from bench.overload_app import SERVICER_FUNCTION
from bench.processes import free_port
from bench.weir_cluster import REPO_ROOT, WeirCluster, app_config

ADMITTED = 2 * 4  # replicas x max_ongoing_requests
QUEUED = 8
#: gRPC channels (connections) the callers of `drive_grpc` share.
GRPC_CHANNELS = 8


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_pids(pid: int) -> list[int]:
    """The proxy and its workers (`--proxy-workers`: its children)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(c) for c in children.read_text().split())]


class OverloadCluster(WeirCluster):
    """A WeirCluster whose `weir start` gets more flags (e.g. --proxy-workers)."""

    def __init__(self, *args: object, start_flags: list[str]) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.start_flags = start_flags

    def cli(self, argv: list[str], timeout: float) -> str:
        """As WeirCluster's, with the start flags added to `weir start`."""
        return super().cli([*argv, *self.start_flags] if argv[0] == "start" else argv,
                           timeout)


async def sends(offset: float, interval: float, stop_at: float) -> AsyncIterator[None]:
    """One connection's schedule: yields when it is to send, `offset` s from now and then
    every `interval` s (or at once, if 0 or late), until perf_counter() `stop_at`."""
    next_at = time.perf_counter() + offset
    while time.perf_counter() < stop_at:
        if interval:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
        yield


async def drive(url: str, connections: int, duration_s: float, rate: float = 0.0
                ) -> tuple[collections.Counter[int], list[float], list[float], float]:
    """Load over keep-alive connections: back to back, or with `rate` the offered req/s
    spread evenly over the connections (each sends on its schedule, or as soon as its
    previous response is in if that is later). Returns statuses, latencies of 200s and of
    503s (s) and the elapsed time."""
    interval = connections / rate if rate else 0.0
    parts = urlsplit(url)
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    statuses: collections.Counter[int] = collections.Counter()
    ok_latencies: list[float] = []
    shed_latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s

    async def connection(offset: float) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            async for _ in sends(offset, interval, stop_at):
                started = time.perf_counter()
                writer.write(request)
                try:
                    status, keep_alive = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status, keep_alive = 0, False
                statuses[status] += 1
                if status == 200:
                    ok_latencies.append(time.perf_counter() - started)
                elif status == 503:
                    shed_latencies.append(time.perf_counter() - started)
                if not keep_alive:
                    writer.close()
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(i * interval / connections) for i in range(connections)))
    return statuses, ok_latencies, shed_latencies, time.perf_counter() - began


async def drive_grpc(target: str, callers: int, duration_s: float, rate: float = 0.0
                     ) -> tuple[collections.Counter[int], list[float], list[float], float]:
    """`drive` for the gRPC ingress: `callers` paced as `drive`'s connections, calling
    userdefined.Streamer/Echo over GRPC_CHANNELS channels. Statuses as HTTP's: 200 for OK,
    503 for RESOURCE_EXHAUSTED, 0 for any other code."""
    import grpc

    from tests.e2e.apps.streamer_pb2 import Number
    from tests.e2e.apps.streamer_pb2_grpc import StreamerStub

    interval = callers / rate if rate else 0.0
    statuses: collections.Counter[int] = collections.Counter()
    ok_latencies: list[float] = []
    shed_latencies: list[float] = []
    channels = [grpc.aio.insecure_channel(target) for _ in range(GRPC_CHANNELS)]
    stubs = [StreamerStub(channel) for channel in channels]
    stop_at = time.perf_counter() + duration_s

    async def caller(index: int, offset: float) -> None:
        echo = stubs[index % len(stubs)].Echo
        async for _ in sends(offset, interval, stop_at):
            started = time.perf_counter()
            try:
                await echo(Number(value=1), timeout=30)
                status = 200
            except grpc.aio.AioRpcError as exc:
                status = 503 if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else 0
            statuses[status] += 1
            if status == 200:
                ok_latencies.append(time.perf_counter() - started)
            elif status == 503:
                shed_latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    try:
        await asyncio.gather(*(caller(i, i * interval / callers) for i in range(callers)))
    finally:
        for channel in channels:
            await channel.close()
    return statuses, ok_latencies, shed_latencies, time.perf_counter() - began


def drive_any(url: str, connections: int, duration_s: float, rate: float = 0.0
              ) -> tuple[collections.Counter[int], list[float], list[float], float]:
    """`drive` for an http:// URL, `drive_grpc` for a grpc://host:port one."""
    if url.startswith("grpc://"):
        return asyncio.run(drive_grpc(url.removeprefix("grpc://"), connections, duration_s,
                                      rate))
    return asyncio.run(drive(url, connections, duration_s, rate))


def drive_in_process(url: str, connections: int, duration_s: float, rate: float
                     ) -> tuple[collections.Counter[int], list[float], list[float], float, float]:
    """`drive` in this process; also returns the CPU seconds this process used."""
    started = time.process_time()
    statuses, ok, shed, elapsed = drive_any(url, connections, duration_s, rate)
    return statuses, ok, shed, elapsed, time.process_time() - started


def drive_processes(url: str, connections: int, duration_s: float, rate: float,
                    clients: int) -> tuple[collections.Counter[int], list[float], list[float],
                                           float, float]:
    """`drive` split over `clients` processes (one Python load client tops out near 3,000
    req/s, below the offered 4,000, and its own lateness lands in every latency it reads).
    Returns the merged statuses and latencies, the longest elapsed time and the clients'
    CPU seconds in all."""
    with concurrent.futures.ProcessPoolExecutor(clients) as pool:
        parts = list(pool.map(drive_in_process, *zip(*[
            (url, connections // clients, duration_s, rate / clients)] * clients, strict=True)))
    statuses: collections.Counter[int] = collections.Counter()
    for part in parts:
        statuses.update(part[0])
    return (statuses, [x for p in parts for x in p[1]], [x for p in parts for x in p[2]],
            max(p[3] for p in parts), sum(p[4] for p in parts))


def start_profiler(path: str, pid: int, duration_s: float) -> subprocess.Popen[bytes] | None:
    """py-spy recording process `pid` for `duration_s` to `path` (raw collapsed stacks), if
    a path is given."""
    if not path:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration",
                             str(max(1, int(duration_s))), "--rate", "200", "--format", "raw",
                             "--nonblocking", "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, in ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000 if ordered else 0.0


#: The refusal paths `--shed-cost` compares: the HTTP server and where the 503 is written.
SHED_PATHS = ("hypercorn-gate", "hypercorn-protocol", "uvicorn-protocol")


class AlwaysShed:
    """An admission (duck-typed `weir.proxy.admission.Admission`) that sheds every request,
    with the data plane's text."""

    TEXT = "Request dropped due to backpressure (num_queued_requests=8, max_queued_requests=8)."

    def check(self, path: str, method: str) -> tuple[None, str]:
        """Shed."""
        return None, self.TEXT

    def enter(self, key: tuple[str, str]) -> None:
        """Nothing is admitted."""

    def leave(self, key: tuple[str, str]) -> None:
        """Nothing is admitted."""


def serve_shedding(path: str, port: int) -> None:
    """Serve on `port` an HTTP server that sheds every request by the proxy's own code on
    refusal path `path` (one of SHED_PATHS), until killed."""
    from typing import Any

    from weir.proxy.admission import AdmissionGate
    from weir.proxy.hypercorn_admission import admission_in_protocol
    from weir.proxy.ingress_limits import IngressLimits

    async def unreached(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("every request is shed before the app")

    admission: Any = AlwaysShed()
    app = AdmissionGate(unreached, admission)
    if path.startswith("uvicorn"):
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                    lifespan="off", **IngressLimits().uvicorn_settings(admission))
        return
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind, config.accesslog = [f"127.0.0.1:{port}"], None
    with admission_in_protocol(admission if path == "hypercorn-protocol" else None):
        asyncio.run(serve(app, config))  # type: ignore[arg-type]


def shed_cost(rounds: int, duration_s: float) -> None:
    """Print the CPU a shed request costs the HTTP server on each of SHED_PATHS: a server
    of its own shedding everything, driven back to back over 50 keep-alive connections,
    the paths interleaved `rounds` times (compare within a round)."""
    print(f"{'refusal path':<20}{'requests':>10}{'req/s':>8}{'server us/req':>15}")
    for _ in range(rounds):
        for path in SHED_PATHS:
            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--serve-shedding", path,
                                       "--port", str(port)], stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}/"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        asyncio.run(drive(url, 1, 0.2))
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                before = cpu_s(server.pid)
                statuses, _, _, elapsed = asyncio.run(drive(url, 50, duration_s))
                used = cpu_s(server.pid) - before
                total = sum(statuses.values())
                assert set(statuses) == {503}, statuses
                print(f"{path:<20}{total:>10}{total / elapsed:>8.0f}"
                      f"{used / max(1, total) * 1e6:>15.1f}", flush=True)
            finally:
                server.terminate()
                server.wait(10)


def main() -> None:
    """Run the unloaded and overloaded phases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--factor", type=int, default=10, help="times the admission capacity")
    parser.add_argument("--http-server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    parser.add_argument("--admission", choices=("on", "off", "gate"), default="on",
                        help="off: the proxy sheds only in its app (WEIR_PROXY_ADMISSION=off); "
                             "gate: in its first ASGI wrapper, not in the server's protocol; "
                             "to compare")
    parser.add_argument("--clients", type=int, default=1,
                        help="load client processes for the overload phase")
    parser.add_argument("--proxy-workers", type=int, default=1,
                        help="weir start --proxy-workers (absent from older CLIs: 1 omits it)")
    parser.add_argument("--service-ms", type=float, default=20.0,
                        help="each request's work in the replica")
    parser.add_argument("--max-loop-lag-ms", type=float, default=0.0,
                        help="the proxy's loop-lag guard (WEIR_PROXY_MAX_LOOP_LAG_MS; 0: its "
                             "default)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http",
                        help="grpc: call the deployment's Echo through the gRPC ingress")
    parser.add_argument("--py-spy", default="", metavar="FILE",
                        help="record the proxy (worker 0) with py-spy during the overload, "
                             "to FILE (py-spy's raw format: collapsed stacks)")
    parser.add_argument("--shed-cost", type=int, default=0, metavar="ROUNDS",
                        help="instead: the CPU a shed request costs on each refusal path "
                             "(HTTP servers of their own, no cluster), ROUNDS times")
    parser.add_argument("--serve-shedding", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_shedding:
        serve_shedding(args.serve_shedding, args.port)
        return
    if args.shed_cost:
        shed_cost(args.shed_cost, 4.0)
        return
    service_s = args.service_ms / 1000
    os.environ["WEIR_PROXY_ADMISSION"] = args.admission  # the cluster's processes inherit it
    if args.max_loop_lag_ms:
        os.environ["WEIR_PROXY_MAX_LOOP_LAG_MS"] = str(args.max_loop_lag_ms)
    with tempfile.TemporaryDirectory(prefix="weir-overload-") as home:
        flags = ["--proxy-workers", str(args.proxy_workers)] if args.proxy_workers > 1 else []
        grpc_port = free_port()
        if args.protocol == "grpc":
            flags += ["--grpc-port", str(grpc_port)]
        cluster = OverloadCluster(Path(home), free_port(), free_port(), args.http_server,
                                  start_flags=flags)
        with cluster:
            cluster.start()
            config = app_config("bench.overload_app:app", REPO_ROOT)
            config["applications"][0]["deployments"] = [  # type: ignore[index]
                {"name": "Work", "user_config": {"service_s": service_s}}]
            if args.protocol == "grpc":
                config["grpc_options"] = {"grpc_servicer_functions": [SERVICER_FUNCTION]}
            cluster.deploy_config(config)
            cluster.wait_serving()
            import json

            proxy_pid = json.loads((Path(home) / "cluster.json").read_text())["pids"]["proxy"]
            url = f"grpc://127.0.0.1:{grpc_port}" if args.protocol == "grpc" else cluster.url
            drive_any(url, 4, 2.0)  # warm-up
            unloaded, unloaded_lat, _, _ = drive_any(url, 1, 5.0)
            pids = proxy_pids(proxy_pid)
            rss_before = sum(rss_kib(p) for p in pids)
            cpu_before = sum(cpu_s(p) for p in pids)
            connections = 200
            offered = args.factor * ADMITTED / service_s
            profiler = start_profiler(args.py_spy, proxy_pid, args.duration)
            loaded, loaded_lat, shed_lat, elapsed, client_cpu = drive_processes(
                url, connections, args.duration, offered, args.clients)
            if profiler is not None:
                profiler.wait(timeout=30)
            rss_after = sum(rss_kib(p) for p in pids)
            proxy_cpu = sum(cpu_s(p) for p in pids) - cpu_before
            # Admission's counts must come back to 0: one connection answers 200 again.
            after, _, _, _ = drive_any(url, 1, 2.0)
    capacity = ADMITTED / service_s
    queue_wait_ms = QUEUED / capacity * 1000
    bound = 2 * pct(unloaded_lat, 99) + queue_wait_ms + service_s * 1000
    total = sum(loaded.values())
    other = {s: n for s, n in loaded.items() if s not in (200, 503)}
    if args.protocol == "grpc":
        print("gRPC ingress (userdefined.Streamer/Echo): 200 = OK, 503 = RESOURCE_EXHAUSTED")
    lag = f", loop-lag guard {args.max_loop_lag_ms:.0f} ms" if args.max_loop_lag_ms else ""
    print(f"proxy on {args.http_server} x {len(pids)} worker(s), admission {args.admission}"
          f"{lag}; "
          f"deployment: 2 replicas x "
          f"max_ongoing_requests=4, max_queued_requests=8, {service_s * 1000:.0f} ms per request; "
          f"capacity ~{capacity:.0f} req/s")
    print(f"{'phase':<12}{'conns':>7}{'requests':>10}{'200':>8}{'503':>8}{'other':>7}"
          f"{'200/s':>8}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'unloaded':<12}{1:>7}{sum(unloaded.values()):>10}{unloaded[200]:>8}"
          f"{unloaded[503]:>8}{0:>7}{unloaded[200] / 5.0:>8.0f}{pct(unloaded_lat, 50):>9.1f}"
          f"{pct(unloaded_lat, 99):>9.1f}")
    print(f"offered {offered:.0f} req/s ({args.factor}x capacity) over {connections} "
          f"keep-alive connections for {args.duration:.0f} s")
    print(f"{'overload':<12}{connections:>7}{total:>10}{loaded[200]:>8}{loaded[503]:>8}"
          f"{sum(other.values()):>7}{loaded[200] / elapsed:>8.0f}{pct(loaded_lat, 50):>9.1f}"
          f"{pct(loaded_lat, 99):>9.1f}")
    print(f"admitted p99 bound (2 x unloaded p99 + queue wait + service): {bound:.1f} ms -> "
          f"{'within' if pct(loaded_lat, 99) <= bound else 'OVER'}")
    print(f"503s (how late a shed answer is): p50 {pct(shed_lat, 50):.1f} ms, "
          f"p99 {pct(shed_lat, 99):.1f} ms")
    print(f"responses other than 200/503: {other or 'none'}")
    print(f"after the overload, one connection for 2 s: {after[200]} x 200, "
          f"{sum(after.values()) - after[200]} other")
    print(f"proxy RSS (all workers): {rss_before / 1024:.1f} MiB before, "
          f"{rss_after / 1024:.1f} MiB after {args.duration:.0f} s of overload")
    print(f"load client CPU: {client_cpu:.1f} s over {args.clients} process(es) "
          f"({client_cpu / elapsed:.0%} of a core)")
    print(f"proxy CPU under overload: {proxy_cpu:.1f} s, {proxy_cpu / max(1, total) * 1e6:.0f} "
          f"us per request")


if __name__ == "__main__":
    main()
