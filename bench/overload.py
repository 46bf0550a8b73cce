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
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_client import read_response
from bench.processes import free_port
from bench.weir_cluster import REPO_ROOT, WeirCluster, app_config

ADMITTED = 2 * 4  # replicas x max_ongoing_requests
QUEUED = 8


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
        next_at = time.perf_counter() + offset
        try:
            while time.perf_counter() < stop_at:
                if interval:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
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


def drive_in_process(url: str, connections: int, duration_s: float, rate: float
                     ) -> tuple[collections.Counter[int], list[float], list[float], float, float]:
    """`drive` in this process; also returns the CPU seconds this process used."""
    started = time.process_time()
    statuses, ok, shed, elapsed = asyncio.run(drive(url, connections, duration_s, rate))
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
    parser.add_argument("--py-spy", default="", metavar="FILE",
                        help="record the proxy (worker 0) with py-spy during the overload, "
                             "to FILE (py-spy's raw format: collapsed stacks)")
    args = parser.parse_args()
    service_s = args.service_ms / 1000
    os.environ["WEIR_PROXY_ADMISSION"] = args.admission  # the cluster's processes inherit it
    with tempfile.TemporaryDirectory(prefix="weir-overload-") as home:
        flags = ["--proxy-workers", str(args.proxy_workers)] if args.proxy_workers > 1 else []
        cluster = OverloadCluster(Path(home), free_port(), free_port(), args.http_server,
                                  start_flags=flags)
        with cluster:
            cluster.start()
            config = app_config("bench.overload_app:app", REPO_ROOT)
            config["applications"][0]["deployments"] = [  # type: ignore[index]
                {"name": "Work", "user_config": {"service_s": service_s}}]
            cluster.deploy_config(config)
            cluster.wait_serving()
            import json

            proxy_pid = json.loads((Path(home) / "cluster.json").read_text())["pids"]["proxy"]
            asyncio.run(drive(cluster.url, 4, 2.0))  # warm-up
            unloaded, unloaded_lat, _, _ = asyncio.run(drive(cluster.url, 1, 5.0))
            pids = proxy_pids(proxy_pid)
            rss_before = sum(rss_kib(p) for p in pids)
            cpu_before = sum(cpu_s(p) for p in pids)
            connections = 200
            offered = args.factor * ADMITTED / service_s
            profiler = start_profiler(args.py_spy, proxy_pid, args.duration)
            loaded, loaded_lat, shed_lat, elapsed, client_cpu = drive_processes(
                cluster.url, connections, args.duration, offered, args.clients)
            if profiler is not None:
                profiler.wait(timeout=30)
            rss_after = sum(rss_kib(p) for p in pids)
            proxy_cpu = sum(cpu_s(p) for p in pids) - cpu_before
    capacity = ADMITTED / service_s
    queue_wait_ms = QUEUED / capacity * 1000
    bound = 2 * pct(unloaded_lat, 99) + queue_wait_ms + service_s * 1000
    total = sum(loaded.values())
    other = {s: n for s, n in loaded.items() if s not in (200, 503)}
    print(f"proxy on {args.http_server} x {len(pids)} worker(s), admission {args.admission}; "
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
    print(f"proxy RSS (all workers): {rss_before / 1024:.1f} MiB before, "
          f"{rss_after / 1024:.1f} MiB after {args.duration:.0f} s of overload")
    print(f"load client CPU: {client_cpu:.1f} s over {args.clients} process(es) "
          f"({client_cpu / elapsed:.0%} of a core)")
    print(f"proxy CPU under overload: {proxy_cpu:.1f} s, {proxy_cpu / max(1, total) * 1e6:.0f} "
          f"us per request")


if __name__ == "__main__":
    main()
