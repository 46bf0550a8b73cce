"""The route publisher: whole tables to old subscribers, the whole table then deltas to
those that accept them, and a subscriber that fell behind gets what it missed in one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from weir.controller.route_publisher import (
    LOAD_PUBLISH_INTERVAL_S,
    PUBLISH_MIN_INTERVAL_S,
    URGENT_BURST,
    RoutePublisher,
    TargetChanges,
    set_change_wait,
)
from weir.dataplane.route_table import RouteTable
from weir.protos import weir_pb2 as pb


def table(ongoing: dict[str, int]) -> pb.RouteTable:
    return pb.RouteTable(deployments=[pb.DeploymentTargets(
        app="a", deployment="D",
        replicas=[pb.ReplicaTarget(replica_id=r, address="h:1", ongoing=n)
                  for r, n in sorted(ongoing.items())])])


def counted_publisher() -> tuple[list[float], dict[str, int], RoutePublisher]:
    """A publisher of `table(current)`, noting when each table was built (loop time)."""
    loop = asyncio.get_running_loop()
    builds: list[float] = []
    current = {"r1": 0}

    def build() -> pb.RouteTable:
        builds.append(loop.time())
        return table(current)

    return builds, current, RoutePublisher(build, lambda: True, asyncio.Event())


@contextlib.asynccontextmanager
async def published_once() -> AsyncIterator[tuple[list[float], dict[str, int], RoutePublisher]]:
    """`counted_publisher`, running, once its first table is built; stopped on exit."""
    builds, current, publisher = counted_publisher()
    runner = asyncio.get_running_loop().create_task(publisher.run())
    try:
        publisher.mark_dirty()
        await _until(lambda: len(builds) == 1)
        yield builds, current, publisher
    finally:
        runner.cancel()


def set_ongoing(current: dict[str, int], now: dict[str, int]) -> None:
    current.clear()
    current.update(now)


def test_deltas_after_the_first_table_and_merged_when_behind() -> None:
    async def scenario() -> None:
        current = {"r1": 0, "r2": 0}
        publisher = RoutePublisher(lambda: table(current), lambda: True, asyncio.Event())
        publisher.ready = True
        publisher._publish(table(current))
        deltas = publisher.watch(accepts_deltas=True)
        whole = publisher.watch(accepts_deltas=False)
        first, first_whole = await anext(deltas), await anext(whole)
        assert first.delta_from == 0 and first == first_whole == publisher.table
        view = RouteTable.from_proto(first)
        # Three versions while the subscriber reads nothing: it gets one merged delta.
        for n in (1, 2, 3):
            current = {"r1": n, "r2": 0}
            publisher._publish(table(current))
        got = await asyncio.wait_for(anext(deltas), 5)
        assert (got.delta_from, got.version) == (first.version, publisher.table.version)
        assert [t.replica_id for t in got.deployments[0].replicas] == ["r1"]
        view = view.with_delta(got)
        assert view.deployments == RouteTable.from_proto(publisher.table).deployments
        assert await asyncio.wait_for(anext(whole), 5) == publisher.table

    asyncio.run(scenario())


def test_a_subscriber_beyond_the_history_gets_the_whole_table() -> None:
    async def scenario() -> None:
        publisher = RoutePublisher(lambda: table({}), lambda: True, asyncio.Event())
        publisher.ready = True
        for n in range(100):
            publisher._publish(table({"r1": n}))
        assert publisher.update_for(1, accepts_deltas=True) is publisher.table
        assert publisher.update_for(98, accepts_deltas=True).delta_from == 98

    asyncio.run(scenario())


def test_subscribers_one_version_behind_share_that_versions_delta() -> None:
    # The common case at a hundred subscribers: no merge, and one message for all of them.
    publisher = RoutePublisher(lambda: table({}), lambda: True, asyncio.Event())
    publisher.ready = True
    for n in range(3):
        publisher._publish(table({"r1": n, "r2": 0}))
    one = publisher.update_for(2, accepts_deltas=True)
    assert one is publisher.update_for(2, accepts_deltas=True)
    assert (one.delta_from, one.version) == (2, 3)
    assert [t.replica_id for t in one.deployments[0].replicas] == ["r1"]
    merged = publisher.update_for(1, accepts_deltas=True)
    assert (merged.delta_from, merged.version) == (1, 3)


def test_load_changes_are_coalesced_and_set_changes_go_at_once() -> None:
    async def scenario() -> None:
        async with published_once() as (builds, current, publisher):
            for n in range(1, 6):  # a burst of load reports: one table, not five
                set_ongoing(current, {"r1": n})
                publisher.mark_dirty(load_only=True)
                await asyncio.sleep(0)
            await _until(lambda: len(builds) == 2)
            assert builds[1] - builds[0] >= LOAD_PUBLISH_INTERVAL_S * 0.9
            assert publisher.table.deployments[0].replicas[0].ongoing == 5
            began = asyncio.get_running_loop().time()
            set_ongoing(current, {"r1": 5, "r2": 0})
            publisher.mark_dirty(load_only=True)
            publisher.mark_dirty()  # a replica joined: no waiting for the load interval
            await _until(lambda: len(builds) == 3)
            assert builds[2] - began < LOAD_PUBLISH_INTERVAL_S

    asyncio.run(scenario())


def test_a_set_change_after_a_load_table_does_not_wait_and_set_changes_are_spaced() -> None:
    async def scenario() -> None:
        async with published_once() as (builds, current, publisher):
            await asyncio.sleep(LOAD_PUBLISH_INTERVAL_S)
            set_ongoing(current, {"r1": 1})
            publisher.mark_dirty(load_only=True)  # load: goes out (its interval is over)
            await _until(lambda: len(builds) == 2)
            # A burst of set changes right after the load table: URGENT_BURST go out at
            # once, one after another; the next waits for the credit to grow again.
            burst = int(URGENT_BURST)
            for n in range(burst + 1):
                set_ongoing(current, {"r1": 1, f"r{n + 2}": 0} if n % 2 == 0 else {"r1": 1})
                publisher.mark_dirty()
                await _until(lambda n=n: len(builds) == 3 + n, poll_s=0.0)
            at_once = [b - a for a, b in itertools.pairwise(builds[1:burst + 2])]
            assert max(at_once) < PUBLISH_MIN_INTERVAL_S / 2, at_once
            assert builds[burst + 2] - builds[burst + 1] >= PUBLISH_MIN_INTERVAL_S * 0.5

    asyncio.run(scenario())


def test_set_changes_spend_a_credit_that_grows_back_one_per_interval() -> None:
    assert set_change_wait(URGENT_BURST, 0.0) == (0.0, URGENT_BURST - 1)
    assert set_change_wait(0.0, 10.0) == (0.0, URGENT_BURST - 1)  # full again, capped
    wait, left = set_change_wait(0.0, PUBLISH_MIN_INTERVAL_S / 4)
    assert wait == pytest.approx(PUBLISH_MIN_INTERVAL_S * 3 / 4) and left == 0.0
    assert set_change_wait(0.5, PUBLISH_MIN_INTERVAL_S / 2) == (0.0, 0.0)


async def _until(check: Callable[[], bool], timeout: float = 5.0, poll_s: float = 0.01) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(poll_s)


def test_publishing_only_the_changed_targets_gives_the_same_tables() -> None:
    async def scenario() -> None:
        whole = RoutePublisher(lambda: pb.RouteTable(), lambda: True, asyncio.Event())
        parts = RoutePublisher(lambda: pb.RouteTable(), lambda: True, asyncio.Event())
        for p in (whole, parts):
            p.ready = True
            p._publish(table({"r1": 0, "r2": 0}))
        steps: list[dict[str, pb.ReplicaTarget | None]] = [
            {"r2": pb.ReplicaTarget(replica_id="r2", address="h:1", ongoing=4)},
            {"r3": pb.ReplicaTarget(replica_id="r3", address="h:1", ongoing=0)},
            {"r1": None, "r9": None}]
        current = {"r1": 0, "r2": 0}
        for step in steps:
            for rid, t in step.items():
                if t is None:
                    current.pop(rid, None)
                else:
                    current[rid] = t.ongoing
            whole._publish(table(current))
            parts._publish_targets(TargetChanges(pb.RouteTable(), {("a", "D"): step}))
            assert parts.version == whole.version
            assert parts.table == whole.table
            assert parts.update_for(1, True) == whole.update_for(1, True)
        # Nothing changed: no new version.
        parts._publish_targets(TargetChanges(pb.RouteTable(), {("a", "D"): {"r9": None}}))
        assert parts.version == whole.version

    asyncio.run(scenario())


def test_every_route_stream_ends_with_the_term() -> None:
    # Subscribers waiting for a newer version, and one that has not read its first table:
    # all of them end when the term does, with nothing more sent.
    async def scenario() -> None:
        ended = asyncio.Event()
        publisher = RoutePublisher(lambda: table({}), lambda: True, ended)
        publisher.ready = True
        publisher._publish(table({"r1": 0}))
        streams = [publisher.watch(accepts_deltas=True) for _ in range(3)]
        for stream in streams[:2]:
            await anext(stream)
        waiting = [asyncio.ensure_future(anext(stream)) for stream in streams[:2]]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiting)
        ended.set()
        for w in waiting:
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(w, 5)
        first = await anext(streams[2])  # it had a version to send before the end
        assert first.version == publisher.version
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(streams[2]), 5)

    asyncio.run(scenario())


def test_compact_subscribers_follow_the_same_tables_and_old_ones_get_whole_targets() -> None:
    # Loads alone, replicas coming and going, a whole table between: a subscriber of the
    # compact form and one of whole targets, each reading every version, end up with the
    # publisher's table at each; only the compact one gets positions, and only for loads.
    async def scenario() -> None:
        publisher = RoutePublisher(lambda: pb.RouteTable(), lambda: True, asyncio.Event())
        publisher.ready = True
        publisher._publish(table({f"r{i}": 0 for i in range(6)}))
        compact = publisher.watch(accepts_deltas=True, compact=True)
        plain = publisher.watch(accepts_deltas=True)
        views = [RouteTable.from_proto(await anext(s)) for s in (compact, plain)]

        def target(rid: str, n: int) -> pb.ReplicaTarget:
            return pb.ReplicaTarget(replica_id=rid, address="h:1", ongoing=n)

        steps: list[dict[str, pb.ReplicaTarget | None] | dict[str, int]] = [
            {"r1": target("r1", 3), "r4": target("r4", 1)},
            {"r0": None, "r2": target("r2", 2)},
            {"r3": target("r3", 5), "r5": target("r5", 1)},
            {"r7": target("r7", 0), "r5": target("r5", 2)},
            {"r1": 9, "r3": 5, "r4": 1, "r5": 2, "r7": 0},  # a whole table
            {"r3": target("r3", 0)},
        ]
        for step in steps:
            if all(isinstance(v, int) for v in step.values()):
                publisher._publish(table(step))  # type: ignore[arg-type]
            else:
                publisher._publish_targets(
                    TargetChanges(pb.RouteTable(), {("a", "D"): step}))  # type: ignore[dict-item]
            got = [await asyncio.wait_for(anext(s), 5) for s in (compact, plain)]
            assert not any(d.load_positions for d in got[1].deployments)
            views = [v.with_delta(g) for v, g in zip(views, got, strict=True)]
            want = RouteTable.from_proto(publisher.table).deployments
            assert views[0].deployments == views[1].deployments == want
        # The last step changed a load alone: one position, no whole target.
        last = publisher.update_for(publisher.version - 1, True, compact=True)
        assert not last.deployments[0].replicas
        assert list(last.deployments[0].load_positions) == [1]  # r1 r3 r4 r5 r7

    asyncio.run(scenario())
