"""Replica sessions: a stream that hangs up before its first report ends quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from weir.controller.replica_sessions import (
    ReplicaSessions,
    ReportChange,
    report_change,
    says_nothing_new,
)
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


def _report(ongoing: int = 0, models: tuple[str, ...] | None = None,
            state: pb.ReplicaState = pb.RUNNING) -> pb.ReplicaReport:
    report = pb.ReplicaReport(replica_id="app#D#1", pid=7, state=state,
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


def _heard(reports: list[pb.ReplicaReport], answers: list[tuple[str, int, bool]]
           ) -> list[tuple[str, ReportChange]]:
    """What the leader heard of `reports`, one session's in order until it hangs up
    (`answers` gets the health-check answers)."""
    async def scenario() -> list[tuple[str, ReportChange]]:
        heard: list[tuple[str, ReportChange]] = []
        sessions = ReplicaSessions(
            asyncio.Event(), lambda rid, changed: heard.append((rid, changed)),
            lambda rid, answer: answers.append((rid, answer.check_id, answer.healthy)))

        async def stream() -> AsyncIterator[pb.ReplicaReport]:
            for report in reports:
                yield report

        async def admit(first: pb.ReplicaReport) -> list[pb.ReplicaCommand]:
            return []

        async for _ in sessions.hold(stream(), admit):
            pass
        return heard

    return asyncio.run(asyncio.wait_for(scenario(), 5))


def test_only_a_report_with_news_reaches_the_leader() -> None:
    reports = [_report(), _report(), _report(), _report(ongoing=3), _report(ongoing=3)]
    # Registration, the load change, and the hang-up: not the two repeats.
    assert _heard(reports, []) == [("app#D#1", "state"), ("app#D#1", "load"),
                                   ("app#D#1", "state")]


def test_a_health_answer_goes_to_the_prober_and_is_no_news() -> None:
    answering = _report()
    answering.health_check.check_id, answering.health_check.healthy = 7, True
    answers: list[tuple[str, int, bool]] = []
    heard = _heard([_report(), answering, _report()], answers)
    assert answers == [("app#D#1", 7, True)]
    # The answer and the idle report after it say nothing new: registration and hang-up.
    assert heard == [("app#D#1", "state"), ("app#D#1", "state")]


def test_a_report_changes_the_state_the_load_alone_or_something_else() -> None:
    assert report_change(_report(), _report(state=pb.STOPPING), False) == "state"
    assert report_change(_report(), _report(ongoing=1), True) == "state"  # models
    loaded = _report(ongoing=4)
    assert report_change(_report(), loaded, False) == "load"
    assert loaded.ongoing == 4  # compared as it is, left as it was
    configured = _report(ongoing=4)
    configured.user_config_json = '{"a": 1}'
    assert report_change(_report(), configured, False) == "other"
    assert report_change(_report(), _report(models=()), False) == "other"
