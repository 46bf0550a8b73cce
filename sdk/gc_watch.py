"""Logging the garbage collections that hold a process for long.

A collection of the oldest generation walks every object the process holds and keeps the
GIL all along: at 10,000 replicas the leader holds about a million, and a collection then
stops every thread of the process, the lease keep-alive's among them (`weir.etcd`), for as
long as it runs. `watch_collections` logs each one that took SLOW_COLLECTION_MS or more,
so that a lease lost in the middle of one says so in the log. Each line gives the wall time
(`ms`) and the CPU time of the collecting thread (`cpu_ms`): on a machine short of cores the
two part, and only `cpu_ms` is the collector's own work (fewer objects would shorten it;
the rest is the process waiting for a core).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import structlog

log = structlog.get_logger("weir.gc")

#: Collections at least this long are logged (a warning).
SLOW_COLLECTION_MS = 100.0

#: (wall, thread CPU) at the start of the collection under way.
_started: list[tuple[float, float]] = []


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append((time.perf_counter(), time.thread_time()))
        return
    if not _started:
        return
    wall, cpu = _started.pop()
    ms = (time.perf_counter() - wall) * 1000
    if ms >= SLOW_COLLECTION_MS:
        log.warning("slow garbage collection", generation=info.get("generation"),
                    ms=round(ms, 1), cpu_ms=round((time.thread_time() - cpu) * 1000, 1),
                    collected=info.get("collected"), frozen=gc.get_freeze_count())


def watch_collections() -> None:
    """Log every garbage collection of this process that takes SLOW_COLLECTION_MS or more
    (once per process, however often called)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
