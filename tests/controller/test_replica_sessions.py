"""Replica sessions: a stream that hangs up before its first report ends quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from weir.controller.replica_sessions import ReplicaSessions, says_nothing_new
from weir.protos import weir_pb2 as pb


async def _no_reports() -> AsyncIterator[pb.ReplicaReport]:
    return
    yield  # an async generator that ends at once


def test_a_stream_closed_before_registering_yields_nothing() -> None:
    async def scenario() -> list[pb.ReplicaCommand]:
        sessions = ReplicaSessions(asyncio.Event(), lambda replica_id, changed: None)

        async def admit(first: pb.ReplicaReport) -> list[pb.ReplicaCommand]:
            raise AssertionError("nothing registered, nothing to admit")

        out = [c async for c in sessions.hold(_no_reports(), admit)]
        assert not sessions.sessions
        return out

    assert asyncio.run(scenario()) == []


def _report(ongoing: int = 0, models: tuple[str, ...] | None = None) -> pb.ReplicaReport:
    report = pb.ReplicaReport(replica_id="app#D#1", pid=7, state=pb.RUNNING,
                              address="127.0.0.1:9", ongoing=ongoing)
    if models is not None:
        report.multiplexed_models.model_ids.extend(models)
    return report


def test_a_report_says_nothing_new_only_if_it_repeats_the_last() -> None:
    assert says_nothing_new(_report(), _report())
    assert not says_nothing_new(_report(), _report(ongoing=1))
    assert not says_nothing_new(_report(), _report(models=()))
    # Models are sent only when they change: a report without them keeps the last ones.
    assert says_nothing_new(_report(models=("m1",)), _report())
    assert says_nothing_new(_report(models=("m1",)), _report(models=("m1",)))
    assert not says_nothing_new(_report(models=("m1",)), _report(models=("m2",)))
    assert not says_nothing_new(_report(models=("m1",)), _report(ongoing=2))


def test_only_a_report_with_news_reaches_the_leader() -> None:
    async def scenario() -> list[tuple[str, bool]]:
        heard: list[tuple[str, bool]] = []
        sessions = ReplicaSessions(asyncio.Event(), lambda rid, changed: heard.append(
            (rid, changed)))
        queue: asyncio.Queue[pb.ReplicaReport | None] = asyncio.Queue()

        async def reports() -> AsyncIterator[pb.ReplicaReport]:
            while (report := await queue.get()) is not None:
                yield report

        async def admit(first: pb.ReplicaReport) -> list[pb.ReplicaCommand]:
            return []

        async def hold() -> None:
            async for _ in sessions.hold(reports(), admit):
                pass

        task = asyncio.ensure_future(hold())
        for report in (_report(), _report(), _report(), _report(ongoing=3), _report(ongoing=3)):
            queue.put_nowait(report)
        queue.put_nowait(None)
        await asyncio.wait_for(task, 5)
        return heard

    # Registration, the load change, and the hang-up: not the two repeats.
    assert asyncio.run(scenario()) == [("app#D#1", True), ("app#D#1", False),
                                       ("app#D#1", True)]
