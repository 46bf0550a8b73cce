"""A caller's queue reports: what it holds per deployment, sent over real gRPC on loopback
when it changes and again while requests wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.polling import loopback_server, until
from weir.dataplane import queue_report as queue_report_module
from weir.dataplane.queue_report import QueueReporter, queue_report
from weir.dataplane.router import DeploymentRouter
from weir.protos import weir_pb2 as pb
from weir.protos import weir_pb2_grpc as pb_grpc


class Collector(pb_grpc.ControllerServicer):
    """A controller that only takes queue reports."""

    def __init__(self) -> None:
        self.received: list[tuple[float, pb.QueueReport]] = []

    async def ReportQueues(self, request_iterator: AsyncIterator[pb.QueueReport],
                           context: grpc.aio.ServicerContext) -> pb.QueueReportReply:
        async for msg in request_iterator:
            self.received.append((time.monotonic(), msg))
        return pb.QueueReportReply()


def test_only_deployments_with_requests_waiting_are_listed() -> None:
    async def scenario() -> None:
        idle, busy = DeploymentRouter("app", "Idle"), DeploymentRouter("app", "Busy")
        busy.update(1, -1, [])
        waiting = [asyncio.ensure_future(busy.assign(time.monotonic() + 5)) for _ in range(2)]
        await asyncio.sleep(0)
        report = queue_report("proxy:p", {("app", "Idle"): idle, ("app", "Busy"): busy})
        assert [(q.deployment, q.queued) for q in report.queues] == [("Busy", 2)]
        for w in waiting:
            w.cancel()

    asyncio.run(scenario())


def test_held_requests_are_reported_at_once_refreshed_and_cleared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_report_module, "REFRESH_S", 0.2)

    async def scenario() -> None:
        collector = Collector()
        server, port = await loopback_server(pb_grpc.add_ControllerServicer_to_server,
                                             collector)
        routers: dict[tuple[str, str], DeploymentRouter] = {}
        reporter = QueueReporter("proxy:p", lambda: routers)
        router = routers[("app", "D")] = DeploymentRouter("app", "D",
                                                           on_queue_change=reporter.changed)
        router.update(1, -1, [])  # at zero replicas
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            task = asyncio.get_running_loop().create_task(reporter.run_on(channel))
            await until(lambda: collector.received)  # the first, empty report
            assert list(collector.received[-1][1].queues) == []
            held = asyncio.ensure_future(router.assign(time.monotonic() + 5))
            sent = time.monotonic()
            await until(lambda: collector.received[-1][1].queues)
            assert collector.received[-1][0] - sent < 0.2
            assert collector.received[-1][1].queues[0].queued == 1
            count = len(collector.received)
            await until(lambda: len(collector.received) >= count + 2)  # refreshed
            router.update(1, -1, [("r1", "addr", 0)])  # a replica came: the request goes
            await asyncio.wait_for(held, 1)
            await until(lambda: not collector.received[-1][1].queues)
            quiet = len(collector.received)
            await asyncio.sleep(0.5)
            assert len(collector.received) == quiet  # idle callers send nothing
            task.cancel()
        await server.stop(0)

    asyncio.run(scenario())
