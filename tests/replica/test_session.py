"""What a replica's reports to the leader carry: its multiplexed models when their set
changed since the last report of the stream, and the outcomes of its own health checks,
each period. No network."""

from __future__ import annotations

import asyncio

import cloudpickle
import pytest

from tests.polling import until
from weir import multiplex
from weir.dataplane.route_table import LeaderLocator
from weir.health_promise import answer_hold, next_answer_within
from weir.protos import weir_pb2 as pb
from weir.replica.server import ReplicaServer
from weir.replica.session import (
    HEARTBEAT_S,
    IDLE_REPORT_S,
    REGISTER_TIMEOUT_MAX_S,
    REGISTER_TIMEOUT_S,
    REPORT_MIN_INTERVAL_S,
    ControllerSession,
    answer_check,
    next_wake,
    register_timeout,
    report_due,
)
from weir.replica.user_callable import UserCallable


def carried(report: pb.ReplicaReport) -> list[str] | None:
    if not report.HasField("multiplexed_models"):
        return None
    return list(report.multiplexed_models.model_ids)


def test_reports_carry_the_models_only_when_they_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def on_command(command: pb.ReplicaCommand) -> None:
        pass

    monkeypatch.setattr(multiplex, "_declared", [False])
    session = ControllerSession("r1", "addr", LeaderLocator(), pb.ReplicaReport, on_command)
    assert carried(session._report()) is None  # no loader: it does not multiplex

    @multiplex.multiplexed(max_num_models_per_replica=1)
    async def get_model(model_id: str) -> str:
        return model_id

    async def load(*model_ids: str) -> None:
        for model_id in model_ids:
            await get_model(model_id)

    # A loader now exists: the next report says so, with no model yet; then only changes.
    assert carried(session._report()) == []
    assert carried(session._report()) is None
    asyncio.run(load("m1"))
    assert carried(session._report()) == ["m1"]
    assert carried(session._report()) is None
    asyncio.run(load("m2"))  # evicts m1
    assert carried(session._report()) == ["m2"]
    session._sent_models = None  # what a new stream (a new leader) starts with
    assert carried(session._report()) == ["m2"]
    asyncio.run(multiplex.release_all())


def test_a_report_saying_nothing_new_waits_for_the_idle_interval() -> None:
    last = pb.ReplicaReport(replica_id="r1", state=pb.RUNNING, ongoing=2).SerializeToString()
    changed = pb.ReplicaReport(replica_id="r1", state=pb.RUNNING, ongoing=3).SerializeToString()
    assert report_due(changed, last, 0.0)
    assert not report_due(last, last, 1.0)
    assert not report_due(last, last, IDLE_REPORT_S - 0.01)
    assert report_due(last, last, IDLE_REPORT_S)
    # A report with an answer goes out, and is the stream's proof of life (sent_at
    # restarts).
    assert report_due(last, last, 1.0, answering=True)


def test_a_check_that_raises_is_an_unhealthy_answer() -> None:
    async def raises() -> pb.HealthCheckReply:
        raise RuntimeError("db gone")

    async def sick() -> pb.HealthCheckReply:
        return pb.HealthCheckReply(healthy=False, message="told to be sick")

    answers = [asyncio.run(answer_check(4, fn)) for fn in (raises, sick, None)]
    assert [(a.check_id, a.healthy, a.message) for a in answers] == [
        (4, False, "RuntimeError: db gone"), (4, False, "told to be sick"), (4, True, "")]


def test_a_check_that_outlives_its_timeout_is_an_unhealthy_answer() -> None:
    async def hangs() -> pb.HealthCheckReply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    answer = asyncio.run(answer_check(7, hangs, timeout_s=0.05))
    assert (answer.check_id, answer.healthy, answer.message) == (
        7, False, "check_health() gave no answer within health_check_timeout_s=0.05")


def test_a_timeout_the_check_raises_itself_is_its_own_failure_not_the_bound() -> None:
    async def gives_up() -> pb.HealthCheckReply:
        raise TimeoutError("db did not answer")

    answer = asyncio.run(answer_check(8, gives_up, timeout_s=5.0))
    assert (answer.healthy, answer.message) == (False, "TimeoutError: db did not answer")


def test_the_replica_checks_itself_each_period_and_a_healthy_answer_waits_for_a_report(
        ) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        healthy = [True]
        started: list[float] = []
        release = asyncio.Event()
        release.set()

        async def check() -> pb.HealthCheckReply:
            started.append(loop.time())
            await release.wait()
            return pb.HealthCheckReply(healthy=healthy[0], message="" if healthy[0] else "sick")

        async def on_command(command: pb.ReplicaCommand) -> None:
            pass

        session = ControllerSession("r1", "addr", LeaderLocator(), pb.ReplicaReport,
                                    on_command, check_health=check)
        t0 = loop.time()
        session.check_every(0.2, 1.0)
        try:
            await until(lambda: session._answer is not None)
            answer = session._answer
            assert answer is not None
            assert (answer.check_id, answer.healthy) == (1, True)
            assert answer.next_within_s == next_answer_within(0.2, 1.0)
            assert started[0] - t0 >= 0.2  # the first check a period from the start
            # Healthy: held for a report going out anyway, up to half a period.
            assert not session.changed.is_set()
            await until(session.changed.is_set)
            assert loop.time() - started[0] >= answer_hold(0.2) - 0.01
            # A check that hangs holds back the next: never two at once.
            release.clear()
            await until(lambda: len(started) == 2)
            await asyncio.sleep(0.3)  # longer than a period (an upper bound, not a wait)
            assert len(started) == 2
            healthy[0] = False
            session.changed.clear()
            freed = loop.time()
            release.set()
            # Unhealthy: out at once, without the spacing of load reports. (The next check
            # was due a period after the hung one began, so it runs at once: check 3.)
            await until(lambda: session._answer is not None and session._answer.check_id >= 2)
            assert not session._answer.healthy and session._answer.message == "sick"
            assert session.changed.is_set() and session._hold_over.is_set()
            await until(lambda: len(started) == 3)
            assert started[2] >= freed
            # A new schedule replaces the old one.
            session.check_every(60.0, 1.0)
            count = len(started)
            await asyncio.sleep(0.3)
            assert len(started) == count
        finally:
            assert session._checker is not None
            session._checker.cancel()

    asyncio.run(scenario())


class Sick:
    def check_health(self) -> None:
        raise RuntimeError("db gone")


def test_the_session_and_the_unary_rpc_run_the_same_check() -> None:
    async def scenario() -> list[tuple[bool, str]]:
        user = UserCallable(cloudpickle.dumps((Sick, (), {})), max_threads=1)
        await user.construct()
        replica = ReplicaServer(lambda: None)
        replica.user = user
        try:
            starting = await answer_check(1, replica.check_health)  # not RUNNING: not checked
            replica.state = pb.RUNNING
            session = await answer_check(2, replica.check_health)
            unary = await replica.CheckHealth(pb.HealthCheckRequest(), None)
        finally:
            user.shutdown()
        return [(starting.healthy, starting.message), (session.healthy, session.message),
                (unary.healthy, unary.message)]

    assert asyncio.run(scenario()) == [(True, ""), (False, "RuntimeError: db gone"),
                                       (False, "RuntimeError: db gone")]


def test_a_registration_waits_longer_after_each_that_went_unanswered() -> None:
    assert register_timeout(0) == REGISTER_TIMEOUT_S
    assert register_timeout(1) == 2 * REGISTER_TIMEOUT_S
    assert register_timeout(2) == 4 * REGISTER_TIMEOUT_S
    assert register_timeout(10) == register_timeout(10_000) == REGISTER_TIMEOUT_MAX_S


def test_an_idle_session_wakes_for_what_is_due_not_every_moment() -> None:
    now = 1000.0
    # Registered, a report just sent: nothing due but the ceiling.
    assert next_wake(now, now, None) == now + HEARTBEAT_S
    # The idle report falls due before the ceiling.
    assert next_wake(now, now - IDLE_REPORT_S + 1, None) == now + 1
    # Not registered yet: it wakes when the answer is overdue.
    assert next_wake(now, now, now + 0.5) == now + 0.5
    assert HEARTBEAT_S <= IDLE_REPORT_S


def test_an_urgent_change_ends_the_hold_after_a_report_and_load_waits_it_out() -> None:
    async def on_command(command: pb.ReplicaCommand) -> None:
        pass

    async def main() -> tuple[float, float]:
        session = ControllerSession("r1", "addr", LeaderLocator(), pb.ReplicaReport,
                                    on_command)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await session._space_reports()  # nothing came: the whole interval
        load_only = loop.time() - began
        began = loop.time()
        hold = loop.create_task(session._space_reports())
        await asyncio.sleep(0)
        session.report_soon()  # load: waits the hold out
        await asyncio.sleep(0)
        assert not hold.done()
        session.report_soon(urgent=True)  # a change of state: at once
        await hold
        return load_only, loop.time() - began

    load_only, urgent = asyncio.run(main())
    assert load_only >= REPORT_MIN_INTERVAL_S * 0.9
    assert urgent < REPORT_MIN_INTERVAL_S * 0.9
