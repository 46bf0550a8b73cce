"""A replica's multiplexed models on their way to the route table: kept per session from
the reports that carry them, and published with the table. Real asyncio, no gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from weir.controller.replica_sessions import ReplicaSessions, ReportChange
from weir.controller.route_publisher import RoutePublisher
from weir.protos import weir_pb2 as pb


def report(*models: str, carry: bool = True, ongoing: int = 0) -> pb.ReplicaReport:
    msg = pb.ReplicaReport(replica_id="r1", address="addr", state=pb.RUNNING,
                           ongoing=ongoing)
    if carry:
        msg.multiplexed_models.SetInParent()
        msg.multiplexed_models.model_ids.extend(models)
    return msg


def test_sessions_keep_the_models_of_the_last_report_that_carried_them() -> None:
    async def scenario() -> list[tuple[str, ...]]:
        ended = asyncio.Event()
        reports: asyncio.Queue[pb.ReplicaReport] = asyncio.Queue()
        seen: list[tuple[str, ...]] = []
        news = asyncio.Event()

        def on_report(replica_id: str, change: ReportChange) -> None:
            seen.append(sessions.model_ids("r1"))
            news.set()

        sessions = ReplicaSessions(ended, on_report)

        async def stream() -> AsyncIterator[pb.ReplicaReport]:
            while True:
                yield await reports.get()

        async def admit(first: pb.ReplicaReport) -> list[pb.ReplicaCommand]:
            return []

        async def hold() -> None:
            async for _ in sessions.hold(stream(), admit):
                pass

        async def heard(count: int) -> None:
            while len(seen) < count:
                await asyncio.wait_for(news.wait(), 1)
                news.clear()

        task = asyncio.get_running_loop().create_task(hold())
        reports.put_nowait(report("a"))
        await heard(1)
        # (The report without models has news, its load: a mere repeat is not heard.)
        for n, msg in enumerate((report(carry=False, ongoing=1), report("a", "b"), report()),
                                start=2):
            reports.put_nowait(msg)
            await heard(n)
        ended.set()
        await asyncio.wait_for(task, 1)
        return seen

    seen = asyncio.run(scenario())
    # Registered with "a"; a report without models keeps them; each report that carries
    # models (none, at the end: it still multiplexes) replaces them.
    assert seen[:4] == [("a",), ("a",), ("a", "b"), ()]


def test_published_tables_carry_each_replicas_models_and_change_with_them() -> None:
    held: dict[str, list[str] | None] = {"r1": ["a"], "r2": [], "r3": None}

    def table() -> pb.RouteTable:
        return pb.RouteTable(deployments=[pb.DeploymentTargets(
            app="app", deployment="D", replicas=[pb.ReplicaTarget(replica_id=rid)
                                                 for rid in ("r1", "r2", "r3")])])

    async def scenario() -> list[pb.RouteTable]:
        publisher = RoutePublisher(table, lambda: True, asyncio.Event(),
                                   model_ids=lambda rid: held[rid])
        runner = asyncio.get_running_loop().create_task(publisher.run())
        publisher.mark_dirty()
        tables = aiter(publisher.watch())
        got = [await asyncio.wait_for(anext(tables), 1)]
        held["r2"] = ["b", "c"]
        publisher.mark_dirty()
        got.append(await asyncio.wait_for(anext(tables), 1))
        runner.cancel()
        return got

    first, second = asyncio.run(scenario())
    models = [[list(r.multiplexed_model_ids) for r in t.deployments[0].replicas]
              for t in (first, second)]
    assert models == [[["a"], [], []], [["a"], ["b", "c"], []]]
    # r3 does not multiplex; r2 does, with no model yet.
    assert [r.multiplexed for r in first.deployments[0].replicas] == [True, True, False]
    assert second.version == first.version + 1


def test_model_ids_are_set_not_added_when_a_tables_parts_are_reused() -> None:
    """The leader reuses deployments' parts of an earlier table (scale18): filling models
    in twice must not repeat them."""
    from weir.controller.route_publisher import with_model_ids

    table = pb.RouteTable(deployments=[pb.DeploymentTargets(
        app="a", deployment="d", replicas=[pb.ReplicaTarget(replica_id="r1")])])
    for _ in range(2):
        table = with_model_ids(table, lambda rid: ["m1", "m2"])
    assert list(table.deployments[0].replicas[0].multiplexed_model_ids) == ["m1", "m2"]
