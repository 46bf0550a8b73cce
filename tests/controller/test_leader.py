"""The leader's loop on an in-memory store, with no etcd, gRPC or sleeps.

Replicas are simulated at the session boundary (the leader's side of their stream is real);
the node agent is simulated by its record in the store. Each pass is driven by hand with a
manual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from weir.build import BuiltApp, DeploymentSpec
from weir.controller.cluster_goal import read_records
from weir.controller.goal import AppGoal
from weir.controller.health import FIRST_BACKOFF_S
from weir.controller.leader import (
    ADOPTION_GRACE_S,
    ADOPTION_MAX_S,
    PASS_GAP_S,
    SWEEP_S,
    TICK_S,
    Leader,
    adoption_over,
    pass_gap,
)
from weir.controller.pass_stats import step_times
from weir.controller.record_keeper import FULL_READ_S
from weir.controller.replica_starts import new_replica_id
from weir.controller.route_changes import WHOLE_TABLE_S
from weir.etcd.keys import APPS_PREFIX, NODES_PREFIX, REPLICAS_PREFIX
from weir.etcd.memory_store import ManualClock, MemoryStore
from weir.etcd.records import NodeRecord, ReplicaRecord
from weir.protos import weir_pb2 as pb

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


class SimulatedNode:
    """A node agent's side in etcd: its record offers CPUs and lists the replicas it runs;
    `run_assigned` "starts" whatever the leader assigned to it."""

    def __init__(self, store: MemoryStore, node_id: str = "n1", cpus: float = 8) -> None:
        self.store = store
        self.record = NodeRecord(node_id, "127.0.0.1", {"CPU": cpus, "GPU": 0.0})
        self.started: list[ReplicaRecord] = []

    async def _publish(self) -> None:
        await self.store.put(NODES_PREFIX + self.record.node_id, self.record.to_bytes())

    @property
    def launched(self) -> list[ReplicaRecord]:
        """Every replica this node has started."""
        return self.started

    async def run_assigned(self) -> list[ReplicaRecord]:
        """Start what is newly assigned here; drop (kill) what is no longer assigned."""
        items, _ = await self.store.get_prefix(REPLICAS_PREFIX)
        assigned = [r for r in (ReplicaRecord.from_bytes(kv.value) for kv in items)
                    if r.node_id == self.record.node_id]
        ids = {r.replica_id for r in assigned}
        for rid in [rid for rid in self.record.replicas if rid not in ids]:
            del self.record.replicas[rid]
        new = [r for r in assigned if r.replica_id not in self.record.replicas
               and r.replica_id not in {s.replica_id for s in self.started}]
        for r in new:
            self.started.append(r)
            self.record.replicas[r.replica_id] = 1000 + len(self.started)
        await self._publish()
        return new

    async def kill(self, replica_id: str) -> None:
        self.record.replicas.pop(replica_id, None)
        await self._publish()


class SimulatedReplica:
    """A replica's end of its session: reports go in, commands come out."""

    def __init__(self, leader: Leader, record: ReplicaRecord, pid: int) -> None:
        self.leader, self.record, self.pid = leader, record, pid
        self._reports: asyncio.Queue[pb.ReplicaReport] = asyncio.Queue()
        self.commands: list[pb.ReplicaCommand] = []
        self._task = asyncio.get_running_loop().create_task(self._hold(leader))

    async def _reports_stream(self) -> AsyncIterator[pb.ReplicaReport]:
        while True:
            yield await self._reports.get()

    async def _hold(self, leader: Leader) -> None:
        async for command in leader.session(self._reports_stream()):
            self.commands.append(command)

    async def report(self, state: pb.ReplicaState, message: str = "", version: str = "",
                     ongoing: int = 0) -> None:
        report = pb.ReplicaReport(
            replica_id=self.record.replica_id, pid=self.pid, state=state, message=message,
            address=f"127.0.0.1:{self.pid}", version=version, user_config_json="null",
            ongoing=ongoing)
        self._reports.put_nowait(report)
        # Let the session take it in (a registration waits for its record's write).
        deadline = time.monotonic() + 5
        while ((sess := self.leader.sessions.sessions.get(self.record.replica_id)) is None
               or sess.report is not report):
            assert time.monotonic() < deadline, "the session never took the report"
            await asyncio.sleep(0.001)
        for _ in range(5):  # and queue its commands
            await asyncio.sleep(0)

    def close(self) -> None:
        self._task.cancel()


def built_goal(definition: bytes, timestamp: float, replicas: int = 1) -> AppGoal:
    spec = DeploymentSpec("app", "D", {"num_replicas": replicas}, definition, ingress=True)
    return AppGoal(name="app", config={"name": "app"}, deployment_timestamp=timestamp,
                   build_key="k", built_json=BuiltApp("app", [spec]).to_json())


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock(100.0)
        self.store = MemoryStore(clock=self.clock)
        self.node = SimulatedNode(self.store)
        self.leader = Leader(self.store, python_executable=sys.executable,
                             clock=self.clock, wall_clock=lambda: 1e9 + self.clock())
        self.replicas: list[SimulatedReplica] = []

    async def deploy(self, definition: bytes, timestamp: float) -> None:
        await self.node.run_assigned()  # registers the node
        await self.store.put(APPS_PREFIX + "app",
                             built_goal(definition, timestamp).to_bytes())

    async def start_replica(self, state: pb.ReplicaState, message: str = "") -> None:
        """Run a pass that launches a replica; the replica registers and reports `state`."""
        await self.leader.reconcile_once()
        started = await self.node.run_assigned()
        assert len(started) == 1, "the pass assigned no replica"
        record = started[0]
        replica = SimulatedReplica(self.leader, record, 1000 + len(self.node.started))
        self.replicas.append(replica)
        await replica.report(pb.STARTING)
        assert [c.kind for c in replica.commands] == [pb.REGISTERED, pb.INIT]
        await replica.report(state, message, version=record.version)

    async def running_between_full_reads(self) -> str:
        """Deploy one replica, RUNNING, then pass as the leader does between full reads
        (with a watch); its id."""
        await self.deploy(b"v1", 1.0)
        await self.start_replica(pb.RUNNING)
        self.leader.keeper.watching = True
        await self.leader.reconcile_once()
        return self.replicas[0].record.replica_id

    def app_status(self) -> tuple[str, str]:
        doc = self.leader.status()["app"]["app_status"]
        return doc["status"], doc["message"]

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()


def test_reading_status_never_changes_the_leader() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.deploy(b"v1", 1.0)
        await h.start_replica(pb.FAILED, "replica failed to start: ValueError: boom")
        await h.leader.reconcile_once()
        state = copy.deepcopy((h.leader.books, h.leader.health, h.leader.statuses))
        answers = {repr(h.leader.status()) for _ in range(50)}
        h.leader.replicas()
        assert len(answers) == 1
        assert (h.leader.books, h.leader.health, h.leader.statuses) == state
        h.close()

    run(scenario())


def _later_failure(query_status: bool) -> list[tuple[str, str]]:
    """Run, then fail: what status says at the end, with or without reads on the way."""
    async def scenario() -> list[tuple[str, str]]:
        h = Harness()
        await h.deploy(b"v1", 1.0)
        await h.start_replica(pb.RUNNING)
        await h.leader.reconcile_once()
        if query_status:
            h.app_status()
        await h.node.kill(h.replicas[0].record.replica_id)
        h.replicas[0].close()
        for _ in range(5):
            await asyncio.sleep(0)
        await h.leader.reconcile_once()
        if query_status:
            h.app_status()
        status, message = h.app_status()
        h.close()
        # Replica ids are random: compare what status says about them, not their names.
        return [(status, message.replace(h.replicas[0].record.replica_id, "R"))]

    return run(scenario())


def test_a_failure_after_running_reads_the_same_whether_or_not_status_was_asked() -> None:
    asked, not_asked = _later_failure(True), _later_failure(False)
    assert asked == not_asked
    status, message = not_asked[0]
    # Ray: a deployment that was healthy and loses a replica is UNHEALTHY, and so is its app.
    assert status == "UNHEALTHY" and "died unexpectedly" in message


def test_constructor_failure_is_deploy_failed_after_three_and_backs_off() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.deploy(b"v1", 1.0)
        for attempt in range(1, 5):
            await h.start_replica(pb.FAILED, "replica failed to start: ValueError: boom")
            await h.leader.reconcile_once()  # kills it and counts the failure
            status, message = h.app_status()
            # Ray: 3 failed starts per target replica before the update has failed.
            assert status == ("DEPLOY_FAILED" if attempt >= 3 else "DEPLOYING")
            assert "ValueError: boom" in (message if attempt >= 3 else
                                          h.leader.status()["app"]["deployment_statuses"][0][
                                              "message"])
            await h.leader.reconcile_once()
            assert await h.node.run_assigned() == [], "restarted during its backoff"
            h.clock.advance(h.leader.health[("app", "D")].backoff_until - h.clock())
        assert h.leader.health[("app", "D")].consecutive_failures == 4
        h.close()

    run(scenario())


def test_a_fixed_version_starts_at_once_after_a_crash_loop() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.deploy(b"v1", 1.0)
        for _ in range(8):  # backoff now 30 s
            await h.start_replica(pb.FAILED, "replica failed to start: ValueError: boom")
            await h.leader.reconcile_once()
            h.clock.advance(h.leader.health[("app", "D")].backoff_until - h.clock())
        await h.start_replica(pb.FAILED, "replica failed to start: ValueError: boom")
        await h.leader.reconcile_once()
        assert h.leader.health[("app", "D")].backoff_until - h.clock() >= 29
        await h.deploy(b"v2", 2.0)
        # No time passes: the new version is not held by the old one's backoff.
        await h.start_replica(pb.RUNNING)
        await h.leader.reconcile_once()
        assert h.app_status() == ("RUNNING", "")
        h.close()

    run(scenario())


def test_a_deleted_app_leaves_no_judgement_behind() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.deploy(b"v1", 1.0)
        await h.start_replica(pb.FAILED, "replica failed to start: ValueError: boom")
        await h.leader.reconcile_once()
        assert h.leader.health
        await h.store.delete(APPS_PREFIX + "app")
        await h.leader.reconcile_once()
        assert h.leader.health == {}
        # Its replica is still recorded (being stopped): the app shows as DELETING till then.
        assert {s.status_trigger for s in h.leader.statuses.values()} <= {"DELETING"}
        h.close()

    run(scenario())


def test_the_leader_catches_a_change_its_watch_missed_at_the_next_full_read() -> None:
    # The leader's own loop, with the watch said to be running but delivering nothing:
    # passes use the cache, and the full read every FULL_READ_S finds the change.
    async def scenario() -> None:
        h = Harness()
        await h.deploy(b"v1", 1.0)
        await h.leader.reconcile_once()
        [started] = await h.node.run_assigned()
        h.leader.keeper.watching = True
        await h.store.delete(REPLICAS_PREFIX + started.replica_id)
        h.clock.advance(FULL_READ_S / 2)
        await h.leader.reconcile_once()
        assert started.replica_id in h.leader.records, "no full read was due yet"
        h.clock.advance(FULL_READ_S / 2)
        await h.leader.reconcile_once()
        assert started.replica_id not in h.leader.records
        h.close()

    run(scenario())


def test_a_route_change_missed_between_passes_is_published_within_the_sweep() -> None:
    # Between passes the table changes only where replicas said so, and where the sweep
    # looks again: a change nobody said (here: a report taken without telling the leader)
    # is published within SWEEP_S, as a delta; the whole table is built again
    # only every WHOLE_TABLE_S.
    async def scenario() -> None:
        h = Harness()
        rid = await h.running_between_full_reads()
        publisher = h.leader.routes
        publisher.ready = True
        first = h.leader.route_changes.current_table()
        assert isinstance(first, pb.RouteTable)  # the first table is whole
        publisher._publish(first)
        session = h.leader.sessions.sessions[rid]
        session.report.ongoing = 7  # unannounced

        def ongoing() -> int:
            return publisher.table.deployments[0].replicas[0].ongoing

        for _ in range(5):
            h.clock.advance(SWEEP_S / 4)
            await h.leader.reconcile_once()
            change = h.leader.route_changes.current_table()
            assert not isinstance(change, pb.RouteTable)
            publisher._publish_targets(change)
            if ongoing() == 7:
                break
        assert ongoing() == 7
        h.clock.advance(WHOLE_TABLE_S)
        await h.leader.reconcile_once()
        assert isinstance(h.leader.route_changes.current_table(), pb.RouteTable)
        h.close()

    run(scenario())


def test_records_are_forgotten_together_in_one_transaction() -> None:
    async def scenario() -> None:
        h = Harness()
        for rid in ("app#D#1", "app#D#2", "app#D#3"):
            await h.store.put(REPLICAS_PREFIX + rid, ReplicaRecord(
                rid, "app", "D", "v1", pid=0, started_at=1.0).to_bytes())
        await read_records(h.store, h.leader.replica_records)
        assert len(h.leader.records) == 3
        before = h.store.revision
        await h.leader.executor.forget(["app#D#1", "app#D#3"])
        assert h.store.revision == before + 1
        assert set(h.leader.records) == {"app#D#2"}
        items, _ = await h.store.get_prefix(REPLICAS_PREFIX)
        assert [kv.key for kv in items] == [REPLICAS_PREFIX + "app#D#2"]

    run(scenario())


def test_a_new_replica_id_is_never_one_already_taken() -> None:
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb", "cccccc"])
    taken = {"app#D#aaaaaa", "app#D#bbbbbb"}
    assert new_replica_id("app", "D", taken.__contains__, lambda: next(tokens)) == (
        "app#D#cccccc")


def test_health_checks_follow_the_replicas_viewed_again_between_full_passes() -> None:
    async def scenario() -> None:
        h = Harness()
        rid = await h.running_between_full_reads()
        await h.leader.reconcile_once()
        assert h.leader.keeper.full_read is False and set(h.leader.prober.targets._checks) == {rid}
        await h.replicas[0].report(pb.FAILED, "boom", version=h.replicas[0].record.version)
        await h.leader.reconcile_once()
        assert h.leader.keeper.full_read is False and h.leader.prober.targets._checks == {}
        h.close()

    run(scenario())


def test_a_slow_pass_says_how_long_each_step_took() -> None:
    marks = [("began", 10.0), ("records", 10.002), ("goal", 10.25), ("observe", 10.26)]
    assert step_times(marks) == {"records": 2.0, "goal": 248.0, "observe": 10.0}
    assert step_times(marks[:1]) == {}


def test_passes_woken_again_and_again_leave_the_loop_a_gap() -> None:
    # Every replica registering at a failover wakes the pass: woken without pause for
    # 0.3 s, passes start at least PASS_GAP_S after the last one ended.
    async def scenario() -> None:
        h = Harness()
        started: list[float] = []

        async def one_pass() -> None:
            started.append(time.perf_counter())

        h.leader.reconcile_once = one_pass  # type: ignore[method-assign]

        async def wake_always() -> None:
            while True:
                h.leader.wake()
                await asyncio.sleep(0)

        waker = asyncio.ensure_future(wake_always())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(h.leader._reconcile_loop(), 0.3)
        waker.cancel()
        assert 2 <= len(started) <= 0.3 / PASS_GAP_S + 1
        assert all(b - a >= PASS_GAP_S * 0.9 for a, b in itertools.pairwise(started))
        h.close()

    run(scenario())


@contextlib.asynccontextmanager
async def next_term(h: Harness) -> AsyncIterator[tuple[Leader, list[ReplicaRecord]]]:
    """A two-replica deployment placed and recorded by the leader of `h`, then a new
    leader started on the same store (stopped on exit), with the two records."""
    await h.node.run_assigned()  # registers the node
    await h.store.put(APPS_PREFIX + "app", built_goal(b"v1", 1.0, replicas=2).to_bytes())
    await h.leader.reconcile_once()
    records = await h.node.run_assigned()
    assert len(records) == 2
    new = Leader(h.store, python_executable=sys.executable, clock=h.clock,
                 wall_clock=lambda: 1e9 + h.clock())
    await new.start()
    try:
        yield new, records
    finally:
        await new.stop()


async def register(leader: Leader, record: ReplicaRecord, pid: int) -> SimulatedReplica:
    """`record`'s replica registering with `leader`, RUNNING."""
    replica = SimulatedReplica(leader, record, pid)
    await replica.report(pb.RUNNING, version=record.version)
    return replica


def test_adoption_is_over_when_all_registered_or_none_did_for_the_grace() -> None:
    assert adoption_over(True, 0.1, 0.1)
    assert not adoption_over(False, ADOPTION_GRACE_S + 5, ADOPTION_GRACE_S - 0.1)
    assert adoption_over(False, ADOPTION_GRACE_S + 5, ADOPTION_GRACE_S + 0.1)
    assert adoption_over(False, ADOPTION_MAX_S + 0.1, 0.0)


def test_a_new_leader_waits_for_registrations_that_keep_coming() -> None:
    # The routes of a new term wait while replicas keep registering, past ADOPTION_GRACE_S
    # from the term's start, and go out once they are all in.
    async def scenario() -> None:
        h = Harness()
        async with next_term(h) as (new, records):
            h.clock.advance(ADOPTION_GRACE_S - 1)
            first = await register(new, records[0], 1001)
            h.clock.advance(ADOPTION_GRACE_S - 1)  # the term is older than the grace
            assert not new._adopted(), "adoption ended while registrations kept coming"
            second = await register(new, records[1], 1002)
            assert new._adopted()
            first.close()
            second.close()

    run(scenario())


def test_a_new_leader_ends_adoption_once_none_registered_for_the_grace() -> None:
    async def scenario() -> None:
        h = Harness()
        async with next_term(h) as (new, records):
            first = await register(new, records[0], 1001)
            assert not new._adopted()
            h.clock.advance(ADOPTION_GRACE_S + 0.1)  # the other's process is gone
            assert new._adopted()
            first.close()

    run(scenario())


def test_a_registration_under_way_keeps_the_adoption_going() -> None:
    # At a failover every session opens at once and none may be registered for seconds.
    async def scenario() -> None:
        h = Harness()
        async with next_term(h) as (new, records):
            first = await register(new, records[0], 1001)
            opening = SimulatedReplica(new, records[1], 1002)  # its first report not read yet
            for _ in range(5):
                await asyncio.sleep(0)
            assert new.sessions.registering == 1
            h.clock.advance(ADOPTION_GRACE_S + 0.1)
            assert not new._adopted(), "adoption ended with a registration under way"
            await opening.report(pb.RUNNING, version=records[1].version)
            assert new.sessions.registering == 0
            assert new._adopted()
            first.close()
            opening.close()

    run(scenario())


def test_the_pass_loop_cancelled_as_it_is_woken_ends() -> None:
    # At 10,000 replicas a leader that lost its lease made passes for minutes after its
    # stop() cancelled the loop: the cancel came as a registration woke the loop, and
    # asyncio.wait_for (Python < 3.12) took the wake for the answer and dropped the cancel.
    harness = Harness()
    passes: list[float] = []

    async def one_pass() -> None:
        passes.append(time.monotonic())

    harness.leader.reconcile_once = one_pass  # type: ignore[method-assign]

    async def scenario() -> None:
        loop = asyncio.ensure_future(harness.leader._reconcile_loop())
        deadline = time.monotonic() + 5
        while not passes and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        await asyncio.sleep(PASS_GAP_S)  # past the pass's gap: waiting for a wake
        harness.leader.wake()
        loop.cancel()  # in the same turn as the wake
        done, _ = await asyncio.wait((loop,), timeout=1)
        assert loop in done and loop.cancelled(), "the loop ran on after its cancel"
        assert len(passes) == 1

    run(scenario())


def test_a_wake_during_a_pass_starts_the_next_pass_at_once() -> None:
    # A replica turning RUNNING while a pass awaits etcd wakes the leader: the next pass must
    # start at once, not after the tick (it was cleared with the pass's end, then waited out
    # TICK_S: the route to a new replica came up to 0.5 s late).
    harness = Harness()
    passes: list[float] = []

    async def one_pass() -> None:
        passes.append(time.monotonic())
        if len(passes) == 1:
            await asyncio.sleep(0.01)
            harness.leader.wake()  # comes while the pass runs
            await asyncio.sleep(0.01)

    harness.leader.reconcile_once = one_pass  # type: ignore[method-assign]

    async def scenario() -> None:
        loop = asyncio.ensure_future(harness.leader._reconcile_loop())
        try:
            deadline = time.monotonic() + 5
            while len(passes) < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        assert len(passes) >= 2
        assert passes[1] - passes[0] < TICK_S / 2

    run(scenario())


def test_a_changed_replica_of_an_unchanged_deployment_is_acted_on_at_the_next_pass() -> None:
    # Two deployments, settled: passes take both as they were (`deployment_changes`). A
    # replica of one fails, its deployment's goal unchanged: the next pass (long before
    # the sweep of deployments would come to it) judges it and kills the replica, and
    # starts another once its backoff is over; the other deployment is taken as it was.
    async def scenario() -> None:
        h = Harness()
        await h.node.run_assigned()
        specs = [DeploymentSpec("app", name, {"num_replicas": 1}, b"v1", ingress=name == "A")
                 for name in ("A", "B")]
        await h.store.put(APPS_PREFIX + "app", AppGoal(
            name="app", config={"name": "app"}, deployment_timestamp=1.0, build_key="k",
            built_json=BuiltApp("app", specs).to_json()).to_bytes())
        await h.leader.reconcile_once()
        for record in await h.node.run_assigned():
            replica = SimulatedReplica(h.leader, record, 1000 + len(h.replicas))
            h.replicas.append(replica)
            await replica.report(pb.STARTING)
            await replica.report(pb.RUNNING, version=record.version)
        h.leader.keeper.watching = True
        taken: list[frozenset[tuple[str, str]]] = []
        unchanged = h.leader.deployment_changes.unchanged
        h.leader.deployment_changes.unchanged = (  # type: ignore[method-assign]
            lambda *a, **kw: taken.append(unchanged(*a, **kw)) or taken[-1])
        for _ in range(3):
            h.clock.advance(0.01)
            await h.leader.reconcile_once()
        assert taken[-1] == {("app", "A"), ("app", "B")}, "the deployments never settled"
        a = next(r for r in h.replicas if r.record.deployment == "A")
        await a.report(pb.FAILED, "boom", version=a.record.version)
        h.clock.advance(0.01)
        await h.leader.reconcile_once()
        assert taken[-1] == {("app", "B")}
        assert not h.leader.deployment_changes.swept
        assert a.record.replica_id not in h.leader.records, "the failed replica was kept"
        assert h.leader.health[("app", "A")].consecutive_failures == 1
        # Its crash-loop backoff over, a replica is started in its place: the clock alone
        # changed (`may_start`), and that is enough to plan it again.
        for _ in range(3):
            h.clock.advance(FIRST_BACKOFF_S / 2)
            await h.leader.reconcile_once()
        assert len(h.leader.replica_records.of(("app", "A"))) == 1, "none started instead"
        h.close()

    run(scenario())


def test_a_slow_pass_leaves_the_loop_as_long_again_up_to_a_tick() -> None:
    assert pass_gap(0.001) == PASS_GAP_S
    assert pass_gap(0.2) == 0.2
    assert pass_gap(3.0) == TICK_S
