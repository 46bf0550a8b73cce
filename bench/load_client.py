"""Load generators: `wrk` when it is installed, else a lean asyncio HTTP/1.1 client.

Both hold `concurrency` keep-alive connections, each sending its next GET as soon as the
previous answer is in (a closed loop), warm up first, and report requests per second and
the 50th and 99th percentile latency of the measured window only. wrk is preferred: it is
C and costs the machine far less CPU per request than any Python client, which matters on
a 2-core box where the load generator and the servers share the cores.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

# wrk's `done` hook hands its own latency histogram to Lua; print it as one JSON line.
WRK_REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p99_us": %.0f, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""
WRK_MARKER = "WRK_JSON "
REQUEST_TIMEOUT_S = 10.0


class LoadError(RuntimeError):
    """The load generator could not run or its output could not be read."""


@dataclass
class Measurement:
    """One measured point: a system under one concurrency."""

    client: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        """The measurement as plain JSON-ready data."""
        return asdict(self)


class LoadClient(Protocol):
    """What the bench needs from a load generator."""

    name: str

    def measure(self, url: str, concurrency: int, duration_s: float,
                warmup_s: float) -> Measurement:
        """Warm up for `warmup_s`, then load `url` for `duration_s` and report."""
        ...


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile `q` (0-100) of an ascending list (0 if empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class WrkClient:
    """Runs wrk (one thread by default, to leave the cores to the servers)."""

    name = "wrk"

    def __init__(self, binary: str, threads: int = 1) -> None:
        self.binary = binary
        self.threads = threads

    def measure(self, url: str, concurrency: int, duration_s: float,
                warmup_s: float) -> Measurement:
        """Warm up, then measure; wrk counts whole seconds, so durations are rounded."""
        with tempfile.TemporaryDirectory(prefix="weir-bench-wrk-") as tmp:
            script = Path(tmp) / "report.lua"
            script.write_text(WRK_REPORT_LUA)
            if warmup_s > 0:
                self._run(url, concurrency, warmup_s, script)
            report = self._run(url, concurrency, duration_s, script)
        elapsed = report["duration_us"] / 1e6
        errors = sum(int(report[k]) for k in ("connect", "read", "write", "status", "timeout"))
        requests = int(report["requests"])
        return Measurement(self.name, concurrency, round(elapsed, 3), requests, errors,
                           requests / elapsed if elapsed else 0.0,
                           report["p50_us"] / 1000, report["p99_us"] / 1000)

    def _run(self, url: str, concurrency: int, duration_s: float,
             script: Path) -> dict[str, float]:
        seconds = max(1, round(duration_s))
        argv = [self.binary, f"-t{min(self.threads, concurrency)}", f"-c{concurrency}",
                f"-d{seconds}s", f"--timeout={REQUEST_TIMEOUT_S:.0f}s", "-s", str(script), url]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=seconds + 30)
        except subprocess.TimeoutExpired as exc:
            raise LoadError(f"wrk did not finish within {seconds + 30} s") from exc
        for line in done.stdout.splitlines():
            if line.startswith(WRK_MARKER):
                report: dict[str, float] = json.loads(line[len(WRK_MARKER):])
                return report
        raise LoadError(f"wrk exited with code {done.returncode} and no report: "
                        f"{(done.stderr or done.stdout).strip()[-500:]}")


class PythonClient:
    """An asyncio HTTP/1.1 keep-alive client over raw streams (on uvloop if installed)."""

    name = "python"

    def measure(self, url: str, concurrency: int, duration_s: float,
                warmup_s: float) -> Measurement:
        """Run `concurrency` connections for warm-up plus `duration_s`; report the latter."""
        try:
            import uvloop
        except ImportError:
            return asyncio.run(self._measure(url, concurrency, duration_s, warmup_s))
        return uvloop.run(self._measure(url, concurrency, duration_s, warmup_s))

    async def _measure(self, url: str, concurrency: int, duration_s: float,
                       warmup_s: float) -> Measurement:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   f"User-Agent: weir-bench\r\n\r\n").encode()
        start = time.perf_counter()
        measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
        latencies: list[int] = []
        errors = [0]
        workers = [asyncio.ensure_future(
            _connection_loop(host, port, request, measure_from, stop_at, latencies, errors))
            for _ in range(concurrency)]
        # One watchdog for all connections: cheaper than a timeout around every request.
        _, stuck = await asyncio.wait(workers, timeout=warmup_s + duration_s + REQUEST_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        elapsed = time.perf_counter() - measure_from
        errors[0] += len(stuck)
        latencies.sort()
        return Measurement(self.name, concurrency, round(elapsed, 3), len(latencies), errors[0],
                           len(latencies) / elapsed if elapsed > 0 else 0.0,
                           percentile(latencies, 50) / 1e6, percentile(latencies, 99) / 1e6)


async def _connection_loop(host: str, port: int, request: bytes, measure_from: float,
                           stop_at: float, latencies: list[int], errors: list[int]) -> None:
    """One keep-alive connection sending requests back to back until `stop_at`."""
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while (started := time.perf_counter()) < stop_at:
            if writer is None or reader is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    errors[0] += started >= measure_from
                    await asyncio.sleep(0.01)  # back off a refused connect, not a readiness wait
                    continue
            t0 = time.perf_counter_ns()
            try:
                writer.write(request)
                status, keep_alive = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status, keep_alive = 0, False
            if started >= measure_from:
                latencies.append(time.perf_counter_ns() - t0)
                errors[0] += status != 200
            if not keep_alive:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; return its status and whether the connection stays open.

    Handles Content-Length, chunked, and close-delimited bodies; the body is discarded.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    chunked = False
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = b"close" not in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            await reader.readexactly(size + 2)
    elif length is not None:
        await reader.readexactly(length)
    elif status >= 200 and status not in (204, 304):
        await reader.read()  # close-delimited body
        keep_alive = False
    return status, keep_alive


def choose_client(kind: str, wrk_threads: int = 1) -> LoadClient:
    """The client for `--client auto|wrk|python`; auto takes wrk if it is on PATH."""
    binary = shutil.which("wrk")
    if kind == "wrk" and binary is None:
        raise LoadError("--client wrk: no `wrk` on PATH (apt-get install wrk), "
                        "or use --client python")
    if kind in ("auto", "wrk") and binary is not None:
        return WrkClient(binary, wrk_threads)
    return PythonClient()
