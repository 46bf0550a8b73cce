"""Cold start and idle memory: `weir run <app>` to its first 200, and what the cluster holds.

Each run starts `weir run` with an embedded cluster (etcd, controller, proxy, node agent,
replica) in a fresh WEIR_HOME, polls the app's URL until it answers 200, waits for the
cluster to go idle, reads each process's resident memory (VmRSS) from /proc, then stops
`weir run` with SIGINT (it stops its cluster) and any leftover by PID.

    python bench/cold_start.py                       # 3 runs of bench.noop_app:app
    python bench/cold_start.py --runs 5 --app examples.hello:app
    python bench/cold_start.py --ray-python /work/venv-ray/bin/python   # and Ray Serve's
    python bench/cold_start.py --runs 5 --alternate  # cold replicas, warm, cold, ...

Each run also reads the cluster's own log timestamps: the leader's "assigned replica" to
the node agent's "started replica" and the replica's "replica serving" and "running"; and
the path to the first 200, each step's first log line in seconds after `weir run` started
(`PATH_EVENTS`: the proxy and node agent up, the controller up, the app deployed and
built, the replica assigned and running).

Figures on a shared machine are noisy: quote the median and say what else ran.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python bench/cold_start.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import REPO_ROOT, ProcessFailed, free_port, pids_with_env, wait_http_ok
from bench.ray_cold_start import compare_with_ray
from bench.ray_serve import add_ray_arguments
from bench.weir_cluster import weir_command
from weir.processes import ASSIGNED_NAME, SPARE_FLAG, process_name, spawn, terminate

#: The cluster's processes, by the module (or binary) in their command line; first match wins.
ROLES: tuple[tuple[str, str], ...] = (
    ("etcd", "etcd"), ("weir.controller", "controller"), ("weir.proxy", "proxy"),
    ("weir.replica.node_agent", "node agent"), ("weir.replica", "replica"),
    ("weir.build", "build child"), ("run_keeper.py", "weir run"), ("weir", "weir run"))

MARK_ENV = "WEIR_COLD_START_BENCH"

#: The log lines timed, in their order on the path of a replica's start.
EVENTS = ("assigned replica", "started replica", "replica serving", "running")
#: The log lines on the way to the first 200, timed from `weir run`'s start.
PATH_EVENTS = ("proxy serving", "node agent up", "controller up", "deployed",
               "built application", "assigned replica", "running")
#: A console log line: its ISO timestamp, then its level, then its event.
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z? \[\s*\w+\s*\] (.+?)(?:\s{2,}|$)")


@dataclass
class Run:
    """One cold start: seconds to the first 200, and resident MB by role."""

    seconds: float
    rss_mb: dict[str, float]
    #: The cluster's proportional set size (each shared page divided among the processes
    #: mapping it): what the cluster holds in all, where the sum of RSS counts the shared
    #: libraries (grpc's, Python's) once per process.
    pss_mb: float = 0.0
    #: Seconds from "assigned replica" to each later event of `EVENTS` (as logged).
    gaps: dict[str, float] = field(default_factory=dict)
    #: What the run was told: "" or the WEIR_WARM_REPLICA value.
    label: str = ""
    #: Seconds from `weir run`'s start to the first of each `PATH_EVENTS` line.
    path: dict[str, float] = field(default_factory=dict)


def role_of(cmdline: list[str]) -> str:
    """The cluster role of a process from its argv (`python -m weir.proxy ...`). Pure."""
    words = [os.path.basename(w) for w in cmdline]
    for needle, role in ROLES:
        if needle == "etcd" and words and words[0] == "etcd":
            return role
        if needle != "etcd" and needle in words:
            return role
    return "other"


def read_cmdline(pid: int) -> list[str]:
    """The process's argv, or [] if it has gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _proc_mb(pid: int, file: str, field: str) -> float:
    """The kB figure `field` of /proc/<pid>/<file>, in MB (0 if it has gone or is not ours)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def resident_mb(pid: int) -> float:
    """VmRSS of `pid` in MB (0 if it has gone)."""
    return _proc_mb(pid, "status", "VmRSS")


def proportional_mb(pid: int) -> float:
    """Pss of `pid` in MB from /proc/<pid>/smaps_rollup (0 if it has gone or is not ours)."""
    return _proc_mb(pid, "smaps_rollup", "Pss")


def memory_by_role(pids: list[int]) -> dict[str, float]:
    """Resident MB summed by role over `pids` (a node agent's warm spare on its own)."""
    totals: dict[str, float] = {}
    for pid in pids:
        cmdline = read_cmdline(pid)
        role = role_of(cmdline)
        if role == "replica" and SPARE_FLAG in cmdline and process_name(pid) != ASSIGNED_NAME:
            role = "warm spare"
        totals[role] = totals.get(role, 0.0) + resident_mb(pid)
    return totals


def _timed(lines: list[str], names: tuple[str, ...]) -> list[tuple[datetime, str]]:
    """The lines whose event is one of `names`, as (UTC timestamp, event), in time order."""
    return sorted((datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc), m.group(2))
                  for m in map(_LOG_LINE.match, lines) if m and m.group(2) in names)


def path_times(lines: list[str], started_at: float) -> dict[str, float]:
    """Seconds from `started_at` (a UNIX time) to the first line of each `PATH_EVENTS`
    event, from the log lines of every process in any order. Pure."""
    out: dict[str, float] = {}
    for at, event in _timed(lines, PATH_EVENTS):
        out.setdefault(event, at.timestamp() - started_at)
    return out


def event_gaps(lines: list[str]) -> dict[str, float]:
    """Seconds from the first "assigned replica" to the first of each later `EVENTS` line
    after it, from the log lines of every process in any order (ISO timestamps, console
    format). Pure."""
    events = _timed(lines, EVENTS)
    start = next((at for at, event in events if event == EVENTS[0]), None)
    if start is None:
        return {}
    gaps: dict[str, float] = {}
    for at, event in events:
        if at >= start and event != EVENTS[0]:
            gaps.setdefault(event, (at - start).total_seconds())
    return gaps


def cluster_log_lines(run_log: Path) -> list[str]:
    """Every line of the embedded cluster's logs, found from `weir run`'s own output."""
    match = re.search(r"logs in (\S+)", run_log.read_text(errors="replace"))
    if not match:
        return []
    lines: list[str] = []
    for path in Path(match.group(1)).glob("*.log"):
        lines += path.read_text(errors="replace").splitlines()
    return lines


def one_run(app: str, settle_s: float, timeout: float, label: str = "") -> Run:
    """Start `weir run app` (with WEIR_WARM_REPLICA=`label` if given), time its first 200,
    read memory once idle, stop everything."""
    home = tempfile.mkdtemp(prefix="weir-cold-")
    port, admin = free_port(), free_port()
    env = {**os.environ, "WEIR_HOME": home, MARK_ENV: home}
    if label:
        env["WEIR_WARM_REPLICA"] = label
    argv = [*weir_command(), "run", app, "--port", str(port), "--admin-port", str(admin)]
    start, started_at = time.monotonic(), time.time()
    proc = spawn(argv, log_path=Path(home) / "run.log", env=env, cwd=REPO_ROOT)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/", timeout)
        seconds = time.monotonic() - start
        # Idle: the start-up bursts over, memory as a user would see it a moment later.
        time.sleep(settle_s)
        pids = pids_with_env(MARK_ENV, home)
        rss = memory_by_role(pids)
        pss = sum(proportional_mb(pid) for pid in pids)
        lines = cluster_log_lines(Path(home) / "run.log")
        gaps, path = event_gaps(lines), path_times(lines, started_at)
    except ProcessFailed as exc:
        log = (Path(home) / "run.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{exc}\n--- weir run's output ---\n{log}") from exc
    finally:
        proc.send_signal(signal.SIGINT)
        terminate(proc, 20.0)
        for pid in pids_with_env(MARK_ENV, home):
            terminate(pid, 5.0)
    path["first 200"] = seconds
    return Run(seconds, rss, pss, gaps, label, path)


def report(runs: list[Run]) -> str:
    """The table: time to first 200 (median, min, max), and median resident MB by role."""
    times = [r.seconds for r in runs]
    lines = [f"weir run to first 200: median {statistics.median(times):.2f} s, "
             f"min {min(times):.2f} s, max {max(times):.2f} s ({len(runs)} runs)",
             "", f"{'process':<12} {'resident MB (median)':>22}"]
    roles = sorted({role for r in runs for role in r.rss_mb})
    for role in roles:
        median = statistics.median([r.rss_mb.get(role, 0.0) for r in runs])
        lines.append(f"{role:<12} {median:>22.1f}")
    total = statistics.median([sum(r.rss_mb.values()) for r in runs])
    lines.append(f"{'total':<12} {total:>22.1f}")
    pss = statistics.median([r.pss_mb for r in runs])
    lines += ["", f"shared pages counted once (sum of PSS): {pss:.1f} MB"]
    lines += ["", "the path (seconds after `weir run` started, median of the runs):"]
    for event in (*PATH_EVENTS, "first 200"):
        times = [r.path[event] for r in runs if event in r.path]
        if times:
            lines.append(f"  {event:<20} {statistics.median(times):5.2f} "
                         f"({', '.join(f'{t:.2f}' for t in times)})")
    for event in EVENTS[1:]:
        gaps = [r.gaps[event] for r in runs if event in r.gaps]
        if gaps:
            lines.append(f"assigned replica -> {event}: median {statistics.median(gaps):.2f} s "
                         f"({', '.join(f'{g:.2f}' for g in gaps)})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="bench.noop_app:app")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="Seconds after the first 200 before memory is read.")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--alternate", action="store_true",
                        help="each run twice: replicas started cold (WEIR_WARM_REPLICA=0), "
                             "then from the node agent's warm spare (=1)")
    add_ray_arguments(parser)
    opts = parser.parse_args()
    runs = []
    labels = ["0", "1"] if opts.alternate else [""]
    for i in range(opts.runs):
        for label in labels:
            run = one_run(opts.app, opts.settle, opts.timeout, label)
            serving = run.gaps.get("replica serving")
            print(f"run {i + 1}{f' WEIR_WARM_REPLICA={label}' if label else ''}: "
                  f"{run.seconds:.2f} s, {sum(run.rss_mb.values()):.0f} MB "
                  f"({run.pss_mb:.0f} MB PSS), assigned -> serving "
                  f"{'?' if serving is None else f'{serving:.2f} s'}; load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
            runs.append(run)
    for label in labels:
        if label:
            print(f"\n== WEIR_WARM_REPLICA={label}")
        print(report([r for r in runs if r.label == label]))
    compare_with_ray([(r.seconds, sum(r.rss_mb.values())) for r in runs], opts,
                     read_cmdline, resident_mb)


if __name__ == "__main__":
    main()
