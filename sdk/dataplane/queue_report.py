"""Telling the leader how many requests this caller holds for each deployment.

Why: the autoscaler counts as load both what replicas work on (they report it) and what
waits for a replica, which only the callers' routers know; for a deployment scaled to zero,
the requests a proxy holds are the only sign of traffic, and the leader starts a replica
when it sees them. The reporter rides on the route table's link to the leader
(`RouteTableSubscriber` companions), so both follow the same leader.

What goes out: the whole state (every deployment with requests waiting) on each change,
at most every REPORT_MIN_INTERVAL_S so a burst of arrivals is one message, and again every
REFRESH_S while something waits, so the leader can tell a live report from one left by a
caller that vanished. An idle caller sends nothing after its last (empty) report.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import grpc
import structlog

from weir.backoff import Backoff
from weir.cancellation import event_within
from weir.dataplane.router import DeploymentRouter
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc

log = structlog.get_logger("weir.dataplane.queue_report")

REPORT_MIN_INTERVAL_S = 0.05
#: Well within the leader's STALE_AFTER_S (`weir.controller.queue_reports`).
REFRESH_S = 1.0


def queue_report(caller: str, routers: Mapping[tuple[str, str], DeploymentRouter]
                 ) -> pb.QueueReport:
    """This caller's queues now: every deployment with requests waiting."""
    return pb.QueueReport(caller=caller, queues=[
        pb.DeploymentQueue(app=app, deployment=name, queued=router.num_queued)
        for (app, name), router in sorted(routers.items()) if router.num_queued > 0])


class QueueReporter:
    """Sends this caller's queue reports to whichever controller the route table follows."""

    def __init__(self, caller: str,
                 routers: Callable[[], Mapping[tuple[str, str], DeploymentRouter]]) -> None:
        self.caller = caller
        self._routers = routers
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """A router's queue grew or shrank: report soon."""
        self._changed.set()

    async def run_on(self, channel: grpc.aio.Channel) -> None:
        """Report on `channel` until cancelled (the route table's link to it ended)."""
        backoff = Backoff(0.1, 2.0, jitter=0.25)
        while True:
            opened = asyncio.get_running_loop().time()
            try:
                await pb_grpc.ControllerStub(channel).ReportQueues(self._reports())
            except grpc.aio.AioRpcError as exc:
                # The route stream on the same channel sees a leader change and moves on;
                # meanwhile, try again (an older controller without the RPC: rarely).
                log.debug("queue report stream ended", code=exc.code().name,
                          details=exc.details() or "")
            if asyncio.get_running_loop().time() - opened > backoff.maximum:
                backoff.reset()  # it had worked: a new failure starts short
            await backoff.sleep()

    async def _reports(self) -> AsyncIterator[pb.QueueReport]:
        last: pb.QueueReport | None = None
        while True:
            # Cleared before the snapshot: a change after it is caught by the next one.
            self._changed.clear()
            report = queue_report(self.caller, self._routers())
            if report != last or report.queues:
                yield report
                last = report
            await event_within(self._changed, REFRESH_S if report.queues else None)
            await asyncio.sleep(REPORT_MIN_INTERVAL_S)
