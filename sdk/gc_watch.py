"""A long-lived server's garbage collections: logged when they hold the process for long,
and kept from walking the heap that lives long.

A collection of the oldest generation walks every object the process holds and keeps the
GIL all along: at 10,000 replicas the leader holds about a million, and a collection then
stops every thread of the process, the lease keep-alive's among them (`weir.etcd`), for as
long as it runs. `watch_collections` logs each one that took SLOW_COLLECTION_MS or more,
so that a lease lost in the middle of one says so in the log. Each line gives the wall time
(`ms`) and the CPU time of the collecting thread (`cpu_ms`): on a machine short of cores the
two part, and only `cpu_ms` is the collector's own work (fewer objects would shorten it;
the rest is the process waiting for a core).

With `freeze_after_full`, each full collection ends with `gc.freeze()`: what survived it
(everything live then, all generations just collected) moves out of the collector's
sight, so the next full collection walks only what came since, and Python's own rule
(a full collection once the survivors grew by a quarter) then counts the frozen heap as
its base. Work per collection follows what is new, not what the process holds. (A new
leader adopting 10,000 replicas ran a full collection every 1 to 2 s, each walking the
whole growing heap: 60 to 530 ms of CPU each, 2.9 s of the 9 s of CPU its adoption took.)
What is frozen and dies in a cycle later is not collected until `collect_deeply` thaws
the heap and collects it whole, every DEEP_COLLECTION_S (`collect_deeply_every`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import structlog

log = structlog.get_logger("weir.gc")

#: Collections at least this long are logged (a warning).
SLOW_COLLECTION_MS = 100.0
#: How often a process that freezes after full collections collects its whole heap, the
#: frozen part too (`collect_deeply_every`): what died in cycles once frozen is kept
#: until then.
DEEP_COLLECTION_S = 600.0

#: (wall, thread CPU) at the start of the collection under way.
_started: list[tuple[float, float]] = []
#: Whether a full collection ends with `gc.freeze()` (`watch_collections`).
_freeze_after_full = [False]


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append((time.perf_counter(), time.thread_time()))
        return
    if not _started:
        return
    wall, cpu = _started.pop()
    generation = info.get("generation")
    if generation == 2 and _freeze_after_full[0]:
        gc.freeze()
    ms = (time.perf_counter() - wall) * 1000
    if ms >= SLOW_COLLECTION_MS:
        log.warning("slow garbage collection", generation=generation,
                    ms=round(ms, 1), cpu_ms=round((time.thread_time() - cpu) * 1000, 1),
                    collected=info.get("collected"), frozen=gc.get_freeze_count())


def watch_collections(freeze_after_full: bool = False) -> None:
    """Log every garbage collection of this process that takes SLOW_COLLECTION_MS or more
    (once per process, however often called); with `freeze_after_full`, end each full
    collection by freezing what survived it (then run `collect_deeply_every`)."""
    _freeze_after_full[0] = freeze_after_full
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def collect_deeply() -> int:
    """Thaw the frozen heap and collect it whole (a full collection: with
    `freeze_after_full`, what survives is frozen again); how many objects it freed."""
    began, frozen = time.perf_counter(), gc.get_freeze_count()
    gc.unfreeze()
    freed = gc.collect()
    log.info("collected the whole heap", frozen_before=frozen, freed=freed,
             frozen=gc.get_freeze_count(), ms=round((time.perf_counter() - began) * 1000, 1))
    return freed


async def collect_deeply_every(period_s: float = DEEP_COLLECTION_S) -> None:
    """`collect_deeply` every `period_s`, until cancelled."""
    while True:
        await asyncio.sleep(period_s)
        collect_deeply()
