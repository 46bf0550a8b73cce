"""Callers' queue reports as the leader keeps them: summed per deployment, stale ones and
those of ended streams dropped, new demand waking the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from weir.controller.queue_reports import (
    STALE_AFTER_S,
    CallerQueues,
    QueueReport,
    from_proto,
    total_queued,
)
from weir.etcd.memory_store import ManualClock
from weir.protos import weir_pb2 as pb

A, B = ("app", "A"), ("app", "B")


def report(caller: str, **queued: int) -> pb.QueueReport:
    return pb.QueueReport(caller=caller, queues=[
        pb.DeploymentQueue(app="app", deployment=name, queued=n) for name, n in queued.items()])


def test_reports_sum_per_deployment_and_stale_ones_count_for_nothing() -> None:
    reports = [QueueReport("proxy:1", 10.0, {A: 2, B: 1}), QueueReport("proxy:2", 12.0, {A: 3}),
               QueueReport("handle:9", 12.0 - STALE_AFTER_S - 0.1, {A: 100})]
    assert total_queued(reports, now=12.0) == {A: 5, B: 1}
    assert from_proto(report("p", A=0, B=4), at=1.0) == QueueReport("p", 1.0, {B: 4})


def test_new_demand_wakes_and_an_ended_stream_takes_its_report_away() -> None:
    async def scenario() -> None:
        clock = ManualClock(5.0)
        wakes: list[set[tuple[str, str]]] = []
        ended = asyncio.Event()
        queues = CallerQueues(ended, clock, wakes.append)
        inbox: asyncio.Queue[pb.QueueReport | None] = asyncio.Queue()

        async def stream() -> AsyncIterator[pb.QueueReport]:
            while (msg := await inbox.get()) is not None:
                yield msg

        held = asyncio.get_running_loop().create_task(queues.hold(stream()))
        inbox.put_nowait(report("proxy:1", A=1))
        await asyncio.sleep(0.01)
        assert queues.queued() == {A: 1} and wakes == [{A}]
        inbox.put_nowait(report("proxy:1", A=3))  # more of the same demand: no new wake
        await asyncio.sleep(0.01)
        assert queues.queued() == {A: 3} and len(wakes) == 1
        inbox.put_nowait(None)  # the caller hangs up
        await asyncio.wait_for(held, 1)
        assert queues.queued() == {}
        # A stream still open when the term ends is let go, its report dropped.
        inbox.put_nowait(report("proxy:1", B=1))
        held = asyncio.get_running_loop().create_task(queues.hold(stream()))
        await asyncio.sleep(0.01)
        assert queues.queued() == {B: 1}
        ended.set()
        await asyncio.wait_for(held, 1)
        assert queues.queued() == {}

    asyncio.run(scenario())
