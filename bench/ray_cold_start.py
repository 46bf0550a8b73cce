"""Ray Serve's cold start and idle memory, beside Weir's in `bench/cold_start.py`.

One run: `serve run` of `bench.ray_noop_app:app` (the no-op app Weir's cold start runs) from
the side venv, timed from the command to the first 200; after the same settle time as
Weir's, the resident memory (VmRSS) of every process of the run is read and summed:
`serve run` itself, gcs_server, raylet, the dashboard and its agents, the log monitor,
the Serve controller, proxy and replica workers. Then everything is stopped by PID
(`bench.ray_serve.RayServe`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.processes import free_port
from bench.ray_serve import RayServe, find_ray

_WORKER_NAME = re.compile(r"^(ray::[A-Za-z_]+)")
_INTERPRETER_FLAGS = {"-u", "-B", "-m", "-c"}


@dataclass
class RayRun:
    """One cold start of Ray Serve: seconds to the first 200, resident MB by process kind."""

    seconds: float
    rss_mb: dict[str, float]
    processes: int


def ray_process_kind(cmdline: list[str]) -> str:
    """What a process of a Ray Serve run is, from its argv. Pure.

    Workers rename themselves (`ray::ServeReplica:default:Noop` -> `ray::ServeReplica`);
    binaries go by name (`gcs_server`, `raylet`); Python processes by their script
    (`dashboard`, `log_monitor`; `serve` is `serve run`) or, for `-c`, by module.
    """
    if not cmdline:
        return "other"
    worker = _WORKER_NAME.match(cmdline[0])
    if worker:
        return worker.group(1)
    program = os.path.basename(cmdline[0])
    if not program.startswith("python"):
        return program
    args = cmdline[1:]
    if args[:1] == ["-c"] or args[:2] == ["-B", "-c"]:
        code = args[args.index("-c") + 1] if len(args) > args.index("-c") + 1 else ""
        module = re.search(r"from ([\w.]+) import", code)
        return module.group(1) if module else "python -c"
    script = next((a for a in args if a not in _INTERPRETER_FLAGS), "")
    name = os.path.basename(script).removesuffix(".py")
    return "serve run" if name == "serve" else (name or "python")


def memory_by_kind(pids: list[int], cmdline: Callable[[int], list[str]],
                   resident: Callable[[int], float]) -> dict[str, float]:
    """Resident MB summed by process kind over `pids` (gone processes count 0)."""
    totals: dict[str, float] = {}
    for pid in pids:
        kind = ray_process_kind(cmdline(pid))
        totals[kind] = totals.get(kind, 0.0) + resident(pid)
    return totals


def one_ray_run(ray_python: str, settle_s: float, timeout: float,
                cmdline: Callable[[int], list[str]],
                resident: Callable[[int], float]) -> RayRun:
    """`serve run` the no-op app, time its first 200, read memory once idle, stop it all."""
    work_dir = Path(tempfile.mkdtemp(prefix="weir-cold-ray-"))
    with RayServe(ray_python, work_dir, free_port()) as ray:
        start = time.monotonic()
        ray.start(timeout)
        seconds = time.monotonic() - start
        time.sleep(settle_s)  # idle, as Weir's figure is taken: the start-up bursts over
        pids = ray.pids()
        rss = memory_by_kind(pids, cmdline, resident)
    return RayRun(seconds, rss, len(pids))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def comparison_table(weir: list[tuple[float, float]], ray: list[RayRun]) -> str:
    """Weir and Ray Serve side by side: first 200 (median, min, max) and the median of the
    resident MB of all processes summed. `weir`: (seconds, total MB) per run. Pure."""
    rows = [("Weir (weir run)", [s for s, _ in weir], [mb for _, mb in weir]),
            ("Ray Serve (serve run)", [r.seconds for r in ray],
             [sum(r.rss_mb.values()) for r in ray])]
    lines = [f"{'system':<22} {'runs':>4} {'first 200 s (median)':>21} {'min':>6} {'max':>6} "
             f"{'resident MB, all processes (median)':>36}"]
    for name, seconds, totals in rows:
        if not seconds:
            continue
        lines.append(f"{name:<22} {len(seconds):>4} {_median(seconds):>21.2f} "
                     f"{min(seconds):>6.2f} {max(seconds):>6.2f} {_median(totals):>36.1f}")
    if weir and ray:
        ratio = _median([sum(r.rss_mb.values()) for r in ray]) / _median([mb for _, mb in weir])
        lines.append(f"Ray Serve / Weir resident memory: x{ratio:.1f}")
    return "\n".join(lines)


def ray_breakdown(ray: list[RayRun]) -> str:
    """Ray Serve's median resident MB by process kind, largest first. Pure."""
    kinds = {kind for r in ray for kind in r.rss_mb}
    medians = {kind: _median([r.rss_mb.get(kind, 0.0) for r in ray]) for kind in kinds}
    processes = _median([float(r.processes) for r in ray])
    lines = [f"{'Ray Serve process':<34} {'resident MB (median)':>22}"]
    lines += [f"{kind:<34} {mb:>22.1f}"
              for kind, mb in sorted(medians.items(), key=lambda item: -item[1])]
    lines.append(f"{f'total ({processes:.0f} processes)':<34} "
                 f"{_median([sum(r.rss_mb.values()) for r in ray]):>22.1f}")
    return "\n".join(lines)


def compare_with_ray(weir: list[tuple[float, float]], opts: argparse.Namespace,
                     cmdline: Callable[[int], list[str]],
                     resident: Callable[[int], float]) -> None:
    """With a Ray side venv (`--ray-python` or its env), run Ray Serve `opts.runs` times
    and print both tables; without one, one line on stderr says why it was skipped."""
    ray_python, _ = find_ray(opts.ray_python)
    if ray_python is None:
        return
    runs = []
    for i in range(opts.runs):
        run = one_ray_run(ray_python, opts.settle, opts.ray_ready_timeout, cmdline, resident)
        print(f"ray run {i + 1}: {run.seconds:.2f} s, {sum(run.rss_mb.values()):.0f} MB "
              f"in {run.processes} processes", flush=True)
        runs.append(run)
    print()
    print(comparison_table(weir, runs))
    print()
    print(ray_breakdown(runs))
