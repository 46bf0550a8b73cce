"""CPU per request of each Weir process on the request path, under wrk: the figure to go by
on a shared machine, where req/s moves with the neighbours' work far more than CPU time.

One `weir start` cluster runs both apps of the composition bench (`/single`: the no-op;
`/composed`: an ingress making one handle call to the no-op). For each path, after a warm-up,
it reads user+system time (`/proc/PID/stat`) of the proxy and of each replica around one
`wrk -t1 -cC -dDs` run and divides by the requests served. Rounds alternate the paths.

    python bench/request_cpu.py --http-server uvicorn
    WEIR_CHANNEL_SOCKET=0 python bench/request_cpu.py      # every channel on gRPC
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.composition import REPLICAS, composition_config, start
from bench.processes import free_port, pids_with_env, wait_http_ok
from bench.weir_cluster import WeirCluster
from weir.cli.admin_client import AdminClient

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def wrk(url: str, connections: int, seconds: float) -> int:
    """Requests wrk completed (non-2xx counted as errors: any fails the run)."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", url],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    match = re.search(r"(\d+) requests in", out)
    if match is None:
        raise RuntimeError(f"no request count in wrk's output:\n{out}")
    return int(match.group(1))


def processes(cluster: WeirCluster, count: int = REPLICAS, timeout: float = 60) -> dict[str, int]:
    """PID by role: proxy, and each replica as application/deployment, once all `count`
    replicas run."""
    client = AdminClient(cluster.admin_address, timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        running = [r for r in client.list_replicas() if r["state"] == "RUNNING" and r["pid"]]
        if len(running) >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(running)} of {count} replicas run")
        time.sleep(0.5)
    pids = {"proxy": _proxy_pid(cluster)}
    for replica in running:
        pids[f"{replica['app']}/{replica['deployment']}"] = int(replica["pid"])
    return pids


def _proxy_pid(cluster: WeirCluster) -> int:
    for pid in pids_with_env("WEIR_HOME", str(cluster.home)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"weir.proxy" in cmdline:
            return pid
    raise RuntimeError("no proxy process found")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-server", choices=("hypercorn", "uvicorn"), default="uvicorn")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paths", default="single,composed")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="weir-request-cpu-"))
    cluster = WeirCluster(home, free_port(), free_port(), http_server=args.http_server)
    try:
        with cluster:
            start(cluster, args.http_server, 90)
            cluster.deploy_config(composition_config())
            paths = args.paths.split(",")
            for path in paths:
                wait_http_ok(f"{cluster.url}{path}", 90)
            pids = processes(cluster)
            channel = "gRPC" if os.environ.get("WEIR_CHANNEL_SOCKET") == "0" else "socket"
            print(f"# {args.http_server}, channel {channel}, c={args.connections}, "
                  f"{args.duration} s; pids {pids}")
            for round_ in range(args.rounds):
                for path in paths:
                    url = f"{cluster.url}{path}"
                    wrk(url, args.connections, 1.0)  # warm-up
                    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
                    started = time.monotonic()
                    served = wrk(url, args.connections, args.duration)
                    elapsed = time.monotonic() - started
                    per_request = {role: (cpu_seconds(pid) - before[role]) / served * 1e6
                                   for role, pid in pids.items()}
                    print(f"round {round_ + 1} /{path}: {served / elapsed:,.0f} req/s; "
                          "CPU µs/request " + ", ".join(
                              f"{role} {us:.0f}" for role, us in per_request.items()
                              if us >= 1) + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
