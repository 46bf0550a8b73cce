"""Callers' queue reports: the requests waiting in proxies' and handles' routers.

Design. Replicas report what they work on; what waits for a replica lives only in the
callers' routers (each caller bounds its own queue, as in Ray Serve). Each caller holds one
stream to the leader (`Controller.ReportQueues`) and sends its whole state, every
deployment with requests waiting, when it changes and every second while something waits.
The leader keeps each stream's last report; their sum per deployment is the queued part of
the autoscaler's load (`weir.controller.autoscaler`).

Two failures are guarded against. Demand nobody sees: at zero replicas the requests a proxy
holds are the only sign of traffic, so a report that shows a deployment waiting where none
waited before is passed on at once (the leader wakes its loop for a deployment at zero, so
a replica starts within the pass, not at the next tick). Demand that is gone but still
counted: a stream that ends takes its report with it, and a report not refreshed for
STALE_AFTER_S (a caller cut off without its stream closing) counts for nothing, so a lost
caller never keeps a deployment scaled up.

This module only moves and sums reports; it decides nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from weir.protos import weir_pb2 as pb

log = structlog.get_logger("weir.controller.queue_reports")

Key = tuple[str, str]

#: A report that waited requests and was not refreshed for this long counts for nothing
#: (callers refresh every second while requests wait: `weir.dataplane.queue_report`).
STALE_AFTER_S = 3.0


@dataclass(frozen=True)
class QueueReport:
    """A caller's last report, as plain data."""

    caller: str
    at: float
    queued: Mapping[Key, int] = field(default_factory=dict)


def from_proto(msg: pb.QueueReport, at: float) -> QueueReport:
    """The plain-data form of a report received at `at`."""
    queued: dict[Key, int] = {}
    for q in msg.queues:
        if q.queued > 0:
            key = (q.app, q.deployment)
            queued[key] = queued.get(key, 0) + q.queued
    return QueueReport(msg.caller, at, queued)


def total_queued(reports: Iterable[QueueReport], now: float,
                 stale_after: float = STALE_AFTER_S) -> dict[Key, int]:
    """Requests waiting per deployment over every fresh report. Pure."""
    out: dict[Key, int] = {}
    for report in reports:
        if now - report.at > stale_after:
            continue
        for key, n in report.queued.items():
            out[key] = out.get(key, 0) + n
    return out


class CallerQueues:
    """Every caller's last queue report, for one term of leadership."""

    def __init__(self, ended: asyncio.Event, clock: Callable[[], float],
                 on_new_demand: Callable[[set[Key]], None]) -> None:
        self._ended = ended
        self._clock = clock
        #: Called with the deployments that had no request waiting and have some now.
        self._on_new_demand = on_new_demand
        #: One entry per open stream (a caller reconnecting may briefly hold two).
        self._reports: dict[object, QueueReport] = {}

    def queued(self) -> dict[Key, int]:
        """Requests waiting per deployment now, over every fresh report."""
        return total_queued(self._reports.values(), self._clock())

    def take(self, stream: object, msg: pb.QueueReport) -> None:
        """A report arrived on `stream`: it replaces that stream's previous one."""
        before = self.queued()
        self._reports[stream] = from_proto(msg, self._clock())
        new = {k for k, n in self.queued().items() if n > 0 and before.get(k, 0) == 0}
        if new:
            self._on_new_demand(new)

    def drop(self, stream: object) -> None:
        """A stream ended: its requests no longer count."""
        self._reports.pop(stream, None)

    async def hold(self, reports: AsyncIterator[pb.QueueReport]) -> None:
        """Take one caller's reports until it hangs up or this term ends."""
        stream = object()

        async def read() -> None:
            async for msg in reports:
                self.take(stream, msg)

        loop = asyncio.get_running_loop()
        reader = loop.create_task(read())
        ended = loop.create_task(self._ended.wait())
        try:
            await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.info("queue report stream broke", error=str(reader.exception()))
        finally:
            reader.cancel()
            ended.cancel()
            self.drop(stream)
