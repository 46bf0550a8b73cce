"""How long the leader's reconcile passes take, and where a slow one's time went.

Every deploy, scale and failover waits on a pass, so a slow one is logged on its own with
each step's wall time and the process's CPU over the pass (the rest waited: on etcd, on the
loop's other work, or for a core), and every PASS_STATS_S the slowest pass and how many
there were. `step_times` is the pure part.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("weir.controller")

#: How often the leader logs how long its passes took (the slowest, and how many).
PASS_STATS_S = 10.0
#: A pass slower than this is logged on its own: every deploy, scale and failover waits on it.
SLOW_PASS_S = 0.2


def step_times(marks: list[tuple[str, float]]) -> dict[str, float]:
    """Each step's time in ms, from (step, when it ended) marks after a first (start)."""
    return {name: round((at - before) * 1000, 1)
            for (_, before), (name, at) in itertools.pairwise(marks)}


class PassTimes:
    """The marks of the pass under way, and the passes of the current stats window."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._marks: list[tuple[str, float]] = []
        self._window_start = clock()
        self._slowest = 0.0
        self._passes = 0

    def begin(self) -> None:
        """A pass begins."""
        self._marks = [("began", time.perf_counter())]

    def step(self, name: str) -> None:
        """The pass reached the end of step `name`."""
        self._marks.append((name, time.perf_counter()))

    def ended(self, took: float, cpu_s: float, replicas: int) -> None:
        """The pass took `took` s of wall time and `cpu_s` of this process's CPU."""
        self._slowest, self._passes = max(self._slowest, took), self._passes + 1
        if took > SLOW_PASS_S:
            log.warning("slow reconcile pass", ms=round(took * 1000, 1),
                        cpu_ms=round(cpu_s * 1000, 1), steps=step_times(self._marks),
                        replicas=replicas)
        if self._clock() - self._window_start >= PASS_STATS_S:
            log.info("reconcile passes", passes=self._passes,
                     max_ms=round(self._slowest * 1000, 1), replicas=replicas)
            self._window_start, self._slowest, self._passes = self._clock(), 0.0, 0
