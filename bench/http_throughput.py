"""HTTP throughput and latency of Weir against bare baselines, measured in one run.

Systems, each started fresh, in its own processes, on loopback:
  bare-hypercorn  a starlette app answering "ok" on hypercorn;
  bare-hop        the same app making one grpc.aio call per request to an echo process:
                  the floor for any proxy that forwards over gRPC, as Weir's does;
  weir-hypercorn  a no-op deployment behind a `weir start` cluster (proxy on hypercorn);
  weir-uvicorn    the same with `weir start --http-server uvicorn`;
  weir-composed   an ingress making one handle call to a second no-op deployment, on the
                  default `--http-server auto`;
  ray-serve       the same no-op app on Ray Serve (`serve run`), from a side venv named by
                  --ray-python or $WEIR_BENCH_RAY_PYTHON; skipped, saying why, without one.
Each is measured at every concurrency (default 1 and 64) after a warm-up; the table gives
req/s, p50 and p99 latency, then each Weir system's req/s as a multiple of the bare hop's
and of Ray Serve's, and the composed app's as a fraction of the single deployment's.

    python bench/http_throughput.py                         # everything, 5 s per point
    python bench/http_throughput.py --duration 2 --only baselines --json out.json
    python bench/http_throughput.py --only weir,ray --ray-python /work/venv-ray/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_client import LoadClient, LoadError, Measurement, choose_client
from bench.processes import ProcessFailed, ProcessGroup, free_port, wait_http_ok
from bench.ray_serve import RayServe, add_ray_arguments, find_ray
from bench.weir_cluster import CliFailed, WeirCluster
from weir.http_servers import HttpServerMissing, resolve_http_server

NOOP_IMPORT_PATH = "bench.noop_app:app"
COMPOSED_IMPORT_PATH = "bench.composition_app:app"
EXPECTED_BODY = b"ok"
GROUPS = {
    "baselines": ["bare-hypercorn", "bare-hop"],
    "weir": ["weir-hypercorn", "weir-uvicorn", "weir-composed"],
    "ray": ["ray-serve"],
}
GROUPS["all"] = GROUPS["baselines"] + GROUPS["weir"] + GROUPS["ray"]
BASELINE_FOR_RATIO = "bare-hop"
RAY_BASELINE = "ray-serve"
COMPOSED = "weir-composed"


@dataclass
class RunSettings:
    """What every system's runner needs: where to log, the event loop, the deadlines."""

    work_dir: Path
    loop: str
    ready_timeout: float
    ray_python: str | None = None  # the side venv's interpreter; None: Ray Serve is skipped
    ray_ready_timeout: float = 180.0
    ray_unavailable: str = ""  # why there is no side venv, for the skipped line


@dataclass
class SystemResult:
    """The points measured for one system, or why it could not be measured."""

    name: str
    points: dict[int, Measurement] = field(default_factory=dict)
    error: str | None = None
    ready_s: float | None = None  # from the start command to the first good answer
    skipped: str | None = None  # why it was not run (not a failure)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, points keyed by concurrency."""
        return {"name": self.name, "error": self.error, "ready_s": self.ready_s,
                "skipped": self.skipped,
                "points": {str(c): m.as_dict() for c, m in self.points.items()}}


class SystemSkipped(Exception):
    """A system that cannot run here by choice of setup (Ray Serve without its venv)."""


# -- the systems under test: each a context manager yielding the URL to load --------------

def _bare_server(settings: RunSettings, group: ProcessGroup, name: str, *args: str) -> None:
    group.spawn(name, [sys.executable, "-m", "bench.bare_servers", *args,
                       "--loop", settings.loop])


@contextlib.contextmanager
def bare_hypercorn(settings: RunSettings) -> Iterator[str]:
    """The bare starlette app on hypercorn, one process."""
    with ProcessGroup(settings.work_dir / "bare-hypercorn") as group:
        port = free_port()
        _bare_server(settings, group, "plain", "plain", "--port", str(port))
        url = f"http://127.0.0.1:{port}/"
        wait_http_ok(url, settings.ready_timeout, check=group)
        yield url


@contextlib.contextmanager
def bare_hop(settings: RunSettings) -> Iterator[str]:
    """The bare app forwarding each request over grpc.aio to an echo process."""
    with ProcessGroup(settings.work_dir / "bare-hop") as group:
        echo_port, http_port = free_port(), free_port()
        _bare_server(settings, group, "echo", "echo", "--port", str(echo_port))
        _bare_server(settings, group, "hop", "hop", "--port", str(http_port),
                     "--echo-port", str(echo_port))
        url = f"http://127.0.0.1:{http_port}/"
        # 200 only once the hop answers and its call to the echo server succeeds.
        wait_http_ok(url, settings.ready_timeout, check=group)
        yield url


def weir_system(http_server: str, import_path: str = NOOP_IMPORT_PATH,
                name: str | None = None) -> Callable[[RunSettings], AbstractContextManager[str]]:
    """A runner for a Weir cluster whose proxy runs on `http_server`, serving `import_path`."""

    @contextlib.contextmanager
    def run(settings: RunSettings) -> Iterator[str]:
        home = settings.work_dir / (name or f"weir-{http_server}")
        with WeirCluster(home, free_port(), free_port(), http_server) as cluster:
            cluster.start(settings.ready_timeout)
            cluster.deploy(import_path, settings.ready_timeout)
            cluster.wait_serving(settings.ready_timeout)
            yield cluster.url

    return run


@contextlib.contextmanager
def ray_serve(settings: RunSettings) -> Iterator[str]:
    """The no-op app on Ray Serve (`serve run` in the side venv); SystemSkipped without one."""
    if settings.ray_python is None:
        raise SystemSkipped(settings.ray_unavailable or "no Ray Serve side venv")
    with RayServe(settings.ray_python, settings.work_dir / "ray-serve", free_port()) as ray:
        ray.start(settings.ray_ready_timeout)
        yield ray.url


SYSTEMS: dict[str, Callable[[RunSettings], AbstractContextManager[str]]] = {
    "bare-hypercorn": bare_hypercorn,
    "bare-hop": bare_hop,
    "weir-hypercorn": weir_system("hypercorn"),
    "weir-uvicorn": weir_system("uvicorn"),
    COMPOSED: weir_system("auto", COMPOSED_IMPORT_PATH, COMPOSED),
    RAY_BASELINE: ray_serve,
}


# -- running -----------------------------------------------------------------------------

def check_answer(url: str) -> None:
    """Fail unless `url` answers 200 with the expected body: never benchmark an error page."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read()
    if body.strip() != EXPECTED_BODY:
        raise ProcessFailed(f"{url} answered {body[:200]!r}, expected {EXPECTED_BODY!r}")


def measure_system(name: str, settings: RunSettings, client: LoadClient,
                   concurrencies: list[int], duration: float, warmup: float) -> SystemResult:
    """Start one system, measure each concurrency, stop it; errors become the result's."""
    result = SystemResult(name)
    print(f"{name}: starting", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        with SYSTEMS[name](settings) as url:
            check_answer(url)
            result.ready_s = round(time.monotonic() - started, 2)
            print(f"{name}: ready in {result.ready_s:.1f} s at {url}",
                  file=sys.stderr, flush=True)
            for concurrency in concurrencies:
                point = client.measure(url, concurrency, duration, warmup)
                result.points[concurrency] = point
                print(f"{name}: c={concurrency} {point.rps:,.0f} req/s p50 "
                      f"{point.p50_ms:.2f} ms p99 {point.p99_ms:.2f} ms"
                      + (f" ({point.errors} errors)" if point.errors else ""),
                      file=sys.stderr, flush=True)
    except SystemSkipped as exc:
        result.skipped = str(exc)
        print(f"{name}: skipped: {result.skipped}", file=sys.stderr, flush=True)
    except (ProcessFailed, CliFailed, LoadError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        print(f"{name}: FAILED: {result.error}", file=sys.stderr, flush=True)
    return result


def keep_best(kept: SystemResult | None, new: SystemResult) -> SystemResult:
    """`kept` and another round of the same system merged: each concurrency's point with
    the higher req/s; the first round's ready time; a round's error is kept (the exit code
    says a round failed) while the other rounds' points still count. Pure."""
    if kept is None:
        return new
    points = dict(kept.points)
    for c, point in new.points.items():
        if c not in points or point.rps > points[c].rps:
            points[c] = point
    return SystemResult(new.name, points, kept.error or new.error,
                        kept.ready_s if kept.ready_s is not None else new.ready_s,
                        kept.skipped or new.skipped)


Ratios = dict[str, dict[str, float]]  # system -> concurrency (as text) -> req/s ratio


def ratios(results: list[SystemResult], concurrencies: list[int],
           baseline: str = BASELINE_FOR_RATIO,
           systems: Sequence[str] | None = None) -> Ratios:
    """Each system's req/s divided by `baseline`'s, per concurrency. Pure.

    `systems`: whose ratios (default: every Weir system). Points missing on either side,
    or a baseline at 0 req/s, give no ratio.
    """
    base = next((r for r in results if r.name == baseline), None)
    out: Ratios = {}
    if base is None:
        return out
    for result in results:
        wanted = result.name.startswith("weir-") if systems is None else result.name in systems
        if not wanted or result.name == baseline:
            continue
        for c in concurrencies:
            if c in result.points and c in base.points and base.points[c].rps:
                out.setdefault(result.name, {})[str(c)] = (result.points[c].rps
                                                           / base.points[c].rps)
    return out


def error_summary(error: str) -> str:
    """First and last lines of a (possibly multi-line) error: the command and the cause."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"


def composed_baseline(http_server: str) -> str:
    """The single-deployment system the composed one compares with: same proxy server."""
    return f"weir-{http_server}"


def all_ratios(results: list[SystemResult], concurrencies: list[int],
               composed_server: str) -> dict[str, Ratios]:
    """The ratio sets the bench prints, by baseline: Weir over the bare hop, Weir over Ray
    Serve, and the composed app over the single deployment on `composed_server`. Pure."""
    single = composed_baseline(composed_server)
    return {
        BASELINE_FOR_RATIO: ratios(results, concurrencies),
        RAY_BASELINE: ratios(results, concurrencies, RAY_BASELINE),
        single: ratios(results, concurrencies, single, [COMPOSED]),
    }


def ratio_lines(baseline: str, by_system: Ratios, multiple: bool = False) -> list[str]:
    """One line per system: `name / baseline req/s: c=1 0.62, c=64 0.57` (`x9.1` with
    `multiple`, for ratios read as "times faster"). Pure."""
    lines = []
    for name, by_c in by_system.items():
        parts = ", ".join(f"c={c} x{ratio:.1f}" if multiple else f"c={c} {ratio:.2f}"
                          for c, ratio in by_c.items())
        lines.append(f"{name} / {baseline} req/s: {parts}")
    return lines


def format_table(results: list[SystemResult], concurrencies: list[int],
                 weir_ratios: Ratios, more_ratios: Mapping[str, Ratios] | None = None) -> str:
    """The results as a fixed-width text table, then the Weir / bare hop ratios, then
    `more_ratios` (by baseline; those over Ray Serve as multiples). Pure."""
    header = ["system"]
    for c in concurrencies:
        header += [f"c={c} req/s", "p50 ms", "p99 ms"]
    rows = [header]
    notes = []
    for result in results:
        row = [result.name]
        for c in concurrencies:
            point = result.points.get(c)
            if point is None:
                row += ["-", "-", "-"]
                continue
            flag = "!" if point.errors else ""
            row += [f"{point.rps:,.0f}{flag}", f"{point.p50_ms:.2f}", f"{point.p99_ms:.2f}"]
            if point.errors:
                notes.append(f"! {result.name} c={c}: {point.errors} errors "
                             f"of {point.requests} requests")
        if result.error:
            notes.append(f"{result.name}: not measured: {error_summary(result.error)}")
        if result.skipped:
            notes.append(f"{result.name}: skipped: {result.skipped}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ratio_lines(BASELINE_FOR_RATIO, weir_ratios)
    for baseline, by_system in (more_ratios or {}).items():
        lines += ratio_lines(baseline, by_system, multiple=baseline == RAY_BASELINE)
    return "\n".join(lines + notes)


def environment(client: LoadClient, args: argparse.Namespace) -> dict[str, Any]:
    """What the figures depend on, recorded beside them."""
    try:
        import httptools  # noqa: F401

        uvicorn_http = "httptools"
    except ImportError:
        uvicorn_http = "h11"
    return {"client": client.name, "duration_s": args.duration, "warmup_s": args.warmup,
            "loop": args.loop, "uvicorn_http": uvicorn_http, "cpus": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def selected_systems(only: str) -> list[str]:
    """Expand `--only` (names and groups, comma-separated) into system names, in order."""
    wanted: list[str] = []
    for item in filter(None, (part.strip() for part in only.split(","))):
        names = GROUPS.get(item, [item])
        for name in names:
            if name not in SYSTEMS:
                choices = ", ".join([*GROUPS, *SYSTEMS])
                raise SystemExit(f"--only: unknown system {item!r} (choose from {choices})")
            if name not in wanted:
                wanted.append(name)
    return [name for name in SYSTEMS if name in wanted]


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load options every HTTP bench takes: client, duration, warm-up, concurrency."""
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="Load generator; auto takes wrk when it is on PATH.")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="Seconds measured per point (wrk rounds to whole seconds).")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="Seconds of load before each measured point.")
    parser.add_argument("--concurrency", default="1,64",
                        help="Comma-separated connection counts.")
    parser.add_argument("--wrk-threads", type=int, default=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--only", default="all",
                        help="Systems or groups, comma-separated: "
                             f"{', '.join([*GROUPS, *SYSTEMS])}.")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="Event loop of the bare servers (Weir's processes use uvloop).")
    parser.add_argument("--ready-timeout", type=float, default=60.0,
                        help="Deadline for a system to start and answer 200.")
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    parser.add_argument("--keep-logs", action="store_true",
                        help="Keep the servers' logs even when every system ran.")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Run every system this many times, in turn; each point "
                             "reports its best round by req/s (the least disturbed by "
                             "other work on a shared machine).")
    add_ray_arguments(parser)
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every finally stops its children


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns the exit code (1 if a system could not be measured)."""
    args = parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    names = selected_systems(args.only)
    client = choose_client(args.client, args.wrk_threads)
    try:
        composed_server = resolve_http_server("auto")
    except HttpServerMissing as exc:
        raise SystemExit(str(exc)) from exc
    ray_python, ray_note = find_ray(args.ray_python) if RAY_BASELINE in names else (None, "")
    signal.signal(signal.SIGTERM, _interrupt)
    work_dir = Path(tempfile.mkdtemp(prefix="weir-bench-"))
    settings = RunSettings(work_dir, args.loop, args.ready_timeout, ray_python,
                           args.ray_ready_timeout, "" if ray_python else ray_note)
    print(f"client: {client.name}; {args.duration:g} s per point after {args.warmup:g} s "
          f"warm-up; logs in {work_dir}", file=sys.stderr, flush=True)
    best: dict[str, SystemResult] = {}
    try:
        for round_ in range(1, args.rounds + 1):
            # Each round starts every system afresh, in folders of its own.
            round_settings = (settings if args.rounds == 1 else
                              dataclasses.replace(settings, work_dir=work_dir / f"round-{round_}"))
            for name in names:
                if name in best and best[name].skipped:
                    continue
                measured = measure_system(name, round_settings, client, concurrencies,
                                          args.duration, args.warmup)
                best[name] = keep_best(best.get(name), measured)
        results = [best[name] for name in names]
    except KeyboardInterrupt:
        if args.keep_logs:
            print(f"interrupted; logs kept in {work_dir}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
            shutil.rmtree(work_dir, ignore_errors=True)
        return 130
    by_baseline = all_ratios(results, concurrencies, composed_server)
    weir_ratios = by_baseline.pop(BASELINE_FOR_RATIO)
    print(f"client {client.name}, {args.duration:g} s per point after {args.warmup:g} s "
          f"warm-up{f', best of {args.rounds} rounds' if args.rounds > 1 else ''}, "
          f"bare servers on {args.loop}, {COMPOSED} on {composed_server}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(format_table(results, concurrencies, weir_ratios, by_baseline))
    if args.json is not None:
        env = {**environment(client, args), "composed_http_server": composed_server,
               "rounds": args.rounds,
               "ray_version": ray_note if ray_python else None}
        args.json.write_text(json.dumps(
            {"environment": env, "concurrencies": concurrencies,
             "systems": [r.as_dict() for r in results], "weir_over_bare_hop": weir_ratios,
             "weir_over_ray_serve": by_baseline[RAY_BASELINE],
             "composed_over_single": by_baseline[composed_baseline(composed_server)]},
            indent=2) + "\n")
    failed = any(r.error for r in results)
    if failed or args.keep_logs:
        print(f"logs kept in {work_dir}", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
