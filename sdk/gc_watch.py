"""Logging the garbage collections that hold a process for long.

A collection of the oldest generation walks every object the process holds and keeps the
GIL all along: at 10,000 replicas the leader holds about a million, and a collection then
stops every thread of the process, the lease keep-alive's among them (`weir.etcd`), for as
long as it runs. `watch_collections` logs each one that took SLOW_COLLECTION_MS or more,
so that a lease lost in the middle of one says so in the log.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import structlog

log = structlog.get_logger("weir.gc")

#: Collections at least this long are logged (a warning).
SLOW_COLLECTION_MS = 100.0

_started: list[float] = []


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
        return
    if not _started:
        return
    ms = (time.perf_counter() - _started.pop()) * 1000
    if ms >= SLOW_COLLECTION_MS:
        log.warning("slow garbage collection", generation=info.get("generation"),
                    ms=round(ms, 1), collected=info.get("collected"),
                    frozen=gc.get_freeze_count())


def watch_collections() -> None:
    """Log every garbage collection of this process that takes SLOW_COLLECTION_MS or more
    (once per process, however often called)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
