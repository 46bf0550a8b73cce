"""Routing quality: tail latency with one slow replica, p2c vs random vs round robin.

Four replicas, one ten times slower than the others; each works on one request at a time
and queues the rest it holds (up to max_ongoing_requests). The same open-loop stream of requests
(Poisson arrivals at a fixed fraction of total capacity) goes through Weir's real
`DeploymentRouter` (bounded queue, max_ongoing_requests, in-flight accounting) three times,
each time with a different choice function: Weir's power of two choices
(`weir.router.choose_replica`), uniform random, and round robin. Replicas are simulated
in-process as asyncio service times, so that the figures measure the routing decision, not
the machine's noise; the end-to-end path is measured by bench/http_throughput.py.

    python bench/routing_quality.py                 # ~15 s
    python bench/routing_quality.py --requests 4000 --load 0.7
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weir.dataplane import router as router_module
from weir.dataplane.router import DeploymentRouter, ReplicaSlot, choose_replica

Chooser = Callable[[Sequence[ReplicaSlot], int, float, random.Random], ReplicaSlot | None]


def choose_random(slots: Sequence[ReplicaSlot], max_ongoing: int, now: float,
                  rng: random.Random) -> ReplicaSlot | None:
    """Uniform random among replicas with room."""
    free = [s for s in slots if s.in_flight < max_ongoing and s.skip_until <= now]
    return rng.choice(free) if free else None


def make_round_robin() -> Chooser:
    """Round robin over replicas with room."""
    counter = itertools.count()

    def choose(slots: Sequence[ReplicaSlot], max_ongoing: int, now: float,
               rng: random.Random) -> ReplicaSlot | None:
        free = [s for s in slots if s.in_flight < max_ongoing and s.skip_until <= now]
        return free[next(counter) % len(free)] if free else None

    return choose


async def run_policy(chooser: Chooser, service_s: dict[str, float], arrivals: list[float],
                     max_ongoing: int) -> list[float]:
    """Replay `arrivals` through a router using `chooser`; returns each request's latency."""
    router_module.choose_replica = chooser  # type: ignore[assignment]
    try:
        router = DeploymentRouter("bench", "D", rng=random.Random(7))
        router.update(max_ongoing, -1, [(rid, rid, 0) for rid in service_s])
        # Each simulated replica works on one call at a time (a CPU-bound model), so the
        # calls it holds beyond that wait in its own queue, as they do in a real replica.
        capacity = {rid: asyncio.Semaphore(1) for rid in service_s}
        latencies: list[float] = []

        async def one(start: float) -> None:
            slot = await router.assign(None)
            async with capacity[slot.replica_id]:
                await asyncio.sleep(service_s[slot.replica_id])
            router.release(slot)
            latencies.append(time.monotonic() - start)

        tasks = []
        origin = time.monotonic()
        for at in arrivals:
            delay = origin + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(time.monotonic())))
        await asyncio.gather(*tasks)
        return latencies
    finally:
        router_module.choose_replica = choose_replica


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    """Run the three policies on the same arrivals and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--load", type=float, default=0.6,
                        help="offered load as a fraction of total capacity")
    parser.add_argument("--fast-ms", type=float, default=5.0)
    parser.add_argument("--slow-factor", type=float, default=10.0)
    parser.add_argument("--max-ongoing", type=int, default=4)
    args = parser.parse_args()
    fast = args.fast_ms / 1000
    service = {"r0": fast, "r1": fast, "r2": fast, "r3": fast * args.slow_factor}
    capacity_rps = sum(1 / s for s in service.values())
    rate = capacity_rps * args.load
    rng = random.Random(42)
    arrivals, t = [], 0.0
    for _ in range(args.requests):
        t += rng.expovariate(rate)
        arrivals.append(t)
    policies: list[tuple[str, Chooser]] = [
        ("p2c (weir)", choose_replica), ("random", choose_random),
        ("round robin", make_round_robin())]
    print(f"4 replicas ({args.fast_ms:.0f} ms; one {args.slow_factor:.0f}x slower), "
          f"max_ongoing_requests={args.max_ongoing}, {args.requests} requests, "
          f"Poisson arrivals at {args.load:.0%} of capacity ({rate:.0f} req/s)")
    print(f"{'policy':<14}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, chooser in policies:
        lat = asyncio.run(run_policy(chooser, service, arrivals, args.max_ongoing))
        print(f"{name:<14}{percentile(lat, 50) * 1e3:>10.1f}{percentile(lat, 90) * 1e3:>10.1f}"
              f"{percentile(lat, 99) * 1e3:>10.1f}{statistics.mean(lat) * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
