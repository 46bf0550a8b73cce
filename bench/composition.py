"""The cost of composing deployments: one no-op deployment against an ingress that makes one
handle call to the same no-op deployment, on one Weir cluster, under the same load.

Both applications run side by side on one `weir start` cluster (`/single`:
`bench.noop_app:app`; `/composed`: `bench.composition_app:app`), deployed with one
`weir deploy`, so proxy, machine and moment are shared. Points are measured alternately
(single, composed, single, ...) for `--rounds` rounds; each point reports its best round by
req/s, the one least disturbed by other work on the machine. The table gives req/s, p50 and
p99 at each concurrency, then what the extra hop costs.

    python bench/composition.py                      # c=1 and c=64, 5 s per point, 2 rounds
    python bench/composition.py --duration 2 --rounds 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http_throughput import (
    SystemResult,
    _interrupt,
    add_load_arguments,
    check_answer,
    environment,
    format_table,
)
from bench.load_client import LoadClient, LoadError, Measurement, choose_client
from bench.processes import REPO_ROOT, ProcessFailed, free_port, wait_http_ok
from bench.weir_cluster import CliFailed, WeirCluster

SYSTEMS = {"single": "bench.noop_app:app", "composed": "bench.composition_app:app"}
#: The replicas of both applications: one no-op, one ingress and the no-op behind it.
REPLICAS = 3


def composition_config(ingress_max_ongoing: int | None = None) -> dict[str, object]:
    """Both applications in one config, each at /<name>; `ingress_max_ongoing` sets the
    composed app's ingress (`Forward`) max_ongoing_requests (None: Ray's default, 5)."""
    apps: list[dict[str, object]] = [
        {"name": name, "route_prefix": f"/{name}", "import_path": import_path,
         "runtime_env": {"working_dir": str(REPO_ROOT)}}
        for name, import_path in SYSTEMS.items()]
    if ingress_max_ongoing is not None:
        apps[1]["deployments"] = [{"name": "Forward",
                                   "max_ongoing_requests": ingress_max_ongoing}]
    return {"applications": apps}


def hop_cost(results: list[SystemResult], concurrencies: list[int]) -> list[str]:
    """One line per concurrency: what the composed app pays over the single one."""
    by_name = {r.name: r for r in results}
    lines = []
    for c in concurrencies:
        single = by_name["single"].points.get(c)
        composed = by_name["composed"].points.get(c)
        if single is None or composed is None or not single.rps:
            continue
        lines.append(
            f"extra hop at c={c}: req/s x{composed.rps / single.rps:.2f}, "
            f"p50 {composed.p50_ms - single.p50_ms:+.2f} ms, "
            f"p99 {composed.p99_ms - single.p99_ms:+.2f} ms")
    return lines


def measure(cluster_url: str, client: LoadClient, concurrencies: list[int], rounds: int,
            duration: float, warmup: float) -> list[SystemResult]:
    """Alternate the two systems at each concurrency; keep each point's best round."""
    results = {name: SystemResult(name) for name in SYSTEMS}
    for c in concurrencies:
        for round_ in range(1, rounds + 1):
            for name, result in results.items():
                point: Measurement = client.measure(f"{cluster_url}{name}", c, duration, warmup)
                print(f"{name}: c={c} round {round_}: {point.rps:,.0f} req/s p50 "
                      f"{point.p50_ms:.2f} ms p99 {point.p99_ms:.2f} ms"
                      + (f" ({point.errors} errors)" if point.errors else ""),
                      file=sys.stderr, flush=True)
                best = result.points.get(c)
                if best is None or point.rps > best.rps:
                    result.points[c] = point
    return list(results.values())


def start(cluster: WeirCluster, http_server: str, timeout: float) -> None:
    """`weir start` with the HTTP server named always (WeirCluster leaves the flag out for
    hypercorn, which since `auto` became the default means uvicorn when it is installed),
    and CPUs enough for the three replicas: each takes one, as in Ray, and the machine may
    have two."""
    (cluster.home / "tmp").mkdir(parents=True, exist_ok=True)
    cluster._started = True  # from here on, leaving the block shuts the cluster down
    cluster.cli(["start", "--http-host", "127.0.0.1", "--http-port", str(cluster.http_port),
                 "--admin-port", str(cluster.admin_port), "--http-server", http_server,
                 "--num-cpus", str(REPLICAS)],
                timeout)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2,
                        help="Alternating rounds per point; the best by req/s is reported.")
    parser.add_argument("--http-server", choices=("auto", "hypercorn", "uvicorn"),
                        default="auto", help="The proxy's HTTP server (`weir start`'s flag).")
    parser.add_argument("--ready-timeout", type=float, default=90.0,
                        help="Deadline for the cluster to start and both apps to answer.")
    parser.add_argument("--ingress-max-ongoing", type=int, default=None,
                        help="max_ongoing_requests of the composed app's ingress (default: "
                             "Ray's 5). Each of its slots is held for the whole inner call, "
                             "so at c=64 these slots, not CPU, bound the composed app.")
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    args = parser.parse_args(argv)
    args.loop = "uvloop"  # recorded by `environment`; Weir's processes use uvloop
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns the exit code (1 if it could not measure)."""
    args = parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    client = choose_client(args.client, args.wrk_threads)
    signal.signal(signal.SIGTERM, _interrupt)
    work_dir = Path(tempfile.mkdtemp(prefix="weir-bench-composition-"))
    print(f"client: {client.name}; {args.duration:g} s per point after {args.warmup:g} s "
          f"warm-up, {args.rounds} round(s); logs in {work_dir}", file=sys.stderr, flush=True)
    try:
        with WeirCluster(work_dir / "weir", free_port(), free_port(),
                         args.http_server) as cluster:
            started = time.monotonic()
            start(cluster, args.http_server, args.ready_timeout)
            cluster.deploy_config(composition_config(args.ingress_max_ongoing),
                                  args.ready_timeout)
            for name in SYSTEMS:
                wait_http_ok(cluster.url + name, args.ready_timeout)
                check_answer(cluster.url + name)
            print(f"both apps ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
            results = measure(cluster.url, client, concurrencies, args.rounds,
                              args.duration, args.warmup)
    except (ProcessFailed, CliFailed, LoadError, OSError) as exc:
        print(f"FAILED: {type(exc).__name__}: {exc}; logs kept in {work_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        shutil.rmtree(work_dir, ignore_errors=True)
        return 130
    print(f"client {client.name}, {args.duration:g} s per point after {args.warmup:g} s "
          f"warm-up, best of {args.rounds} alternating round(s), proxy on {args.http_server}, "
          f"ingress max_ongoing_requests {args.ingress_max_ongoing or 'default (5)'}")
    print(format_table(results, concurrencies, {}))
    cost = hop_cost(results, concurrencies)
    print("\n".join(cost))
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"environment": environment(client, args), "concurrencies": concurrencies,
             "rounds": args.rounds, "systems": [r.as_dict() for r in results],
             "extra_hop": cost}, indent=2) + "\n")
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
